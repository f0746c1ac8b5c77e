#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_database
short_description: Converge an app database, its owner, app and read-only roles and their privileges in one call
version_added: "0.3.0"
description:
  - Connected as the admin, in this order; each step reads the catalog and runs only what changes something.
  - A NOLOGIN owner role O(owner); the admin (O(login_user)) made a member of it with the SET option (RDS's master is
    not a superuser and needs this to create a database owned by the role and to run migrations as it).
  - The database O(name), owned by O(owner), with O(encoding). A database of another encoding is an error
    (it cannot be changed); another owner is changed.
  - The login role O(app_user) without SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS, with
    O(app_connection_limit) and O(app_settings) (C(ALTER ROLE ... SET)). Its password is compared by logging in
    with O(app_password) (the admin of RDS cannot read C(pg_authid)) and set only when the login fails; it is sent
    as a SCRAM-SHA-256 verifier computed by the module, so the server never receives or logs the plain text.
  - The optional NOLOGIN role O(readonly_role).
  - Privileges, converged both ways (missing ones granted, extra ones revoked). PUBLIC holds nothing on the
    database and no CREATE on O(schema). O(app_user) holds CONNECT on the database, USAGE on the schema,
    O(app_table_privileges) on every table, view and materialised view of the schema and O(app_sequence_privileges)
    on every sequence, and the same on the future ones through the default privileges of O(owner). O(readonly_role)
    holds CONNECT, USAGE and SELECT the same way.
  - In check mode nothing runs; RV(queries) lists what would. On a database that does not exist yet, the
    privileges the real run grants are listed as well.
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
options:
  login_user:
    description: The admin to connect as (the RDS master user, or a superuser).
    type: str
    default: postgres
  maintenance_db:
    description: Database the admin connects to for cluster-level work.
    type: str
    default: postgres
    aliases: [login_db]
  name:
    description: The app database.
    type: str
    required: true
  owner:
    description: NOLOGIN role that owns the database. Default C(<name>_owner).
    type: str
  owner_comment:
    description: Comment on O(owner).
    type: str
  encoding:
    description: Encoding of a database created by the module.
    type: str
    default: UTF8
  schema:
    description: The app schema (it must exist; C(public) always does).
    type: str
    default: public
  app_user:
    description: The application's login role.
    type: str
    required: true
  app_password:
    description: Password of O(app_user).
    type: str
    required: true
  app_connection_limit:
    description: Connection limit of O(app_user); -1 for none.
    type: int
    default: -1
  app_settings:
    description: Settings of O(app_user)'s sessions in every database (C(ALTER ROLE ... SET)), e.g. C(statement_timeout).
    type: dict
    default: {}
  app_comment:
    description: Comment on O(app_user).
    type: str
  app_table_privileges:
    description: Privileges of O(app_user) on the schema's tables; the other table privileges are revoked.
    type: list
    elements: str
    default: [SELECT, INSERT, UPDATE, DELETE]
  app_sequence_privileges:
    description: Privileges of O(app_user) on the schema's sequences; the others are revoked.
    type: list
    elements: str
    default: [USAGE, SELECT]
  readonly_role:
    description: Optional NOLOGIN role with CONNECT, USAGE and SELECT only; empty for none.
    type: str
    default: ''
  readonly_comment:
    description: Comment on O(readonly_role).
    type: str
  iam_user:
    description:
      - Optional login role for IAM database authentication, empty for none. LOGIN without a password, member
        of C(rds_iam) (on RDS its members log in only with an IAM token), with the privileges, connection limit
        and settings of O(app_user) and nothing more.
    type: str
    default: ''
  iam_comment:
    description: Comment on O(iam_user).
    type: str
  create_rds_iam_role:
    description:
      - Create a NOLOGIN C(rds_iam) role when the server has none. RDS has it on every PostgreSQL instance; the
        embedded server of the local stack does not. Without this, a missing C(rds_iam) is an error.
    type: bool
    default: false
notes:
  - Supports check mode and diff mode (the roles, memberships and privileges before and after).
  - Cluster-level statements cannot share a transaction with C(CREATE DATABASE); each statement commits on its
    own. Every step is idempotent, so a run stopped half-way completes on the next run.
"""

EXAMPLES = r"""
- name: Converge the database, its roles and their privileges
  ndis.dbops.pg_database:
    login_host: "{{ rds_endpoint }}"
    login_user: admin
    login_password: "{{ master_password }}"
    ssl_mode: require
    name: ndis_chatbot
    app_user: app_user
    app_password: "{{ app_password }}"
    app_connection_limit: 50
    app_settings:
      statement_timeout: 30s
    readonly_role: ndis_chatbot_readonly
  no_log: true
"""

RETURN = r"""
queries:
  description: The statements run (in check mode, that would run), passwords masked.
  returned: always
  type: list
  elements: str
  sample: ["CREATE ROLE \"ndis_chatbot_owner\" NOLOGIN", "GRANT CONNECT ON DATABASE \"ndis_chatbot\" TO \"app_user\""]
database_exists:
  description: Whether the database exists after the run (false only in check mode before it is created).
  returned: always
  type: bool
diff:
  description: Roles, memberships and privileges before and after, one line each, with C(--diff).
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ndis.dbops.plugins.module_utils import pg_access
from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg


def main():
    module = AnsibleModule(
        argument_spec=dict(
            login_user=dict(type="str", default="postgres"),
            maintenance_db=dict(type="str", default="postgres", aliases=["login_db"]),
            **pg.CONNECTION_ARGS,
            name=dict(type="str", required=True),
            owner=dict(type="str"),
            owner_comment=dict(type="str"),
            encoding=dict(type="str", default="UTF8"),
            schema=dict(type="str", default="public"),
            app_user=dict(type="str", required=True),
            app_password=dict(type="str", required=True, no_log=True),
            app_connection_limit=dict(type="int", default=-1),
            app_settings=dict(type="dict", default={}),
            app_comment=dict(type="str"),
            app_table_privileges=dict(type="list", elements="str", default=["SELECT", "INSERT", "UPDATE", "DELETE"]),
            app_sequence_privileges=dict(type="list", elements="str", default=["USAGE", "SELECT"]),
            readonly_role=dict(type="str", default=""),
            readonly_comment=dict(type="str"),
            iam_user=dict(type="str", default=""),
            iam_comment=dict(type="str"),
            create_rds_iam_role=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    pg.fail_without_psycopg2(module)
    p = dict(module.params)
    p["owner"] = p["owner"] or p["name"] + "_owner"
    names = [p["login_user"], p["owner"], p["app_user"]] + ([p["readonly_role"]] if p["readonly_role"] else []) \
        + ([p["iam_user"]] if p["iam_user"] else [])
    if len(set(names)) != len(names) or p["iam_user"] == pg_access.RDS_IAM_ROLE:
        module.fail_json(msg="login_user (%s), owner (%s), app_user (%s), readonly_role (%s) and iam_user (%s) must be "
                         "different roles, and iam_user not rds_iam itself"
                         % (p["login_user"], p["owner"], p["app_user"], p["readonly_role"] or "none",
                            p["iam_user"] or "none"))
    pg.run_module(module, lambda: pg_access.converge(pg.conn_params(p), p, check_mode=module.check_mode))


if __name__ == "__main__":
    main()
