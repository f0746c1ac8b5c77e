#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_migrate
short_description: Apply versioned SQL migration files to a PostgreSQL database
version_added: "0.1.0"
description:
  - Applies the C(NNNN_name.sql) files of a directory, in numeric version order, over one
    connection, and records each applied file (version, name, sha256 checksum, time,
    duration, user) in a history table.
  - Each file runs in its own transaction together with its history row. A file whose
    leading comment lines contain C(-- migrate:no-transaction) runs statement by statement
    in autocommit (for C(CREATE INDEX CONCURRENTLY)); its history row is written afterwards.
  - Concurrent runs are serialised by a session-level advisory lock derived from the history
    table's qualified name; the connection uses C(application_name=pg_migrate).
  - Before any change it checks that applied files did not change on disk, that no applied
    file is missing and that no pending file is older than the newest applied one.
  - A failing file is rolled back and not recorded; the error names the file, the line and
    the server's message. Files applied before it stay applied.
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
options:
  login_user:
    description: User to connect as.
    type: str
    default: postgres
  login_db:
    description: Database to migrate.
    type: str
    required: true
    aliases: [db]
  path:
    description:
      - Directory on the managed host holding the migration files.
      - Files are named C(NNNN_name.sql) or C(20260101120000_name.sql); the version is the
        leading digits, compared numerically. A C(.sql) file without a version prefix, or two
        files with the same version, fail the task. Other files are ignored.
    type: path
    required: true
  session_role:
    description:
      - Role to C(SET ROLE) to right after connecting, typically the schema owner, so the
        objects created (and the history table) are owned by it and its default privileges apply.
      - O(login_user) must be a member of this role.
    type: str
    aliases: [role]
  history_schema:
    description: Schema of the history table. Created if missing (only in a real run).
    type: str
    default: public
  history_table:
    description: Name of the history table. Created if missing (only in a real run).
    type: str
    default: schema_migrations
  advisory_lock_timeout:
    description:
      - Seconds to wait for the advisory lock held by another pg_migrate run on the same history
        table. On timeout the error names the holding session (pid, application_name, since when).
    type: int
    default: 60
  pg_lock_timeout:
    description:
      - PostgreSQL's C(lock_timeout), in seconds, for every migration statement (C(SET LOCAL) in
        each file's transaction; C(SET) around a C(-- migrate:no-transaction) file). It bounds how
        long the app's queries can queue behind a migration waiting for a lock.
      - A statement that times out (SQLSTATE 55P03) rolls its file back (in a no-transaction file,
        only that statement) and the file is tried again with backoff, within O(lock_retry_budget);
        each timeout names the blocking session. C(0) waits without limit (no retries).
    type: float
    default: 5
  pg_statement_timeout:
    description:
      - PostgreSQL's C(statement_timeout), in seconds, for every migration statement. C(0) means no
        limit. A statement that runs longer fails its file (no retry).
    type: float
    default: 0
  lock_retry_budget:
    description:
      - Seconds a file may keep retrying after lock timeouts. Past it the run fails naming the blocking
        session (pid, user, state, transaction age, query start, query); the file is not applied.
    type: float
    default: 300
  lint:
    description:
      - Before any file runs (in check mode too), parse the pending files with PostgreSQL's parser (pglast)
        and refuse statements that lock or rewrite a table that has rows, judged against the live catalog
        (a table created earlier in the run, or empty, is no risk). The refusal names file, line, rule and
        the safe form.
      - A comment C(-- migrate:allow RULE reason) just above a statement (or at the end of its last line)
        lets it through; the history table's C(lint_overrides) column records rule, line and reason.
      - The rules are listed in the README of the migrations role.
    type: bool
    default: true
  lock_timeout:
    description:
      - Removed. It used to mean O(advisory_lock_timeout); now that PostgreSQL's own lock_timeout is set too
        (O(pg_lock_timeout)), the name would be ambiguous, so a task that still sets it fails naming both options.
    type: int
  allow_out_of_order:
    description: Apply pending files whose version is lower than the highest applied version.
    type: bool
    default: false
  missing:
    description: What to do when an applied version has no file on disk any more.
    type: str
    choices: [fail, warn]
    default: fail
  baseline:
    description:
      - Record the files with a version less than or equal to this one as applied, without
        running them. Only done when the history is empty; ignored otherwise.
      - For adopting a database whose schema already exists. Baselined rows have a null
        C(execution_ms).
    type: str
  repair:
    description:
      - Re-record the checksum (and name) of applied files that changed on disk, instead of
        failing. Use only after reviewing the change.
    type: bool
    default: false
  target:
    description: Apply pending files up to and including this version only.
    type: str
notes:
  - Supports C(check_mode) (connects, reads the history, validates and reports what would run;
    executes and creates nothing) and C(diff) (applied versions before and after).
  - Statements of C(-- migrate:no-transaction) files are split on top-level semicolons;
    statements before a failing one stay committed, so such files should be idempotent.
seealso:
  - module: community.postgresql.postgresql_script
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Apply the application's migrations as the schema owner
  ndis.dbops.pg_migrate:
    login_host: "{{ db_host }}"
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app
    session_role: app_owner
    path: /opt/app/migrations

- name: Adopt an existing database, skipping the files that created its current schema
  ndis.dbops.pg_migrate:
    login_db: app
    path: /opt/app/migrations
    baseline: "0042"

- name: Apply up to a given version only, waiting at most 5 minutes for another run
  ndis.dbops.pg_migrate:
    login_db: app
    path: /opt/app/migrations
    target: "20260101120000"
    advisory_lock_timeout: 300

- name: Let the app queue at most 2 s behind a migration; retry for up to 10 minutes
  ndis.dbops.pg_migrate:
    login_db: app
    path: /opt/app/migrations
    pg_lock_timeout: 2
    lock_retry_budget: 600
"""

RETURN = r"""
applied:
  description: Files applied by this run (empty in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{"version": "1", "name": "0001_users.sql", "execution_ms": 12}]
pending:
  description:
    - Files not applied after this run (for example beyond O(target)).
    - In check mode, every file that is not applied yet, which includes what would run.
  returned: always
  type: list
  elements: dict
  sample: [{"version": "2", "name": "0002_orders.sql"}]
queries:
  description: Names of the files run, or that would run in check mode (not their SQL).
  returned: always
  type: list
  elements: str
  sample: ["0001_users.sql"]
baselined:
  description: Files recorded as applied without running them (O(baseline)).
  returned: always
  type: list
  elements: dict
repaired:
  description: Applied files whose checksum was re-recorded (O(repair)).
  returned: always
  type: list
  elements: dict
  sample: [{"version": "3", "name": "0003_x.sql", "old_checksum": "ab12...", "new_checksum": "cd34..."}]
current_version:
  description: Highest applied version after this run (in check mode, before it).
  returned: success
  type: str
  sample: "42"
history_count:
  description: Number of rows in the history table after this run (in check mode, before it).
  returned: success
  type: int
history_table:
  description: Qualified name of the history table.
  returned: always
  type: str
  sample: public.schema_migrations
lock_key:
  description: The advisory lock key used (pg_locks classid/objid hold its two halves).
  returned: always
  type: int
diff:
  description: Applied versions ("version name" lines) before and after, with C(--diff).
  returned: when diff mode is on
  type: dict
file:
  description: The migration file that failed.
  returned: when a migration file failed
  type: str
  sample: 0003_orders.sql
line:
  description: Line of O(path)/RV(file) where the server reported the error (null when unknown).
  returned: when a migration file failed
  type: int
  sample: 12
sqlstate:
  description: SQLSTATE of the server error.
  returned: when the server reported an error
  type: str
  sample: "42601"
problems:
  description: The validation problems (checksum drift, missing files, out-of-order files) found before any change.
  returned: when validation failed
  type: list
  elements: str
holders:
  description: Sessions holding the migration lock when O(advisory_lock_timeout) expired (pid, application_name, since).
  returned: when the lock wait timed out
  type: list
  elements: dict
lock_waits:
  description: One line per lock timeout of a migration statement (file, attempt, blocking session, next delay).
  returned: always
  type: list
  elements: str
blockers:
  description:
    - Sessions blocking the file when O(lock_retry_budget) ran out (pid, user, application_name, state,
      transaction_seconds, query_start, query).
  returned: when a file gave up on its locks
  type: list
  elements: dict
lint:
  description:
    - What the lint saw (files, statements, ms), the statements let through by an annotation (C(allowed)
      with file, line, rule, statement, table, reason) and, on a refusal, C(refused).
  returned: always
  type: dict
rule:
  description: The lint rule of the first refused statement.
  returned: when the lint refused a statement
  type: str
  sample: create-index-non-concurrently
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ndis.dbops.plugins.module_utils import migrate, migrate_lint
from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg


def main():
    module = AnsibleModule(
        argument_spec=dict(
            login_user=dict(type="str", default="postgres"),
            login_db=dict(type="str", required=True, aliases=["db"]),
            **pg.CONNECTION_ARGS,
            path=dict(type="path", required=True),
            session_role=dict(type="str", aliases=["role"]),
            history_schema=dict(type="str", default="public"),
            history_table=dict(type="str", default="schema_migrations"),
            advisory_lock_timeout=dict(type="int", default=60),
            pg_lock_timeout=dict(type="float", default=migrate.DEFAULT_PG_LOCK_TIMEOUT),
            pg_statement_timeout=dict(type="float", default=0),
            lock_retry_budget=dict(type="float", default=migrate.DEFAULT_LOCK_RETRY_BUDGET),
            lint=dict(type="bool", default=True),
            lock_timeout=dict(type="int"),
            allow_out_of_order=dict(type="bool", default=False),
            missing=dict(type="str", default="fail", choices=["fail", "warn"]),
            baseline=dict(type="str"),
            repair=dict(type="bool", default=False),
            target=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    pg.fail_without_psycopg2(module)
    if module.params["lint"] and not migrate_lint.HAS_PGLAST:
        module.fail_json(msg=missing_required_lib("pglast (or set lint=false)"), exception=str(migrate_lint.PGLAST_IMPORT_ERROR))

    p = module.params
    pg.run_module(module, lambda: migrate.run(
        pg.conn_params(p, p["login_db"]),
        p["path"],
        session_role=p["session_role"],
        history_schema=p["history_schema"],
        history_table=p["history_table"],
        advisory_lock_timeout=p["advisory_lock_timeout"],
        pg_lock_timeout=p["pg_lock_timeout"],
        pg_statement_timeout=p["pg_statement_timeout"],
        lock_retry_budget=p["lock_retry_budget"],
        lint=p["lint"],
        lock_timeout=p["lock_timeout"],
        allow_out_of_order=p["allow_out_of_order"],
        missing=p["missing"],
        baseline=p["baseline"],
        repair=p["repair"],
        target=p["target"],
        check_mode=module.check_mode,
    ))


if __name__ == "__main__":
    main()
