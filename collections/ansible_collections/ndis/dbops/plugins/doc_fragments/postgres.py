# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Connection options shared by the collection's PostgreSQL modules (module_utils/pg_connection.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  login_host:
    description: Host of the PostgreSQL server. Empty means the local Unix socket.
    type: str
    default: ''
    aliases: [host]
  login_port:
    description: Port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [port]
  login_password:
    description: Password of O(login_user).
    type: str
    default: ''
  connect_timeout:
    description: Seconds to wait for a connection to be established.
    type: int
    default: 10
  ssl_mode:
    description:
      - libpq sslmode of the connections. RDS with C(rds.force_ssl=1) needs C(require) or stricter.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description: CA bundle for C(verify-ca) and C(verify-full) (libpq sslrootcert).
    type: path
"""
