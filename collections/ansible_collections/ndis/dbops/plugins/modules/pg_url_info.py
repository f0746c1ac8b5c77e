#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# community.postgresql's modules take host, port and sslmode as separate options, so a check
# built on them connects the way the check's author parsed the URL, not the way the app
# does. This module hands the stored URL to libpq as it is.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_url_info
short_description: Connect with a PostgreSQL connection URL as an app does, and run one read-only query
version_added: "0.4.0"
description:
  - Hands O(url) to libpq (psycopg2) as it is, so C(sslmode), C(sslrootcert) and every other parameter
    in it apply exactly as they do for the app's driver. With C(sslmode=verify-full) the server's
    certificate must chain to the bundle named by C(sslrootcert) and name the URL's host.
  - O(hostaddr) and O(port) reach the server another way (a tunnel's local end) while the URL's host
    name is still the name checked against the certificate (libpq's C(hostaddr)).
  - Runs O(query) in a read-only transaction and returns its rows, the TLS the connection used and
    what the URL's sslmode verified. Never changes anything; supports check mode.
author:
  - ndis dbops maintainers
requirements:
  - psycopg2 (psycopg2-binary) on the managed host
options:
  url:
    description: The connection URL, e.g. the app's DATABASE_URL (postgres://user:password@host:port/db?sslmode=...).
    type: str
    required: true
  hostaddr:
    description: IP address to connect to instead of resolving the URL's host (the URL's host stays the name verified).
    type: str
  port:
    description: Port to connect to instead of the URL's.
    type: int
  sslmode:
    description: An sslmode that replaces the URL's, for a server known to have no TLS (C(disable)); default the URL's.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  sslrootcert:
    description: The same CA bundle as the URL's C(sslrootcert), at another path on this machine; default the URL's.
    type: path
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
  query:
    description: One read-only query; C(%(name)s) placeholders take O(named_args).
    type: str
    default: SELECT current_user AS user_name
  named_args:
    description: Values of the query's named placeholders.
    type: dict
    default: {}
notes:
  - The password inside O(url) is never returned; the URL is a C(no_log) option.
"""

EXAMPLES = r"""
- name: Log in with the stored DATABASE_URL, verifying the server as the app does
  ndis.dbops.pg_url_info:
    url: "{{ database_url }}"
    query: SELECT current_user AS user_name
  register: app_login
"""

RETURN = r"""
query_result:
  description: The query's rows, one dict per row.
  returned: always
  type: list
  elements: dict
sslmode:
  description: The sslmode the URL asks for (libpq's default C(prefer) when it names none).
  returned: always
  type: str
sslrootcert:
  description: The CA bundle the URL names, empty when none.
  returned: always
  type: str
tls:
  description: The connection's TLS, C(in_use) false when the connection is plain.
  returned: always
  type: dict
  contains:
    in_use: {description: Whether the connection is encrypted., type: bool}
    protocol: {description: TLS version., type: str}
    cipher: {description: Cipher suite., type: str}
server_verified:
  description: Whether the server's certificate was checked against the bundle (sslmode verify-ca or verify-full).
  returned: always
  type: bool
name_verified:
  description: Whether the certificate was also checked to name the URL's host (sslmode verify-full).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils.postgres import error_text, psycopg2


def url_settings(url):
    """sslmode and sslrootcert as libpq reads them from the URL."""
    opts = psycopg2.extensions.parse_dsn(url)
    return opts.get("sslmode") or "prefer", opts.get("sslrootcert") or "", opts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True, no_log=True),
            hostaddr=dict(type="str"),
            port=dict(type="int"),
            sslmode=dict(type="str", choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
            sslrootcert=dict(type="path"),
            connect_timeout=dict(type="int", default=10),
            query=dict(type="str", default="SELECT current_user AS user_name"),
            named_args=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    pg.fail_without_psycopg2(module)
    p = module.params
    try:
        sslmode, sslrootcert, parsed = url_settings(p["url"])
    except psycopg2.ProgrammingError as e:
        module.fail_json(msg="The URL is not a valid libpq connection URL: %s" % str(e).strip().split("\n")[0])
    overrides = dict(connect_timeout=p["connect_timeout"], application_name="ndis.dbops.pg_url_info")
    if p["hostaddr"]:
        overrides["hostaddr"] = p["hostaddr"]
    if p["port"]:
        overrides["port"] = p["port"]
    if p["sslmode"]:
        overrides["sslmode"] = sslmode = p["sslmode"]
    if p["sslrootcert"] and sslmode in ("verify-ca", "verify-full"):
        overrides["sslrootcert"] = sslrootcert = p["sslrootcert"]
    where = "%s:%s" % (p["hostaddr"] or parsed.get("host") or "(socket)", p["port"] or parsed.get("port") or 5432)
    try:
        conn = psycopg2.connect(p["url"], **overrides)
    except psycopg2.Error as e:
        reason = error_text(e)
        hint = ""
        if "certificate verify failed" in reason or "certificate" in reason:
            hint = (" The server's certificate does not chain to %s (sslmode=%s), or does not name %s: install the "
                    "CA bundle the server's CA belongs to there, or check rds_instance_ca_certificate_identifier."
                    % (sslrootcert or "the default root.crt", sslmode, parsed.get("host")))
        elif "root certificate file" in reason:
            hint = " The CA bundle the URL names is not on this machine: put it at %s." % sslrootcert
        module.fail_json(msg="Cannot connect with the URL to %s as %s (sslmode=%s): %s.%s"
                         % (where, parsed.get("user"), sslmode, reason, hint),
                         sslmode=sslmode, sslrootcert=sslrootcert)
    try:
        conn.set_session(readonly=True, autocommit=False)
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(p["query"], p["named_args"] or None)
            rows = [dict(r) for r in cur.fetchall()] if cur.description else []
        conn.rollback()
        tls = dict(in_use=bool(conn.info.ssl_in_use),
                   protocol=conn.info.ssl_attribute("protocol") or "",
                   cipher=conn.info.ssl_attribute("cipher") or "")
    except psycopg2.Error as e:
        module.fail_json(msg="Connected to %s, but the query failed: %s" % (where, error_text(e)))
    finally:
        conn.close()
    module.exit_json(
        changed=False,
        query_result=rows,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        tls=tls,
        server_verified=tls["in_use"] and sslmode in ("verify-ca", "verify-full"),
        name_verified=tls["in_use"] and sslmode == "verify-full",
    )


if __name__ == "__main__":
    main()
