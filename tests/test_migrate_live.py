"""pg_migrate on a live database: lock-safe execution and the lint, against the real embedded PostgreSQL.

A "reader" is a session holding a long transaction on the table (ACCESS SHARE), as a report or
a stuck client does; the "app" runs short queries on the table from its own connections and
times each one.
"""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import migrate_lint
from ansible_collections.ndis.dbops.plugins.module_utils.migrate import MigrationError
from migrate_helpers import connect, query, run, scalar, table_exists, write_files

READER_SECONDS = 3.0
LOCK_TIMEOUT = 0.5


@pytest.fixture
def db(scratch_db):
    return scratch_db["dsn"]


@pytest.fixture
def mdir(tmp_path):
    return tmp_path / "migrations"


def _table_with_rows(db, name="docs", rows=100):
    query(db, f"CREATE TABLE {name} (id int PRIMARY KEY, body text); "
              f"INSERT INTO {name} SELECT g, 'b' || g FROM generate_series(1, {rows}) g")


def _reader(db, seconds, started, pid_box):
    conn = connect(db, application_name="long-reader")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid_box.append(cur.fetchone()[0])
            cur.execute("BEGIN; SELECT count(*) FROM docs")
            started.set()
            time.sleep(seconds)
            cur.execute("COMMIT")
    finally:
        conn.close()


def _app(db, stop, latencies):
    conn = connect(db, application_name="app")
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                t0 = time.monotonic()
                cur.execute("SELECT body FROM docs WHERE id = 7")
                cur.fetchall()
                latencies.append(time.monotonic() - t0)
                time.sleep(0.05)
    finally:
        conn.close()


def _migrate_during_reader(db, mdir, reader_seconds, **kw):
    """Start a reader, then the app, then the migration; returns (result or error, latencies, reader pid)."""
    started, stop = threading.Event(), threading.Event()
    pid_box, latencies = [], []
    reader = threading.Thread(target=_reader, args=(db, reader_seconds, started, pid_box))
    reader.start()
    started.wait(10)
    app = threading.Thread(target=_app, args=(db, stop, latencies))
    app.start()
    outcome = None
    try:
        outcome = run(db, mdir, **kw)
    except MigrationError as e:
        outcome = e
    finally:
        stop.set()
        app.join(30)
        reader.join(30)
    return outcome, latencies, pid_box[0]


ALTER = {"0001_col.sql": "ALTER TABLE docs ADD COLUMN note text;\n"}


def test_plain_run_stalls_the_app_behind_a_reader(db, mdir):
    """The lock queue: without a lock timeout the ALTER waits for the reader, and the app waits behind it."""
    _table_with_rows(db)
    write_files(mdir, ALTER)
    res, latencies, _pid = _migrate_during_reader(db, mdir, READER_SECONDS, pg_lock_timeout=0)
    assert [a["name"] for a in res["applied"]] == ["0001_col.sql"]
    assert max(latencies) > READER_SECONDS - 1.0, latencies  # the app stalled for most of the reader's time


def test_lock_safe_run_keeps_the_app_moving_and_applies_after_the_reader(db, mdir):
    _table_with_rows(db)
    write_files(mdir, ALTER)
    lines = []
    res, latencies, pid = _migrate_during_reader(db, mdir, READER_SECONDS, pg_lock_timeout=LOCK_TIMEOUT,
                                                 lock_retry_budget=60, log=lines.append)
    assert [a["name"] for a in res["applied"]] == ["0001_col.sql"]
    assert max(latencies) < LOCK_TIMEOUT + 1.0, latencies
    assert scalar(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'docs' AND column_name = 'note'") == 1
    assert lines and lines == res["lock_waits"]
    assert f"pid {pid}" in lines[0] and "long-reader" in lines[0] and "idle in transaction" in lines[0]
    assert "SELECT count(*) FROM docs" in lines[0] and "retrying" in lines[0]


def test_budget_shorter_than_the_reader_fails_naming_it_and_applies_nothing(db, mdir):
    _table_with_rows(db)
    write_files(mdir, {**ALTER, "0002_more.sql": "CREATE TABLE other (id int);\n"})
    err, latencies, pid = _migrate_during_reader(db, mdir, READER_SECONDS, pg_lock_timeout=LOCK_TIMEOUT,
                                                 lock_retry_budget=1.5)
    assert isinstance(err, MigrationError), err
    assert f"pid {pid}" in err.msg and "0001_col.sql" in err.msg and "lock_retry_budget" in err.msg
    assert "pg_terminate_backend" in err.msg
    assert err.details["blockers"][0]["pid"] == pid
    assert err.result["applied"] == []
    assert max(latencies) < LOCK_TIMEOUT + 1.0, latencies
    assert scalar(db, "SELECT count(*) FROM schema_migrations") == 0
    assert not table_exists(db, "other")
    assert scalar(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'docs' AND column_name = 'note'") == 0


def test_no_transaction_file_retries_the_blocked_statement(db, mdir):
    _table_with_rows(db)
    write_files(mdir, {"0001_idx.sql": "-- migrate:no-transaction\n"
                                       "CREATE INDEX CONCURRENTLY IF NOT EXISTS docs_body ON docs (body);\n"
                                       "ALTER TABLE docs ADD COLUMN note text;\n"})
    res, latencies, _pid = _migrate_during_reader(db, mdir, 2.0, pg_lock_timeout=LOCK_TIMEOUT, lock_retry_budget=60)
    assert [a["name"] for a in res["applied"]] == ["0001_idx.sql"] and res["lock_waits"]
    assert "statement" in res["lock_waits"][0]
    assert query(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'docs_body'::regclass") == [(True,)]
    assert max(latencies) < LOCK_TIMEOUT + 1.0, latencies


def test_lock_timeout_option_is_refused_as_ambiguous(db, mdir):
    write_files(mdir, ALTER)
    with pytest.raises(MigrationError, match="advisory_lock_timeout.*pg_lock_timeout"):
        run(db, mdir, lock_timeout=5)


# ------------------------------------------------------------------------ lint

RISKY = {
    "create-index-non-concurrently": "CREATE INDEX docs_b ON docs (body);",
    "drop-index-non-concurrently": "DROP INDEX docs_pkey_copy;",
    "reindex-non-concurrently": "REINDEX TABLE docs;",
    "adding-not-null-column-without-default": "ALTER TABLE docs ADD COLUMN n int NOT NULL;",
    "volatile-default": "ALTER TABLE docs ADD COLUMN r float8 DEFAULT random();",
    "changing-column-type": "ALTER TABLE docs ALTER COLUMN body TYPE varchar(20);",
    "setting-not-null": "ALTER TABLE docs ALTER COLUMN body SET NOT NULL;",
    "constraint-missing-not-valid": "ALTER TABLE docs ADD CONSTRAINT pos CHECK (id > 0);",
    "adding-unique-without-index": "ALTER TABLE docs ADD CONSTRAINT u UNIQUE (body);",
    "dropping-column": "ALTER TABLE docs DROP COLUMN body;",
    "dropping-table": "DROP TABLE docs;",
    "renaming-column": "ALTER TABLE docs RENAME COLUMN body TO text_body;",
    "renaming-table": "ALTER TABLE docs RENAME TO documents;",
    "vacuum-full": "VACUUM FULL docs;",
    "cluster": "CLUSTER docs USING docs_pkey;",
    "lock-table": "LOCK TABLE docs IN ACCESS EXCLUSIVE MODE;",
    "concurrently-in-transaction": "CREATE INDEX CONCURRENTLY docs_c ON docs (body);",
}

SAFE = [
    "CREATE INDEX docs_b ON docs (body);",  # on an empty table: no risk
    "ALTER TABLE docs ADD COLUMN t timestamptz NOT NULL DEFAULT now();",  # stable default: no rewrite
    "ALTER TABLE docs ADD CONSTRAINT pos CHECK (id > 0) NOT VALID;",
]


def test_every_rule_refuses_on_a_table_with_rows_before_anything_runs(db, mdir):
    assert set(RISKY) == set(migrate_lint.RULES)
    _table_with_rows(db)
    query(db, "CREATE INDEX docs_pkey_copy ON docs (id)")
    for rule, stmt in RISKY.items():
        d = mdir / rule
        write_files(d, {"0001_ok.sql": "CREATE TABLE fresh (id int);\n",
                        "0002_risky.sql": "-- the reviewed change\n\n" + stmt + "\n"})
        for check in (True, False):
            with pytest.raises(MigrationError) as ei:
                run(db, d, check_mode=check)
            e = ei.value
            assert e.details["rule"] == rule, (rule, e.msg)
            assert e.details["file"] == "0002_risky.sql" and e.details["line"] == 3, e.msg
            assert "Safe form: " + migrate_lint.RULES[rule][1] in e.msg and "nothing was changed" in e.msg
        assert not table_exists(db, "fresh") and not table_exists(db, "schema_migrations")


def test_new_or_empty_tables_pass_and_safe_forms_pass(db, mdir):
    query(db, "CREATE TABLE docs (id int PRIMARY KEY, body text)")  # exists, empty
    write_files(mdir, {
        "0001_safe.sql": "\n".join(SAFE) + "\n",
        "0002_new.sql": "CREATE TABLE t2 (id int);\nINSERT INTO t2 VALUES (1);\n"
                        "ALTER TABLE t2 ADD COLUMN v int NOT NULL DEFAULT 0, ALTER COLUMN id TYPE bigint;\n"
                        "ALTER TABLE t2 ADD CONSTRAINT t2_u UNIQUE (v);\nALTER TABLE t2 RENAME TO t3;\n"
                        "CREATE INDEX t3_v ON t3 (v);\n",
    })
    res = run(db, mdir)
    assert [a["name"] for a in res["applied"]] == ["0001_safe.sql", "0002_new.sql"]
    assert res["lint"]["statements"] == 9 and res["lint"]["allowed"] == []


def test_not_null_through_a_validated_check_passes(db, mdir):
    _table_with_rows(db)
    write_files(mdir, {"0001_check.sql": "ALTER TABLE docs ADD CONSTRAINT body_nn CHECK (body IS NOT NULL) NOT VALID;\n",
                       "0002_validate.sql": "ALTER TABLE docs VALIDATE CONSTRAINT body_nn;\n"
                                            "ALTER TABLE docs ALTER COLUMN body SET NOT NULL;\n"})
    assert len(run(db, mdir)["applied"]) == 2


def test_annotation_lets_a_reviewed_statement_through_and_history_records_it(db, mdir):
    _table_with_rows(db)
    write_files(mdir, {"0001_idx.sql": "-- migrate:allow create-index-non-concurrently docs has 100 rows, build < 1s\n"
                                       "CREATE INDEX docs_b ON docs (body);\n"
                                       "-- migrate:allow volatile-default nothing here triggers it\n"
                                       "ALTER TABLE docs ADD COLUMN c int;\n"})
    res = run(db, mdir)
    assert [a["name"] for a in res["applied"]] == ["0001_idx.sql"]
    assert res["lint"]["allowed"][0]["rule"] == "create-index-non-concurrently"
    assert any("allows nothing" in w and "line 3" in w for w in res["warnings"])
    rows = query(db, "SELECT lint_overrides FROM schema_migrations")
    assert rows == [([{"rule": "create-index-non-concurrently", "line": 2,
                       "reason": "docs has 100 rows, build < 1s"}],)]


def test_bad_annotation_fails_naming_it(db, mdir):
    _table_with_rows(db)
    write_files(mdir, {"0001_a.sql": "-- migrate:allow no-such-rule because\nSELECT 1;\n"})
    with pytest.raises(MigrationError, match="0001_a.sql line 1: unknown lint rule 'no-such-rule'"):
        run(db, mdir)
    write_files(mdir, {"0001_a.sql": "-- migrate:allow cluster\nSELECT 1;\n"})
    with pytest.raises(MigrationError, match="needs a reason"):
        run(db, mdir)


def test_baseline_migration_passes_the_lint(db, mdir):
    from pathlib import Path

    query(db, "CREATE EXTENSION IF NOT EXISTS vector")
    base = Path(__file__).resolve().parent.parent / "db" / "migrations"
    res = run(db, base)
    assert res["applied"] and res["lint"]["allowed"] == [] and res["lint"]["statements"] >= 2


def test_refusal_names_the_line_in_a_multibyte_file(db, mdir):
    _table_with_rows(db)
    write_files(mdir, {"0001_a.sql": "-- café: naïve ünïcode\nCOMMENT ON TABLE docs IS 'ŧext';\n\nCREATE INDEX d_b ON docs (body);\n"})
    with pytest.raises(MigrationError) as ei:
        run(db, mdir, check_mode=True)
    assert ei.value.details["line"] == 4 and ei.value.details["rule"] == "create-index-non-concurrently"
