"""The health checks' verdicts (module_utils/health.py) on rows shaped like the server's:
pg_stat_statements above all, which the embedded build does not have."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.ndis.dbops.plugins.filter.health import rotation_schedule
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


def utc(text):
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("expr,after,fires", [
    ("0 16 * * *", "2026-12-03 12:40", "2026-12-03 16:00"),
    ("0 16 * * *", "2026-12-03 16:00", "2026-12-04 16:00"),   # strictly after
    ("*/15 * * * *", "2026-12-03 12:40:30", "2026-12-03 12:45"),
    ("0 3 * * 0", "2026-12-03 12:00", "2026-12-06 03:00"),     # 2026-12-06 is a Sunday
    ("0 3 * * sun", "2026-12-03 12:00", "2026-12-06 03:00"),
    ("30 1 * * 1-5", "2026-12-04 02:00", "2026-12-07 01:30"),  # Friday after the run: Monday
    ("0 0 1 * 1", "2026-12-03 00:00", "2026-12-07 00:00"),     # both day fields: either matches
    ("0 12 29 2 *", "2026-03-01 00:00", "2028-02-29 12:00"),
])
def test_cron_next_fire(expr, after, fires):
    assert h.cron_next(expr, utc(after)) == utc(fires)


def test_cron_next_fire_in_the_schedules_time_zone():
    # 02:00 in Sydney is 15:00 UTC the day before in December (AEDT, +11) and 16:00 UTC in June (AEST, +10)
    assert h.cron_next("0 2 * * *", utc("2026-12-03 12:00"), "Australia/Sydney") == utc("2026-12-03 15:00")
    assert h.cron_next("0 2 * * *", utc("2026-06-03 12:00"), "Australia/Sydney") == utc("2026-06-03 16:00")


def test_dump_freshness_before_the_first_run_is_due_is_information():
    since = utc("2026-12-03 12:40")  # a stack set up in the afternoon: the first nightly run is at 16:00
    c = h.dump_freshness_check(None, "0 16 * * *", utc("2026-12-03 12:45"), since)
    assert c["status"] == h.INFO and "the first run of schedule 0 16 * * * is due 2026-12-03 16:00 UTC" in c["detail"], c
    # inside the grace after the first run was due: still nothing to miss
    assert h.dump_freshness_check(None, "0 16 * * *", utc("2026-12-03 17:59"), since)["status"] == h.INFO


def test_dump_freshness_a_missing_first_dump_fails_naming_how_late_it_is():
    since = utc("2026-12-01 09:00")
    c = h.dump_freshness_check(None, "0 16 * * *", utc("2026-12-03 12:40"), since)
    assert c["status"] == h.FAIL, c
    assert "was due 2026-12-01 16:00 UTC, 44.7 h late (grace 2.0 h" in c["detail"], c
    assert "playbooks/backup_now.yml" in c["detail"]
    # nothing says when dumps were set up and there is none: nothing proves they ever ran
    assert h.dump_freshness_check(None, "0 16 * * *", utc("2026-12-03 12:40"))["status"] == h.FAIL


def test_dump_freshness_after_a_dump_judges_the_next_due_run():
    newest = utc("2026-12-02 16:04")
    ok = h.dump_freshness_check(newest, "0 16 * * *", utc("2026-12-03 17:30"), utc("2026-11-01 00:00"))
    assert ok["status"] == h.PASS and ok["detail"].startswith("25.4 h old; the next run"), ok  # due 16:00, in grace
    late = h.dump_freshness_check(newest, "0 16 * * *", utc("2026-12-03 18:30"), utc("2026-11-01 00:00"))
    assert late["status"] == h.FAIL and "due 2026-12-03 16:00 UTC is 2.5 h late (grace 2.0 h)" in late["detail"], late
    # a weekly schedule gives a week, not a day
    weekly = h.dump_freshness_check(utc("2026-11-29 03:10"), "0 3 * * 0", utc("2026-12-05 12:00"))
    assert weekly["status"] == h.PASS, weekly
    # a longer grace moves the limit
    assert h.dump_freshness_check(newest, "0 16 * * *", utc("2026-12-03 18:30"), grace_minutes=180)["status"] == h.PASS


def test_restore_test_against_its_cadence():
    since = utc("2026-12-01 09:00")
    record = {"result": "PASS", "key": "logical/ndis_chatbot/restore-test.json", "problems": []}
    first = h.restore_test_check(None, None, utc("2026-12-03 12:00"), since, every_days=7)
    assert first["status"] == h.INFO and "the first is due 2026-12-08 09:00 UTC" in first["detail"], first
    overdue = h.restore_test_check(None, None, utc("2026-12-09 12:00"), since, every_days=7)
    assert overdue["status"] == h.FAIL and "was due 2026-12-08 09:00 UTC (every 7 d), 27.0 h late" in overdue["detail"]
    fresh = h.restore_test_check(record, utc("2026-12-02 10:00"), utc("2026-12-03 12:00"), since)
    assert fresh["status"] == h.PASS and fresh["detail"].startswith("PASS 26.0 h ago (restore-test.json)"), fresh
    stale = h.restore_test_check(record, utc("2026-12-02 10:00"), utc("2026-12-10 12:00"), since)
    assert stale["status"] == h.FAIL and "the next was due 2026-12-09 10:00 UTC (every 7 d), 26.0 h late" in stale["detail"]
    failed = dict(record, result="FAIL", problems=["row count of public.embeddings: 10 != 12"])
    bad = h.restore_test_check(failed, utc("2026-12-03 11:00"), utc("2026-12-03 12:00"), since)
    assert bad["status"] == h.FAIL and "row count of public.embeddings" in bad["detail"]


def test_database_url_age_against_the_rotation_cadence():
    written = utc("2026-11-01 17:00")
    fresh = h.url_age_check(written, utc("2026-11-20 12:00"), every_days=30, grace_hours=48)
    assert fresh["status"] == h.PASS and "the next rotation is due 2026-12-01 17:00 UTC (every 30 d)" in fresh["detail"]
    within_grace = h.url_age_check(written, utc("2026-12-03 16:00"), every_days=30, grace_hours=48)
    assert within_grace["status"] == h.PASS, within_grace  # due, but the runner has until the grace runs out
    late = h.url_age_check(written, utc("2026-12-04 17:00"), every_days=30, grace_hours=48)
    assert late["status"] == h.FAIL and "the rotation due 2026-12-01 17:00 UTC (every 30 d) is 3.0 d late (grace 2.0 d)" \
        in late["detail"], late
    assert "playbooks/rotate_app_password.yml" in late["detail"]
    none = h.url_age_check(written, utc("2027-06-01 00:00"), every_days=0)
    assert none["status"] == h.INFO and "no rotation cadence is set" in none["detail"]
    assert h.url_age_check(None, utc("2026-12-01 00:00"), every_days=30)["status"] == h.FAIL


def test_the_schedules_rotation_is_due_when_the_url_is_as_old_as_the_cadence():
    """What rotate_when_due decides (the rotation_schedule filter): due from the cadence on, an hour early allowed
    for the runner's tick; without a cadence never."""
    written = "2026-11-01T17:30:05+00:00"
    early = rotation_schedule(written, 30, now=utc("2026-11-20 17:30"))
    assert early == {"due_at": "2026-12-01 17:30 UTC", "due": False, "age_hours": 456.0}
    assert rotation_schedule(written, 30, now=utc("2026-12-01 17:00"))["due"] is True  # the daily tick, a little early
    assert rotation_schedule(written, 30, now=utc("2026-12-01 15:00"))["due"] is False
    assert rotation_schedule(written, 0, now=utc("2027-12-01 15:00")) == {"due_at": "", "due": False, "age_hours": 9477.5}
    assert rotation_schedule("", 30)["due"] is False  # nothing stored: the playbook's own check says so


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


def test_replica_check_counts_lag_only_while_behind_and_names_a_paused_replay():
    ok = {"standby": True, "pause": "not paused", "gap_bytes": 0, "since_replay": 280.0, "conflicts": 0}
    # an idle primary: the last replayed transaction is old, nothing waits to be replayed: no lag
    assert h.replica_check("db-r1", ok)["status"] == "PASS"
    assert "lag 0 s" in h.replica_check("db-r1", ok)["detail"]
    behind = dict(ok, gap_bytes=16 * 1024 * 1024, since_replay=900.0)
    c = h.replica_check("db-r1", behind, lag_fail_seconds=600)
    assert c["status"] == "FAIL" and c["name"] == "Read replica db-r1" and "alarm threshold" in c["detail"]
    assert h.replica_check("db-r1", dict(behind, since_replay=30.0))["status"] == "PASS"
    paused = h.replica_check("db-r1", dict(ok, pause="paused"))
    assert paused["status"] == "FAIL" and "replay paused" in paused["detail"]
    assert h.replica_check("db-r1", dict(ok, conflicts=3))["status"] == "WARN"
    assert h.replica_check("db-r1", dict(ok, standby=False))["status"] == "FAIL"
    assert h.replica_check("db-r1", {"error": "connection refused"})["status"] == "FAIL"
