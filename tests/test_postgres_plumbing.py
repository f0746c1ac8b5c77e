"""module_utils/postgres.py, the PostgreSQL plumbing every project module shares, against the
real embedded PostgreSQL: the one error text, connect, the connection options and the
`group/ndis.dbops.postgres` action group.

Fixtures ``local_stack``, ``pg_admin_dsn`` and ``scratch_db`` come from tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg2
import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import migrate, pg_access
from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from migrate_helpers import write_files

REPO = Path(__file__).resolve().parent.parent

RAISE_ALL = """
DO $$
BEGIN
  RAISE EXCEPTION 'the table is locked'
    USING DETAIL = 'row 7 of embeddings', HINT = 'wait for the backup to finish', ERRCODE = 'P0001';
END
$$
"""


def server_error(dsn, statement):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.Error) as caught:
                cur.execute(statement)
        return caught.value
    finally:
        conn.close()


def test_error_text_keeps_message_detail_hint_context_and_sqlstate(scratch_db):
    e = server_error(scratch_db["dsn"], RAISE_ALL)
    assert pg.error_text(e) == (
        "the table is locked; DETAIL: row 7 of embeddings; HINT: wait for the backup to finish; "
        "CONTEXT: PL/pgSQL function inline_code_block line 3 at RAISE; SQLSTATE P0001"
    )


def test_error_text_keeps_the_position_and_a_constraint_detail(scratch_db):
    e = server_error(scratch_db["dsn"], "SELECT id FROM no_such_table")
    assert pg.error_text(e) == 'relation "no_such_table" does not exist; at character 16 of the statement; SQLSTATE 42P01'
    e = server_error(scratch_db["dsn"], "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (1)")
    assert pg.error_text(e) == (
        'duplicate key value violates unique constraint "t_pkey"; DETAIL: Key (id)=(1) already exists.; SQLSTATE 23505'
    )


def test_every_engine_reports_the_same_text(scratch_db, tmp_path):
    """The migration runner, the access converger and the vector engine share the error class and its text."""
    assert issubclass(migrate.MigrationError, pg.PostgresError)
    assert issubclass(pg_access.AccessError, pg.PostgresError)
    assert issubclass(vi.VectorIndexError, pg.PostgresError)
    folder = write_files(tmp_path / "m", {"0001_raise.sql": RAISE_ALL})
    with pytest.raises(migrate.MigrationError) as caught:
        migrate.run({"dsn": scratch_db["dsn"]}, str(folder), lint=False)
    assert pg.error_text(server_error(scratch_db["dsn"], RAISE_ALL)) in caught.value.msg
    assert caught.value.details["sqlstate"] == "P0001"


def test_connect_failure_names_where_as_whom_and_the_fix(local_stack):
    pg_info = local_stack["pg"]
    params = dict(host=pg_info["host"], port=1, user="nobody", dbname="appdb", connect_timeout=2)
    with pytest.raises(vi.VectorIndexError) as caught:
        pg.connect(params, error=vi.VectorIndexError)
    msg = caught.value.msg
    assert msg.startswith(f"Cannot connect to PostgreSQL at {pg_info['host']}:1 as nobody within 2 s (database appdb): ")
    assert "Connection refused" in msg and "login_host/login_port" in msg and "database appdb exists" in msg
    assert caught.value.details["target"] == f"{pg_info['host']}:1/appdb"


def test_connect_names_the_session_and_is_autocommit(scratch_db):
    conn = pg.connect({"dsn": scratch_db["dsn"]}, application_name="plumbing-test")
    try:
        assert conn.autocommit
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('application_name'), current_database()")
            assert cur.fetchone() == ("plumbing-test", scratch_db["name"])
    finally:
        conn.close()


def test_conn_params_take_community_postgresql_options():
    p = dict(login_host="db.example", login_port=6432, login_user="admin", login_password="", login_unix_socket="",
             connect_timeout=10, connect_params={"connect_timeout": 3, "options": "-c search_path=app"},
             ssl_mode="verify-full", ca_cert="/etc/ca.pem", ssl_cert=None, ssl_key=None)
    assert pg.conn_params(p, "app") == dict(host="db.example", port=6432, user="admin", connect_timeout=3,
                                            sslmode="verify-full", dbname="app", sslrootcert="/etc/ca.pem",
                                            options="-c search_path=app")
    assert pg.conn_params(dict(p, login_host="", login_unix_socket="/run/pg"))["host"] == "/run/pg"


def test_the_postgres_group_sets_one_login_for_both_collections(local_stack, scratch_db, tmp_path):
    """One `module_defaults: group/ndis.dbops.postgres` reaches a community.postgresql module and the project's."""
    pg_info = local_stack["pg"]
    playbook = tmp_path / "group.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          gather_facts: false
          module_defaults:
            group/ndis.dbops.postgres:
              login_host: {pg_info['host']}
              login_port: {pg_info['port']}
              login_user: {pg_info['user']}
              login_password: "{{{{ lookup('ansible.builtin.env', 'PLUMBING_PG_PASSWORD') }}}}"
              login_db: {scratch_db['name']}
              ssl_mode: disable
              connect_params:
                connect_timeout: 5
          tasks:
            - name: Ping with the community module
              community.postgresql.postgresql_ping:
              register: ping
            - name: Read the health with the project's module
              ndis.dbops.pg_health_info:
              register: health
            - name: Fail with the unified text
              ndis.dbops.pg_migrate:
                path: {write_files(tmp_path / 'm', {'0001_raise.sql': RAISE_ALL})}
                lint: false
              register: failed
              ignore_errors: true
            - name: Keep the results
              ansible.builtin.copy:
                content: "{{{{ {{'ping': ping.is_available, 'checks': health.checks | length, 'msg': failed.msg}} | to_json }}}}"
                dest: {tmp_path / 'results.json'}
                mode: "0600"
        """))
    env = dict(os.environ, PLUMBING_PG_PASSWORD=local_stack["admin_password"])
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shown = json.loads((tmp_path / "results.json").read_text())
    assert shown["ping"] is True and shown["checks"] >= 3
    assert "DETAIL: row 7 of embeddings; HINT: wait for the backup to finish; CONTEXT: PL/pgSQL" in shown["msg"]
    assert local_stack["admin_password"] not in proc.stdout
