"""pg_migrate (ndis.dbops) against the real embedded PostgreSQL of the local stack.

Fixtures ``local_stack``, ``pg_admin_dsn`` and ``scratch_db`` come from tests/conftest.py.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import migrate
from ansible_collections.ndis.dbops.plugins.module_utils.migrate import MigrationError, split_statements
from migrate_helpers import (
    catalog_snapshot,
    connect,
    dsn_params,
    history,
    query,
    run,
    scalar,
    sha256_file,
    table_exists,
    write_files,
)
from playbook_runner import run_playbook


@pytest.fixture
def db(scratch_db):
    return scratch_db["dsn"]


@pytest.fixture
def mdir(tmp_path):
    return tmp_path / "migrations"


# ----------------------------------------------------------------- files / parsing


def test_duplicate_versions_fail_naming_both(tmp_path):
    d = write_files(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError) as ei:
        migrate.scan(str(d))
    assert "0001_a.sql" in ei.value.msg and "1_b.sql" in ei.value.msg and "duplicate" in ei.value.msg


def test_file_without_version_fails_naming_it(tmp_path):
    d = write_files(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "create_stuff.sql": "SELECT 2;", "README.md": "x"})
    with pytest.raises(MigrationError) as ei:
        migrate.scan(str(d))
    assert "create_stuff.sql" in ei.value.msg and "README.md" not in ei.value.msg


def test_missing_directory_fails(tmp_path):
    with pytest.raises(MigrationError, match="does not exist"):
        migrate.scan(str(tmp_path / "nope"))


def test_split_statements_respects_quotes_and_comments():
    text = (
        "-- header; not a statement\n"
        "CREATE INDEX CONCURRENTLY i ON t (a);\n"
        "SELECT 'a;b', E'it\\'s;', \"we;ird\";\n"
        "/* block ; /* nested ; */ */\n"
        "DO $body$ BEGIN PERFORM 1; END $body$;\n"
        "SELECT $$x;y$$\n"
    )
    stmts = split_statements(text)
    assert len(stmts) == 4
    assert "CREATE INDEX CONCURRENTLY i ON t (a)" in stmts[0][1]
    assert stmts[1][1].strip() == "SELECT 'a;b', E'it\\'s;', \"we;ird\""
    assert "DO $body$ BEGIN PERFORM 1; END $body$" in stmts[2][1]
    assert stmts[3][1].strip() == "SELECT $$x;y$$"
    for start, s in stmts:
        assert text[start:start + len(s)] == s


def test_connection_failure_is_clear_and_fast(tmp_path):
    d = write_files(tmp_path / "m", {"0001_a.sql": "SELECT 1;"})
    t0 = time.monotonic()
    with pytest.raises(MigrationError) as ei:
        migrate.run(dict(host="127.0.0.1", port=1, user="nobody", dbname="appdb", connect_timeout=3), str(d))
    assert time.monotonic() - t0 < 5
    assert ei.value.msg.startswith("Cannot connect to PostgreSQL at 127.0.0.1:1 as nobody within 3 s (database appdb): ")
    assert ei.value.details["target"] == "127.0.0.1:1/appdb"


# -------------------------------------------------------------------- core runs


def test_numeric_order_and_each_file_once(db, mdir):
    write_files(mdir, {
        "1_log.sql": "CREATE TABLE applied_log (n serial PRIMARY KEY, v text);\n",
        "10_ten.sql": "INSERT INTO applied_log (v) VALUES ('10');\n",
        "2_two.sql": "INSERT INTO applied_log (v) VALUES ('2');\n",
        "9_nine.sql": "INSERT INTO applied_log (v) VALUES ('9');\n",
    })
    res = run(db, mdir)
    assert res["changed"] is True
    assert [a["version"] for a in res["applied"]] == ["1", "2", "9", "10"]
    assert res["queries"] == ["1_log.sql", "2_two.sql", "9_nine.sql", "10_ten.sql"]
    assert res["pending"] == []
    assert [r[0] for r in query(db, "SELECT v FROM applied_log ORDER BY n")] == ["2", "9", "10"]

    again = run(db, mdir)
    assert again["changed"] is False and again["applied"] == [] and again["queries"] == []
    assert again["current_version"] == "10" and again["history_count"] == 4
    assert scalar(db, "SELECT count(*) FROM applied_log") == 3


def test_history_columns_filled(db, mdir):
    write_files(mdir, {"0001_a.sql": "CREATE TABLE a (id int);\n", "0002_b.sql": "SELECT pg_sleep(0.05);\n"})
    run(db, mdir)
    rows = query(db, "SELECT version, name, checksum, applied_at, execution_ms, applied_by, current_user "
                     "FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == ["1", "2"]
    assert [r[1] for r in rows] == ["0001_a.sql", "0002_b.sql"]
    assert rows[0][2] == sha256_file(mdir / "0001_a.sql")
    assert all(r[3] is not None for r in rows)
    assert rows[1][4] >= 50  # server-side duration of the file
    assert all(r[5] == r[6] for r in rows)


def test_checksum_drift_fails_before_any_change_then_repair(db, mdir):
    write_files(mdir, {"0001_a.sql": "CREATE TABLE a (id int);\n"})
    run(db, mdir)
    old = sha256_file(mdir / "0001_a.sql")
    write_files(mdir, {"0001_a.sql": "CREATE TABLE a (id bigint);\n", "0002_b.sql": "CREATE TABLE b (id int);\n"})
    new = sha256_file(mdir / "0001_a.sql")
    for check in (True, False):
        with pytest.raises(MigrationError) as ei:
            run(db, mdir, check_mode=check)
        assert "0001_a.sql" in ei.value.msg and old in ei.value.msg and new in ei.value.msg
        assert "nothing was changed" in ei.value.msg
    assert not table_exists(db, "b")

    res = run(db, mdir, repair=True)
    assert res["changed"] and res["repaired"] == [
        {"version": "1", "name": "0001_a.sql", "old_checksum": old, "new_checksum": new}
    ]
    assert [a["name"] for a in res["applied"]] == ["0002_b.sql"]
    assert [r[2] for r in history(db)] == [new, sha256_file(mdir / "0002_b.sql")]
    assert run(db, mdir)["changed"] is False


def test_missing_applied_file_fails_or_warns(db, mdir):
    write_files(mdir, {"0001_a.sql": "CREATE TABLE a (id int);\n", "0002_b.sql": "CREATE TABLE b (id int);\n"})
    run(db, mdir)
    (mdir / "0001_a.sql").unlink()
    write_files(mdir, {"0003_c.sql": "CREATE TABLE c (id int);\n"})
    with pytest.raises(MigrationError) as ei:
        run(db, mdir)
    assert "0001_a.sql" in ei.value.msg and "missing" in ei.value.msg
    assert not table_exists(db, "c")
    res = run(db, mdir, missing="warn")
    assert any("0001_a.sql" in w for w in res["warnings"])
    assert [a["name"] for a in res["applied"]] == ["0003_c.sql"]


def test_out_of_order_fails_unless_allowed(db, mdir):
    write_files(mdir, {"0001_a.sql": "CREATE TABLE a (id int);\n", "0003_c.sql": "CREATE TABLE c (id int);\n"})
    run(db, mdir)
    write_files(mdir, {"0002_b.sql": "CREATE TABLE b (id int);\n", "0004_d.sql": "CREATE TABLE d (id int);\n"})
    with pytest.raises(MigrationError) as ei:
        run(db, mdir)
    assert "0002_b.sql" in ei.value.msg and "allow_out_of_order" in ei.value.msg
    assert not table_exists(db, "b") and not table_exists(db, "d")
    res = run(db, mdir, allow_out_of_order=True)
    assert [a["name"] for a in res["applied"]] == ["0002_b.sql", "0004_d.sql"]
    assert [r[0] for r in history(db)] == ["1", "2", "3", "4"]


def test_baseline_records_without_running(db, mdir):
    write_files(mdir, {
        "0001_a.sql": "CREATE TABLE a (id int);\n",
        "0002_b.sql": "CREATE TABLE b (id int);\n",
        "0003_c.sql": "CREATE TABLE c (id int);\n",
    })
    chk = run(db, mdir, baseline="0002", check_mode=True)
    assert chk["changed"] and chk["queries"] == ["0003_c.sql"] and [b["version"] for b in chk["baselined"]] == ["1", "2"]
    assert history(db) is None
    res = run(db, mdir, baseline="0002")
    assert [b["name"] for b in res["baselined"]] == ["0001_a.sql", "0002_b.sql"]
    assert [a["name"] for a in res["applied"]] == ["0003_c.sql"]
    assert not table_exists(db, "a") and not table_exists(db, "b") and table_exists(db, "c")
    h = history(db)
    assert [r[0] for r in h] == ["1", "2", "3"] and h[0][3] is None and h[2][3] is not None
    # history not empty any more: baseline is ignored, nothing to do
    assert run(db, mdir, baseline="0002")["changed"] is False


def test_target_applies_up_to_version(db, mdir):
    write_files(mdir, {
        "20260101000000_a.sql": "CREATE TABLE a (id int);\n",
        "20260102000000_b.sql": "CREATE TABLE b (id int);\n",
        "20260103000000_c.sql": "CREATE TABLE c (id int);\n",
    })
    res = run(db, mdir, target="20260102000000")
    assert [a["name"] for a in res["applied"]] == ["20260101000000_a.sql", "20260102000000_b.sql"]
    assert res["pending"] == [{"version": "20260103000000", "name": "20260103000000_c.sql"}]
    assert not table_exists(db, "c")
    res = run(db, mdir)
    assert [a["name"] for a in res["applied"]] == ["20260103000000_c.sql"] and res["pending"] == []


def test_no_transaction_file_with_create_index_concurrently(db, mdir):
    write_files(mdir, {
        "0001_t.sql": "CREATE TABLE items (id int, note text);\nINSERT INTO items SELECT g, 'n;' || g FROM generate_series(1, 1000) g;\n",
        "0002_idx.sql": (
            "-- Index the items without blocking writes.\n"
            "-- migrate:no-transaction\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id ON items (id);\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_note ON items (note); -- 'quoted; comment'\n"
        ),
        "0003_after.sql": "CREATE TABLE after_idx (id int);\n",
    })
    res = run(db, mdir)
    assert [a["name"] for a in res["applied"]] == ["0001_t.sql", "0002_idx.sql", "0003_after.sql"]
    rows = query(db, "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                     "WHERE c.relname LIKE 'items_%' ORDER BY 1")
    assert rows == [("items_id", True), ("items_note", True)]
    assert [r[0] for r in history(db)] == ["1", "2", "3"]


def test_concurrently_without_header_explains_fix(db, mdir):
    write_files(mdir, {"0001_t.sql": "CREATE TABLE items (id int);\nCREATE INDEX CONCURRENTLY i ON items (id);\n"})
    with pytest.raises(MigrationError) as ei:
        run(db, mdir)
    assert "migrate:no-transaction" in ei.value.msg and "0001_t.sql" in ei.value.msg
    assert "concurrently-in-transaction" in ei.value.msg  # the lint refuses before anything runs
    assert not table_exists(db, "items") and history(db) is None
    # without the lint, the server refuses it, and the error says the same
    with pytest.raises(MigrationError) as ei:
        run(db, mdir, lint=False)
    assert "migrate:no-transaction" in ei.value.msg and "0001_t.sql" in ei.value.msg
    assert not table_exists(db, "items") and history(db) == []


def test_failing_file_rolled_back_with_file_and_line(db, mdir):
    write_files(mdir, {
        "0001_a.sql": "CREATE TABLE a (id int);\n",
        "0002_b.sql": "CREATE TABLE b (id int);\n",
        "0003_bad.sql": (
            "-- creates c, then breaks\n"
            "CREATE TABLE c (id int);\n"
            "INSERT INTO c VALUES (1);\n"
            "\n"
            "CREATE TABEL d (id int);\n"
            "CREATE TABLE e (id int);\n"
        ),
        "0004_d.sql": "CREATE TABLE after_bad (id int);\n",
    })
    with pytest.raises(MigrationError) as ei:
        run(db, mdir)
    e = ei.value
    assert e.details["file"] == "0003_bad.sql" and e.details["line"] == 5
    assert "0003_bad.sql" in e.msg and "line 5" in e.msg and 'syntax error at or near "TABEL"' in e.msg
    assert "rolled back" in e.msg
    assert [a["name"] for a in e.result["applied"]] == ["0001_a.sql", "0002_b.sql"] and e.result["changed"]
    assert table_exists(db, "a") and table_exists(db, "b")
    assert not table_exists(db, "c") and not table_exists(db, "after_bad")
    assert [r[0] for r in history(db)] == ["1", "2"]
    # lock released: a fixed file applies at once
    write_files(mdir, {"0003_bad.sql": "CREATE TABLE c (id int);\n"})
    res = run(db, mdir, advisory_lock_timeout=1)
    assert [a["name"] for a in res["applied"]] == ["0003_bad.sql", "0004_d.sql"]


def test_runtime_error_without_position_and_multibyte_lines(db, mdir):
    write_files(mdir, {
        "0001_x.sql": "-- café ünïcode\nCREATE TABLE x (id int);\nSELECT 1/0;\n",
        "0002_y.sql": "-- 日本語\nCOMMENT ON TABLE x IS 'naïve';\nSELECT * FROM nowhere_ŧ;\n",
    })
    with pytest.raises(MigrationError) as ei:
        run(db, mdir)
    # no position from the server: the failing statement is found by a rolled-back replay
    assert "failed at line 3" in ei.value.msg and "division by zero" in ei.value.msg
    assert ei.value.details["line"] == 3
    assert not table_exists(db, "x"), "the replay must leave nothing behind"
    write_files(mdir, {"0001_x.sql": "-- café ünïcode\nCREATE TABLE x (id int);\n"})
    with pytest.raises(MigrationError) as ei:
        run(db, mdir)
    assert ei.value.details["file"] == "0002_y.sql" and ei.value.details["line"] == 3


def test_no_transaction_failure_names_statement_line(db, mdir):
    write_files(mdir, {
        "0001_t.sql": "CREATE TABLE t (id int);\n",
        "0002_idx.sql": "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n\nCREATE INDEX CONCURRENTLY t_x ON t (nocol);\n",
    })
    with pytest.raises(MigrationError) as ei:
        run(db, mdir)
    assert ei.value.details["line"] == 4 and "nocol" in ei.value.msg and "NOT recorded" in ei.value.msg
    assert [r[0] for r in history(db)] == ["1"]
    write_files(mdir, {"0002_idx.sql": "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n"})
    assert [a["name"] for a in run(db, mdir)["applied"]] == ["0002_idx.sql"]


def test_percent_signs_and_empty_file(db, mdir):
    write_files(mdir, {
        "0001_p.sql": "CREATE TABLE p (v text);\nINSERT INTO p VALUES ('100%'), ('%s'), ('%(x)s');\n",
        "0002_empty.sql": "-- nothing to do yet\n",
    })
    res = run(db, mdir)
    assert len(res["applied"]) == 2
    assert sorted(r[0] for r in query(db, "SELECT v FROM p")) == ["%(x)s", "%s", "100%"]


def test_custom_history_schema_and_table(db, mdir):
    write_files(mdir, {"0001_a.sql": "CREATE TABLE a (id int);\n"})
    run(db, mdir, history_schema="meta", history_table="Migrations")
    assert [r[0] for r in history(db, 'meta."Migrations"')] == ["1"]
    assert history(db) is None


def test_role_owns_created_objects(db, scratch_db, mdir):
    role = "owner_" + scratch_db["name"][-10:]
    conn = connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{role}" NOLOGIN')
            cur.execute(f'GRANT CREATE ON DATABASE "{scratch_db["name"]}" TO "{role}"')
            cur.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
        write_files(mdir, {"0001_a.sql": "CREATE TABLE owned (id int);\nCREATE SCHEMA app;\nCREATE TABLE app.t (id int);\n"})
        res = run(db, mdir, role=role)
        assert res["changed"]
        owners = query(db, "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                           "WHERE c.relname IN ('owned', 't', 'schema_migrations') ORDER BY 1")
        assert owners == [("owned", role), ("schema_migrations", role), ("t", role)]
        assert scalar(db, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'app'") == role
        assert {r[0] for r in query(db, "SELECT applied_by FROM schema_migrations")} == {role}
        with pytest.raises(MigrationError, match="SET ROLE"):
            run(db, mdir, role="no_such_role_xyz")
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP OWNED BY "{role}" CASCADE')
            cur.execute(f'DROP ROLE "{role}"')
        conn.close()


def test_check_mode_on_fresh_db_changes_nothing(db, mdir):
    write_files(mdir, {
        "0001_ext.sql": "CREATE EXTENSION IF NOT EXISTS vector;\n",
        "0002_a.sql": "CREATE SCHEMA app;\nCREATE TABLE app.docs (id bigserial PRIMARY KEY, emb vector(3));\n",
    })
    before = catalog_snapshot(db)
    res = run(db, mdir, check_mode=True)
    assert catalog_snapshot(db) == before
    assert res["changed"] is True and res["applied"] == []
    assert [p["name"] for p in res["pending"]] == ["0001_ext.sql", "0002_a.sql"]
    assert res["queries"] == ["0001_ext.sql", "0002_a.sql"]
    assert res["diff"] == {"before": "", "after": "1 0001_ext.sql\n2 0002_a.sql\n"}
    # no advisory lock left behind
    assert scalar(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0

    run(db, mdir)
    again = run(db, mdir, check_mode=True)
    assert again["changed"] is False and again["pending"] == [] and again["queries"] == []


def test_two_runs_at_once_serialise(db, mdir):
    write_files(mdir, {
        "0001_t.sql": "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n",
        "0002_slow.sql": "SELECT pg_sleep(1.5);\nINSERT INTO t VALUES (2);\n",
        "0003_idx.sql": "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n",
        "0004_more.sql": "INSERT INTO t VALUES (4);\n",
    })
    results, errors = [], []

    def worker():
        try:
            results.append(run(db, mdir, advisory_lock_timeout=30))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(60)
    assert not errors, errors
    applied = sorted(len(r["applied"]) for r in results)
    assert applied == [0, 4]
    assert sorted(r["changed"] for r in results) == [False, True]
    assert [r[0] for r in query(db, "SELECT id FROM t ORDER BY id")] == [1, 2, 4]
    assert [r[0] for r in history(db)] == ["1", "2", "3", "4"]


def test_lock_timeout_names_holder(db, mdir):
    write_files(mdir, {"0001_a.sql": "CREATE TABLE a (id int);\n"})
    holder = connect(db, application_name="lock-holder-test")
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            cur.execute("SELECT pg_advisory_lock(%s)", (migrate.lock_key("public", "schema_migrations"),))
        t0 = time.monotonic()
        with pytest.raises(MigrationError) as ei:
            run(db, mdir, advisory_lock_timeout=1)
        assert 0.9 < time.monotonic() - t0 < 5
        msg = ei.value.msg
        assert f"pid {pid}" in msg and "lock-holder-test" in msg and "since" in msg
        assert ei.value.details["holders"][0]["pid"] == pid
        assert not table_exists(db, "a")
    finally:
        holder.close()
    assert run(db, mdir, advisory_lock_timeout=5)["changed"]


def test_backend_killed_mid_file_then_rerun(db, mdir):
    write_files(mdir, {
        "0001_a.sql": "CREATE TABLE a (id int);\n",
        "0002_slow.sql": "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\nSELECT pg_sleep(5);\nINSERT INTO b VALUES (2);\n",
        "0003_c.sql": "CREATE TABLE c (id int);\n",
    })
    errors = []

    def worker():
        try:
            run(db, mdir)
        except MigrationError as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    killed = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not killed:
        killed = bool(scalar(
            db,
            "SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'pg_migrate' AND state = 'active' AND query LIKE '%pg_sleep(5)%'",
        ))
        time.sleep(0.05)
    t.join(30)
    assert killed and len(errors) == 1
    assert "0002_slow.sql" in errors[0].msg and "NOT recorded" in errors[0].msg
    assert [r[0] for r in history(db)] == ["1"] and not table_exists(db, "b")

    res = run(db, mdir)
    assert [a["name"] for a in res["applied"]] == ["0002_slow.sql", "0003_c.sql"]
    assert [r[0] for r in query(db, "SELECT id FROM b ORDER BY id")] == [1, 2]
    assert [r[0] for r in history(db)] == ["1", "2", "3"]


# ------------------------------------------------------------ the Ansible module


def _playbook(tmp_path: Path, args: dict) -> Path:
    pb = tmp_path / "migrate.yml"
    pb.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: migrate\n"
        "      ndis.dbops.pg_migrate: " + json.dumps(args) + "\n"
        "      register: mig\n"
        "    - name: show\n"
        "      ansible.builtin.copy:\n"
        "        content: \"{{ mig | to_json }}\"\n"
        "        dest: \"{{ out }}\"\n"
        "      check_mode: false\n"
    )
    return pb


def _ansible(pb: Path, tmp_path: Path, *extra: str, expect_rc: int = 0):
    out = tmp_path / "result.json"
    proc = run_playbook(pb, "-e", f"out={out}", *extra, localhost=True,
                        env={"ANSIBLE_LOCAL_TEMP": tmp_path / "ansible-tmp"}, timeout=300)
    assert proc.returncode == expect_rc, proc.stdout + proc.stderr
    return json.loads(out.read_text()) if expect_rc == 0 else proc.stdout + proc.stderr


def test_ansible_module_end_to_end(scratch_db, local_stack, tmp_path, mdir):
    db = scratch_db["dsn"]
    p = dsn_params(db)
    write_files(mdir, {
        "0001_ext.sql": "CREATE EXTENSION IF NOT EXISTS vector;\n",
        "0002_docs.sql": "CREATE TABLE docs (id bigserial PRIMARY KEY, body text, emb vector(3));\n",
        "0003_idx.sql": "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS docs_body ON docs (body);\n",
    })
    args = {
        "login_host": p.get("host", ""),
        "login_port": int(p.get("port", 5432)),
        "login_user": p.get("user", "postgres"),
        "login_password": p.get("password", ""),
        "login_db": p["dbname"],
        "path": str(mdir),
        "advisory_lock_timeout": 30,
    }
    pb = _playbook(tmp_path, args)
    before = catalog_snapshot(db)

    r = _ansible(pb, tmp_path, "--check", "--diff")
    assert r["changed"] is True and r["applied"] == []
    assert r["queries"] == ["0001_ext.sql", "0002_docs.sql", "0003_idx.sql"]
    assert "3 0003_idx.sql" in r["diff"]["after"]
    assert catalog_snapshot(db) == before

    r = _ansible(pb, tmp_path)
    assert r["changed"] is True and [a["name"] for a in r["applied"]] == r["queries"]
    assert "diff" not in r
    if args["login_password"]:
        assert args["login_password"] not in json.dumps(r)
    assert [h[0] for h in history(db)] == ["1", "2", "3"]

    r = _ansible(pb, tmp_path, "--check", "--diff")
    assert r["changed"] is False and r["pending"] == [] and r["queries"] == []

    r = _ansible(pb, tmp_path)
    assert r["changed"] is False and r["applied"] == []

    # a failing file fails the task with file, line and the server's message
    write_files(mdir, {"0004_bad.sql": "CREATE TABLE ok4 (id int);\nCREATE TABEL nope (id int);\n"})
    text = _ansible(pb, tmp_path, expect_rc=2)
    assert "0004_bad.sql" in text and "line 2" in text and "TABEL" in text
    assert [h[0] for h in history(db)] == ["1", "2", "3"] and not table_exists(db, "ok4")
