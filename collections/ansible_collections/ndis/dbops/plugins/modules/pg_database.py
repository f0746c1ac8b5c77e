#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_database
short_description: Converge an app database, its owner, the app's group and two logins, read-only role and privileges in one call
version_added: "0.3.0"
description:
  - Connected as the admin, in this order; each step reads the catalog and runs only what changes something.
  - A NOLOGIN owner role O(owner); the admin (O(login_user)) made a member of it with the SET option (RDS's master is
    not a superuser and needs this to create a database owned by the role and to run migrations as it).
  - The database O(name), owned by O(owner), with O(encoding). A database of another encoding is an error
    (it cannot be changed); another owner is changed.
  - The NOLOGIN group role O(app_group), which holds the app's privileges, and the app's two logins O(app_user) and
    O(app_alternate_user) (the alternating-users rotation, in which each rotation changes the password of the login the
    stored URL does not use), members of O(app_group), without SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS,
    each with O(app_connection_limit) and O(app_settings) (C(ALTER ROLE ... SET); role settings are not inherited,
    so both logins get them). The password of O(app_login) is compared by logging in with O(app_password)
    (the admin of RDS cannot read C(pg_authid)) and set only when the login fails; it is sent as a SCRAM-SHA-256
    verifier computed by the module, so the server never receives or logs the plain text. The other login's
    password is left as it is (a new login gets none, so no password logs in as it).
  - The optional NOLOGIN role O(readonly_role).
  - Logins the project made for this database that are no longer declared (members of O(app_group), or LOGIN roles
    with O(app_comment) or O(iam_comment)) are retired. Each is made NOLOGIN, taken out of O(app_group), given a comment
    saying so, its sessions ended and its direct privileges revoked. They are not dropped. RV(retired) names them.
  - Privileges, converged both ways (missing ones granted, extra ones revoked). PUBLIC holds nothing on the
    database and no CREATE on O(schema). O(app_group) holds CONNECT on the database, USAGE on the schema,
    O(app_table_privileges) on every table, view and materialised view of the schema (on those in
    O(app_table_exceptions), what that says instead) and O(app_sequence_privileges) on every sequence, and the same
    on future ones through the default privileges of O(owner). The logins hold nothing directly. O(readonly_role)
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
  app_group:
    description: NOLOGIN role that holds the app's privileges; its members are the app's logins. Default C(<name>_app).
    type: str
  app_group_comment:
    description: Comment on O(app_group).
    type: str
  app_user:
    description: The application's login role.
    type: str
    required: true
  app_alternate_user:
    description:
      - The second login, with the same privileges (through O(app_group)) and settings. Empty for one login only.
      - Default C(<app_user>_clone), the name AWS's alternating-users rotation gives it.
    type: str
  app_password:
    description: Password of O(app_login).
    type: str
    required: true
  app_login:
    description: The login O(app_password) belongs to (the one the stored URL uses). Default O(app_user).
    type: str
  app_connection_limit:
    description: Connection limit of each login; -1 for none.
    type: int
    default: -1
  app_settings:
    description: Settings of the logins' sessions in every database (C(ALTER ROLE ... SET)), e.g. C(statement_timeout).
    type: dict
    default: {}
  app_comment:
    description: Comment on the logins.
    type: str
  app_table_privileges:
    description: Privileges of O(app_group) on the schema's tables; the other table privileges are revoked.
    type: list
    elements: str
    default: [SELECT, INSERT, UPDATE, DELETE]
  app_table_exceptions:
    description:
      - Tables of the schema the project keeps for itself, each with the privileges O(app_group) holds on it instead
        of O(app_table_privileges) (usually none, e.g. the migration history); O(readonly_role) holds none on them.
        Tables that do not exist are ignored.
    type: dict
    default: {}
  app_sequence_privileges:
    description: Privileges of O(app_group) on the schema's sequences; the others are revoked.
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
    app_alternate_user: app_user_clone
    app_password: "{{ app_password }}"
    app_login: app_user
    app_table_exceptions:
      schema_migrations: []
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
app_group:
  description: The group role that holds the app's privileges.
  returned: always
  type: str
retired:
  description: Logins retired by this run (or that would be, in check mode).
  returned: always
  type: list
  elements: str
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
            app_group=dict(type="str"),
            app_group_comment=dict(type="str"),
            app_user=dict(type="str", required=True),
            app_alternate_user=dict(type="str"),
            app_password=dict(type="str", required=True, no_log=True),
            app_login=dict(type="str"),
            app_connection_limit=dict(type="int", default=-1),
            app_settings=dict(type="dict", default={}),
            app_comment=dict(type="str"),
            app_table_privileges=dict(type="list", elements="str", default=["SELECT", "INSERT", "UPDATE", "DELETE"]),
            app_table_exceptions=dict(type="dict", default={}),
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
    p["app_group"] = p["app_group"] or p["name"] + "_app"
    if p["app_alternate_user"] is None:
        p["app_alternate_user"] = p["app_user"] + "_clone"
    p["app_login"] = p["app_login"] or p["app_user"]
    named = [("login_user", p["login_user"]), ("owner", p["owner"]), ("app_group", p["app_group"]),
             ("app_user", p["app_user"]), ("app_alternate_user", p["app_alternate_user"]),
             ("readonly_role", p["readonly_role"]), ("iam_user", p["iam_user"])]
    names = [v for _k, v in named if v]
    if len(set(names)) != len(names) or p["iam_user"] == pg_access.RDS_IAM_ROLE:
        module.fail_json(msg="%s must be different roles, and iam_user not rds_iam itself"
                         % ", ".join("%s (%s)" % (k, v or "none") for k, v in named))
    if p["app_login"] not in pg_access.app_logins(p):
        module.fail_json(msg="app_login (%s) must be app_user (%s) or app_alternate_user (%s)"
                         % (p["app_login"], p["app_user"], p["app_alternate_user"] or "none"))
    pg.run_module(module, lambda: pg_access.converge(pg.conn_params(p), p, check_mode=module.check_mode))


if __name__ == "__main__":
    main()
