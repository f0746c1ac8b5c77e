"""The health checks' verdicts (module_utils/health.py) on rows shaped like the server's:
pg_stat_statements above all, which the embedded build does not have."""

from __future__ import annotations

import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import health as h

PGSS_ROWS = [  # PostgreSQL 13+ column names, as SELECT * FROM pg_stat_statements returns them
    {"query": "SELECT id FROM embeddings ORDER BY embedding <=> $1 LIMIT $2", "calls": 1200,
     "mean_exec_time": 142.5, "total_exec_time": 171000.0},
    {"query": "UPDATE embeddings SET content = $1 WHERE id = $2", "calls": 3, "mean_exec_time": 950.0,
     "total_exec_time": 2850.0},
    {"query": "SELECT 1", "calls": 90000, "mean_exec_time": 0.01, "total_exec_time": 900.0},
    {"query": "<insufficient privilege>", "calls": None, "mean_exec_time": None, "total_exec_time": None},
]


def test_pg_stat_statements_slow_statements_slowest_total_first():
    slow = h.parse_pg_stat_statements(PGSS_ROWS, min_mean_ms=100)
    assert [s["calls"] for s in slow] == [1200, 3]
    assert slow[0] == {"query": PGSS_ROWS[0]["query"], "calls": 1200, "mean_ms": 142.5, "total_ms": 171000.0}
    c = h.pg_stat_statements_check(True, True, PGSS_ROWS, 100)
    assert c["status"] == h.WARN and c["detail"].startswith("142.5 ms x1200: SELECT id FROM embeddings")


def test_pg_stat_statements_before_13_and_nothing_slow():
    old = [{"query": "SELECT 2", "calls": 10, "mean_time": 250.0, "total_time": 2500.0}]
    assert h.parse_pg_stat_statements(old, 100)[0]["mean_ms"] == 250.0
    assert h.pg_stat_statements_check(True, True, PGSS_ROWS[2:3], 100) == h.check(
        "Slow statements", h.PASS, "no statement averages over 100 ms")


def test_pg_stat_statements_missing_is_said_plainly():
    assert h.pg_stat_statements_check(False, False)["detail"] == "pg_stat_statements: not available on this server"
    assert h.pg_stat_statements_check(False, False)["status"] == h.INFO
    available = h.pg_stat_statements_check(False, True)
    assert available["status"] == h.WARN and "CREATE EXTENSION pg_stat_statements" in available["detail"]


def test_blocking_names_the_blocker():
    rows = [{"pid": 11, "blocked_seconds": 40, "query": "UPDATE t", "blocker_pid": 7, "blocker_user": "app_user",
             "blocker_app": "web", "blocker_state": "idle in transaction", "blocker_query": "SELECT 1 FOR UPDATE",
             "blocker_xact_seconds": 300},
            {"pid": 12, "blocked_seconds": 5, "query": "UPDATE t", "blocker_pid": 7, "blocker_user": "app_user",
             "blocker_app": "web", "blocker_state": "idle in transaction", "blocker_query": "SELECT 1 FOR UPDATE",
             "blocker_xact_seconds": 300}]
    c = h.blocking_check(rows)
    assert c["status"] == h.FAIL
    assert c["detail"].startswith("pid 7 (app_user/web, idle in transaction, transaction 5 min: SELECT 1 FOR UPDATE) "
                                  "blocks 2 session(s) for up to 40 s")
    assert h.blocking_check([])["status"] == h.PASS


def test_sessions_long_running_and_idle_in_transaction():
    rows = [{"pid": 1, "state": "active", "query_seconds": 900, "query": "VACUUM FULL big", "usename": "admin"},
            {"pid": 2, "state": "idle in transaction", "state_seconds": 120, "query": "BEGIN", "usename": "app_user"},
            {"pid": 3, "state": "active", "query_seconds": 2, "query": "SELECT 1"}]
    long_running, idle = h.session_checks(rows, long_seconds=300, idle_seconds=60)
    assert long_running["status"] == h.WARN and "pid 1 admin/- 15 min: VACUUM FULL big" in long_running["detail"]
    assert idle["status"] == h.WARN and "pid 2 app_user/- 2 min: BEGIN" in idle["detail"]


@pytest.mark.parametrize("expr,gap", [("0 16 * * *", 1440), ("*/15 * * * *", 15), ("0 3 * * 0", 7 * 1440),
                                      ("0 2,14 * * *", 720), ("30 1 * * 1-5", 3 * 1440)])
def test_cron_longest_gap(expr, gap):
    assert h.cron_max_gap_minutes(expr) == gap


def test_dump_age_against_its_schedule():
    assert h.dump_age_check(25 * 3600, "0 16 * * *")["status"] == h.PASS  # within a day and the grace
    late = h.dump_age_check(27 * 3600, "0 16 * * *")
    assert late["status"] == h.FAIL and "may be 26.0 h" in late["detail"]
    assert h.dump_age_check(None, "0 16 * * *")["status"] == h.FAIL


def test_connections_and_vacuum():
    assert h.connections_check(80, 100)["status"] == h.WARN
    assert h.connections_check(95, 100)["status"] == h.FAIL
    assert h.connections_check(5, 100)["status"] == h.PASS
    row = {"table": "public.embeddings", "live": 8000, "dead": 4000, "last_autovacuum_seconds": None,
           "last_vacuum_seconds": None}
    v = h.vacuum_check(row)
    assert v["status"] == h.WARN and v["detail"] == "4000 dead of 12000 rows (33%), never vacuumed"


def test_index_use():
    assert h.index_check("i", "t", "i", 8 << 20, 4 << 20, 5000)["status"] == h.PASS
    assert h.index_check("i", "t", None, 8 << 20, 4 << 20, 5000)["detail"].startswith("the app's query uses a sequential scan")
    assert h.index_check("i", "t", None, None, 4 << 20, 5000)["status"] == h.FAIL
    assert h.index_check("i", "t", None, 8192, 8192, 10)["status"] == h.INFO
    assert h.index_check("i", "t", "i", 8 << 20, 4 << 20, 5000, buffers_bytes=128 << 20)["status"] == h.PASS
    big = h.index_check("i", "t", "i", 391 << 20, 300 << 20, 100000, buffers_bytes=128 << 20)
    assert big["status"] == h.WARN and "larger than shared_buffers 128" in big["detail"], big
