# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Connection options shared by the collection's PostgreSQL modules (module_utils/postgres.py).

The names and aliases are community.postgresql's, so that `module_defaults: group/ndis.dbops.postgres:`
sets one login for the modules of both collections.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
requirements:
  - psycopg2 (psycopg2-binary) on the managed host
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
  login_unix_socket:
    description: Directory of the server's Unix domain socket, used when O(login_host) is empty.
    type: str
    default: ''
    aliases: [unix_socket]
  connect_timeout:
    description: Seconds to wait for a connection to be established.
    type: int
    default: 10
  connect_params:
    description:
      - Further libpq connection parameters (for example C(connect_timeout), C(options)); they take precedence
        over the options above, as in community.postgresql.
    type: dict
    default: {}
  ssl_mode:
    description:
      - libpq sslmode of the connections. RDS with C(rds.force_ssl=1) needs C(require) or stricter.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description: CA bundle for C(verify-ca) and C(verify-full) (libpq sslrootcert).
    type: path
    aliases: [ssl_rootcert]
  ssl_cert:
    description: Client certificate (libpq sslcert).
    type: path
  ssl_key:
    description: Key of the client certificate (libpq sslkey).
    type: path
notes:
  - The connection options are those of community.postgresql's modules, with the same names and aliases;
    C(module_defaults) with C(group/ndis.dbops.postgres) sets them once for the modules of both collections.
"""
