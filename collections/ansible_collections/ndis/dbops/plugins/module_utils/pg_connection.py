# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Connection options shared by the collection's PostgreSQL modules.

Documented once in plugins/doc_fragments/postgres.py (``extends_documentation_fragment:
ndis.dbops.postgres``); each module adds its own ``login_user`` and database option.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

CONNECTION_ARGS = dict(
    login_host=dict(type="str", default="", aliases=["host"]),
    login_port=dict(type="int", default=5432, aliases=["port"]),
    login_password=dict(type="str", default="", no_log=True),
    connect_timeout=dict(type="int", default=10),
    ssl_mode=dict(type="str", default="prefer", choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
    ca_cert=dict(type="path"),
)


def conn_params(p, dbname=None):
    """psycopg2.connect keyword arguments from the module parameters (``dbname`` when given)."""
    params = dict(
        host=p["login_host"] or None,
        port=p["login_port"],
        user=p["login_user"],
        password=p["login_password"] or None,
        connect_timeout=p["connect_timeout"],
        sslmode=p["ssl_mode"],
    )
    if dbname is not None:
        params["dbname"] = dbname
    if p.get("ca_cert"):
        params["sslrootcert"] = p["ca_cert"]
    return params
