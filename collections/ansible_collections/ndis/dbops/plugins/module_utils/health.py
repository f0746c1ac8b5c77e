# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""The health checks' verdicts, from rows already read: pure functions, unit-tested
(tests/test_health.py) without a server that has what they parse (the embedded build has
no pg_stat_statements, for one).

A check is a dict: name, status (PASS, WARN, FAIL, INFO), detail. Only FAIL fails
playbooks/health.yml; WARN is worth a look, INFO is a figure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

PASS, WARN, FAIL, INFO = "PASS", "WARN", "FAIL", "INFO"
STATUSES = (PASS, WARN, FAIL, INFO)


def check(name, status, detail):
    if status not in STATUSES:
        raise ValueError("unknown status %r" % status)
    return dict(name=name, status=status, detail=detail)


def line(c, width=34):
    """One screen line: status, name, detail."""
    return ("%-5s %-*s %s" % (c["status"], width, c["name"], c["detail"])).rstrip()


def short(text, limit=60):
    text = re.sub(r"\s+", " ", str(text or "")).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def duration(seconds):
    seconds = int(seconds or 0)
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    if seconds < 172800:
        return "%.1f h" % (seconds / 3600.0)
    return "%.1f d" % (seconds / 86400.0)


# ---------------------------------------------------------------- sessions and locks

def connections_check(used, max_connections, reserved=3, warn_share=0.8, fail_share=0.95):
    usable = max(int(max_connections) - int(reserved), 1)
    share = float(used) / usable
    status = FAIL if share >= fail_share else WARN if share >= warn_share else PASS
    return check("Connections vs max_connections", status,
                 "%d of %d usable (%d%%; max_connections %d, %d reserved)"
                 % (used, usable, round(share * 100), int(max_connections), int(reserved)))


def session_checks(rows, long_seconds=300, idle_seconds=60):
    """rows: pg_stat_activity client backends, dicts with pid, usename, application_name, state,
    query_seconds, state_seconds, xact_seconds, query. Returns the two checks."""
    long_running = [r for r in rows if r.get("state") == "active" and (r.get("query_seconds") or 0) >= long_seconds]
    idle = [r for r in rows if (r.get("state") or "").startswith("idle in transaction")
            and (r.get("state_seconds") or 0) >= idle_seconds]

    def who(r, key):
        return "pid %s %s/%s %s: %s" % (r["pid"], r.get("usename") or "?", r.get("application_name") or "-",
                                        duration(r.get(key)), short(r.get("query"), 40))

    out = [
        check("Long-running statements", WARN if long_running else PASS,
              "; ".join(who(r, "query_seconds") for r in long_running[:3]) or "none over %s" % duration(long_seconds)),
        check("Idle in transaction", WARN if idle else PASS,
              "; ".join(who(r, "state_seconds") for r in idle[:3]) or "none over %s" % duration(idle_seconds)),
    ]
    return out


def blocking_check(rows, fail_seconds=0):
    """rows: blocked sessions, dicts with pid, blocked_seconds, query and the blocker's
    blocker_pid, blocker_user, blocker_app, blocker_state, blocker_query, blocker_xact_seconds."""
    blocked = [r for r in rows if (r.get("blocked_seconds") or 0) >= fail_seconds]
    if not blocked:
        return check("Blocking locks", PASS, "no session waits on another's lock")
    by_blocker = {}
    for r in blocked:
        by_blocker.setdefault(r["blocker_pid"], []).append(r)
    parts = []
    for pid, waiting in sorted(by_blocker.items(), key=lambda kv: -len(kv[1])):
        b = waiting[0]
        parts.append("pid %s (%s/%s, %s, transaction %s: %s) blocks %d session(s) for up to %s"
                     % (pid, b.get("blocker_user") or "?", b.get("blocker_app") or "-", b.get("blocker_state") or "?",
                        duration(b.get("blocker_xact_seconds")), short(b.get("blocker_query"), 40), len(waiting),
                        duration(max(w.get("blocked_seconds") or 0 for w in waiting))))
    return check("Blocking locks", FAIL, "; ".join(parts) + "; pg_terminate_backend(pid) ends it")


# ---------------------------------------------------------------- tables and indexes

def vacuum_check(row, dead_share=0.2, min_dead=1000):
    """row: table, live, dead, last_autovacuum_seconds (None: never), last_vacuum_seconds."""
    live, dead = int(row.get("live") or 0), int(row.get("dead") or 0)
    share = float(dead) / (live + dead) if live + dead else 0.0
    ages = [a for a in (row.get("last_autovacuum_seconds"), row.get("last_vacuum_seconds")) if a is not None]
    when = "last vacuum %s ago" % duration(min(ages)) if ages else "never vacuumed"
    status = WARN if dead >= min_dead and share >= dead_share else PASS
    return check("Dead tuples on %s" % row["table"], status,
                 "%d dead of %d rows (%d%%), %s" % (dead, live + dead, round(share * 100), when))


def index_check(name, table, used_index, index_bytes, table_bytes, rows, min_rows=1000, buffers_bytes=None):
    """The app's query uses the index; WARN when the index is larger than shared_buffers (``buffers_bytes``): its
    searches then read pages from outside PostgreSQL's cache and their latency varies with what else runs."""
    size = "index %s, table %s" % (human_bytes(index_bytes), human_bytes(table_bytes))
    if index_bytes is None:
        return check("Vector index on %s" % table, FAIL, "%s does not exist" % name)
    if rows < min_rows:
        return check("Vector index on %s" % table, INFO,
                     "%s; planner not asked: fewer than %d rows (%d), a scan is as fast" % (size, min_rows, rows))
    if used_index != name:
        return check("Vector index on %s" % table, FAIL, "the app's query uses %s, not %s; %s"
                     % (used_index or "a sequential scan", name, size))
    ratio = float(index_bytes) / table_bytes if table_bytes else 0.0
    detail = "%s used by the app's query; %s (%.1fx)" % (name, size, ratio)
    if buffers_bytes and index_bytes > buffers_bytes:
        return check("Vector index on %s" % table, WARN, "%s; larger than shared_buffers %s: searches read from outside "
                     "the buffer cache (fix: an instance class with more memory; RDS sets shared_buffers to 25%% of it)"
                     % (detail, human_bytes(buffers_bytes)))
    return check("Vector index on %s" % table, PASS, detail)


def human_bytes(n):
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


# ---------------------------------------------------------------- pg_stat_statements

def pg_stat_statements_check(installed, available, rows=None, min_mean_ms=100.0, limit=3):
    """installed: the extension exists in this database; available: the server offers it
    (pg_available_extensions). rows: dicts with query, calls, mean_exec_time (ms),
    total_exec_time (ms), in any order."""
    name = "Slow statements"
    if not installed:
        if not available:
            return check(name, INFO, "pg_stat_statements: not available on this server")
        return check(name, WARN, "pg_stat_statements is available but not installed: CREATE EXTENSION pg_stat_statements"
                                 " (and preload it: shared_preload_libraries)")
    slow = parse_pg_stat_statements(rows or [], min_mean_ms)
    if not slow:
        return check(name, PASS, "no statement averages over %s ms" % _num(min_mean_ms))
    return check(name, WARN, "; ".join("%s ms x%d: %s" % (_num(s["mean_ms"]), s["calls"], short(s["query"], 50))
                                       for s in slow[:limit]))


def parse_pg_stat_statements(rows, min_mean_ms=100.0):
    """Statements whose mean time is at least min_mean_ms, slowest total first."""
    out = []
    for r in rows:
        try:
            mean = float(r.get("mean_exec_time", r.get("mean_time")))  # PostgreSQL 13+ / before 13
            calls = int(r.get("calls") or 0)
            total = float(r.get("total_exec_time", r.get("total_time")) or mean * calls)
        except (TypeError, ValueError):
            continue
        if mean >= float(min_mean_ms) and calls > 0:
            out.append(dict(query=r.get("query") or "", calls=calls, mean_ms=round(mean, 1), total_ms=round(total, 1)))
    return sorted(out, key=lambda s: -s["total_ms"])


# ---------------------------------------------------------------- backups

_FIELDS = ((0, 59, None), (0, 23, None), (1, 31, None),
           (1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
           (0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))


def _expand(text, low, high, names):
    values = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        step = int(step) if step else 1
        if base == "*":
            first, last = low, high
        else:
            a, dash, b = base.partition("-")
            first = _value(a, low, names)
            last = _value(b, low, names) if dash else (high if step > 1 else first)
        values.update(range(first, last + 1, step))
    return values


def _value(token, low, names):
    if names and token.lower() in names:
        return names.index(token.lower()) + (1 if low == 1 else 0)
    return int(token)


def cron_next(expr, after, timezone="UTC"):
    """The first time ``expr`` (5-field cron in ``timezone``) fires strictly after ``after`` (an aware datetime),
    returned in UTC.  cron's rule for days: when both day of month and day of week are restricted, either matches.
    Looks up to five years ahead (a 29 February schedule fires within four)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("expected 5 cron fields, got %r" % expr)
    minute, hour, dom, month, dow = [_expand(f, *spec) for f, spec in zip(fields, _FIELDS)]
    dow = set(d % 7 for d in dow)
    dom_any, dow_any = fields[2] == "*", fields[4] == "*"
    zone = _zone(timezone)
    local = after.astimezone(zone)
    start = local.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    day = start.date()
    for _ in range(5 * 366 + 1):
        dom_ok, dow_ok = day.day in dom, (day.isoweekday() % 7) in dow
        day_ok = (dom_ok and dow_ok) if (dom_any or dow_any) else (dom_ok or dow_ok)
        if day.month in month and day_ok:
            for h in sorted(hour):
                for m in sorted(minute):
                    # a wall-clock time skipped by a DST change fires at its UTC equivalent, as systemd does
                    at = datetime.datetime(day.year, day.month, day.day, h, m, tzinfo=zone)
                    if at >= start:
                        return at.astimezone(datetime.timezone.utc)
        day += datetime.timedelta(days=1)
    raise ValueError("cron %r does not fire within five years" % expr)


def _zone(name):
    if name in (None, "", "UTC", "Etc/UTC"):
        return datetime.timezone.utc
    from zoneinfo import ZoneInfo  # Python 3.9+; the controller's
    return ZoneInfo(name)


def stamp(when):
    """A UTC time as health prints it: 2026-12-03 16:00 UTC."""
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def dump_freshness_check(newest_at, schedule, now, since=None, grace_minutes=120, timezone="UTC"):
    """The newest logical dump, judged by when one was due.

    A run is due at each time the schedule fires after the newest dump (or, before the first dump, after ``since``:
    when dumps were set up, the dump bucket's creation).  It is late once ``grace_minutes`` (the time a dump may
    take) have passed beyond that.  Before the first run is due there is nothing to miss: INFO saying when it is
    due.  A due run that has not written its dump is a FAIL naming how late it is.  Without ``since`` and without
    a dump, the first due time is unknown: FAIL, as nothing proves dumps ever ran.
    """
    name = "Newest logical dump"
    grace = datetime.timedelta(minutes=grace_minutes)
    if newest_at is None and since is None:
        return check(name, FAIL, "no dump yet (schedule %s), and no time dumps were set up from: run "
                                 "playbooks/backup_now.yml" % schedule)
    anchor = newest_at if newest_at is not None else since
    due = cron_next(schedule, anchor, timezone)
    zone = "" if timezone in ("UTC", "Etc/UTC") else " %s" % timezone
    if newest_at is None:
        if now <= due + grace:
            return check(name, INFO, "no dump yet: the first run of schedule %s%s is due %s (in %s), late after %s more"
                         % (schedule, zone, stamp(due), duration(max(0, (due - now).total_seconds())), duration(grace.total_seconds())))
        return check(name, FAIL, "no dump yet: the first run of schedule %s%s was due %s, %s late (grace %s; dumps set "
                                 "up %s): check the dump runner, then run playbooks/backup_now.yml"
                     % (schedule, zone, stamp(due), duration((now - due).total_seconds()), duration(grace.total_seconds()),
                        stamp(since)))
    age = duration(max(0, (now - newest_at).total_seconds()))
    if now <= due + grace:
        return check(name, PASS, "%s old; the next run of schedule %s%s is due %s" % (age, schedule, zone, stamp(due)))
    return check(name, FAIL, "%s old: the run of schedule %s%s due %s is %s late (grace %s): check the dump runner, "
                             "then run playbooks/backup_now.yml"
                 % (age, schedule, zone, stamp(due), duration((now - due).total_seconds()), duration(grace.total_seconds())))


def restore_test_check(result, tested_at, now, since=None, every_days=7, grace_minutes=120):
    """The last restore test, judged by its cadence (the policy's ``restore_test_every_days``): one is due
    ``every_days`` after the last (before the first, after ``since``), late after ``grace_minutes`` more.  A failed
    test is a FAIL whatever its age."""
    name = "Last restore test"
    grace = datetime.timedelta(minutes=grace_minutes)
    every = datetime.timedelta(days=every_days)
    if result is None:
        if since is None:
            return check(name, WARN, "none recorded (cadence every %d d): run playbooks/restore_test.yml" % every_days)
        due = since + every
        if now <= due + grace:
            return check(name, INFO, "none yet: the first is due %s (every %d d, from %s)" % (stamp(due), every_days, stamp(since)))
        return check(name, FAIL, "none recorded: the first was due %s (every %d d), %s late: run playbooks/restore_test.yml"
                     % (stamp(due), every_days, duration((now - due).total_seconds())))
    detail = "%s %s ago (%s)" % (result.get("result"), duration(max(0, (now - tested_at).total_seconds())),
                                 result.get("key", "?").rsplit("/", 1)[-1])
    if result.get("problems"):
        detail += ": " + short("; ".join(result["problems"]), 80)
    if result.get("result") != "PASS":
        return check(name, FAIL, detail)
    due = tested_at + every
    if now <= due + grace:
        return check(name, PASS, detail + "; the next is due %s (every %d d)" % (stamp(due), every_days))
    return check(name, FAIL, detail + ": the next was due %s (every %d d), %s late: run playbooks/restore_test.yml"
                 % (stamp(due), every_days, duration((now - due).total_seconds())))


def rotation_due(stored_at, every_days):
    """When the stored URL is due for rotation (aware datetime), or None without a cadence."""
    if not every_days or stored_at is None:
        return None
    return stored_at + datetime.timedelta(days=every_days)


def url_age_check(stored_at, now, every_days=0, grace_hours=48, name="App's DATABASE_URL age"):
    """The stored URL's age against the rotation cadence (rotate_app_password_every_days): PASS until the rotation is
    due, FAIL once it is overdue by more than ``grace_hours`` (the runner's tick and a retry), naming how late.
    Without a cadence the age is INFO."""
    if stored_at is None:
        return check(name, FAIL, "nothing stored: run site.yml")
    age = duration(max(0, (now - stored_at).total_seconds()))
    due = rotation_due(stored_at, every_days)
    if due is None:
        return check(name, INFO, "written %s ago (%s); no rotation cadence is set (rotate_app_password_every_days)"
                     % (age, stamp(stored_at)))
    grace = datetime.timedelta(hours=grace_hours)
    if now <= due + grace:
        return check(name, PASS, "written %s ago; the next rotation is due %s (every %d d)" % (age, stamp(due), every_days))
    return check(name, FAIL, "written %s ago: the rotation due %s (every %d d) is %s late (grace %s): check the rotation "
                             "runner, or run playbooks/rotate_app_password.yml"
                 % (age, stamp(due), every_days, duration((now - due).total_seconds()), duration(grace.total_seconds())))


def rpo_check(age_seconds, max_minutes=15):
    if age_seconds is None:
        return check("Point-in-time recovery (RPO)", FAIL, "no latest restorable time: automated backups are off")
    status = PASS if age_seconds <= max_minutes * 60 else FAIL
    return check("Point-in-time recovery (RPO)", status,
                 "latest restorable time %s ago (limit %d min)" % (duration(age_seconds), max_minutes))


def _num(value):
    value = float(value)
    return str(int(value)) if value == int(value) else "%.1f" % value


# ---------------------------------------------------------------- recall on the app's sampled queries

def sample_recall_check(r, threshold=0.9, target=0.95):
    """r: what vector_tune.sample_recall measured.  PASS when the 95% lower bound of recall on the newest sampled
    queries reaches ``threshold``; FAIL naming the setting to raise (and the value that reaches ``target`` on the same
    queries, when one up to the bound does); INFO when the sample holds too few queries to say."""
    name = "Recall on sampled queries (%s)" % r["name"]
    if r.get("recall") is None:
        return check(name, INFO, "%d sampled queries of %s (fewer than %d): not measured; the app records a sample of its "
                                 "queries (docs/vector-search.md)" % (r["queries"], r["name"], r["min_queries"]))
    detail = "recall@%d %.3f (95%% lower bound %.3f) at %s=%d on the %d newest sampled queries (searched %s to %s)" % (
        r["k"], r["recall"], r["lower"], r["guc"], r["value"], r["queries"], r["oldest_at"], r["newest_at"])
    if r.get("filtered"):
        detail += ", %d of them filtered: %.3f" % (r["filtered"]["queries"], r["filtered"]["recall"])
    if r["lower"] >= threshold:
        return check(name, PASS, detail)
    if r.get("better"):
        fix = "raise %s: %s=%d reaches %.3f (lower bound %.3f) on these queries; re-tune on the sample: ansible-playbook " \
              "site.yml -l <env> --tags pgvector_tuning" % (r["guc"], r["guc"], r["better"][0], r["better"][1]["recall"],
                                                            r["better"][1]["lower"])
    else:
        fix = "raise %s: no value up to the bound reaches %.2f on these queries; rebuild the index with larger m / " \
              "ef_construction, then re-tune" % (r["guc"], target)
    return check(name, FAIL, "%s, below %.2f: the app's queries no longer look like what the setting was tuned on; %s"
                 % (detail, threshold, fix))


# ---------------------------------------------------------------- read replicas

def replica_check(identifier, row, lag_fail_seconds=600):
    """One read replica, from what it answered (``row``: standby, pause, gap_bytes, since_replay, conflicts) or
    the error it gave (``row["error"]``). Lag is the time since the last replayed transaction only while the
    replica is behind the primary's WAL (``gap_bytes`` > 0): an idle primary sends nothing to replay, and that is
    no lag (RDS's ReplicaLag metric counts it, up to 5 minutes; this check does not). FAIL when it does not answer,
    is not a standby, its replay is paused, or it lags past ``lag_fail_seconds`` (the ReplicaLag alarm's
    threshold); WARN when queries were cancelled by recovery conflicts (pg_stat_database_conflicts)."""
    name = "Read replica %s" % identifier
    if row.get("error"):
        return check(name, FAIL, "does not answer: %s" % short(row["error"], 80))
    if not row.get("standby"):
        return check(name, FAIL, "is not in recovery: promoted, or not a replica of this instance")
    gap = max(int(row.get("gap_bytes") or 0), 0)
    lag = float(row.get("since_replay") or 0) if gap > 0 else 0.0
    conflicts = int(row.get("conflicts") or 0)
    detail = "lag %s (%s of WAL behind), %d recovery-conflict cancellation(s)" % (duration(lag), human_bytes(gap),
                                                                                conflicts)
    if row.get("pause") and row["pause"] != "not paused":
        return check(name, FAIL, "replay %s (pg_wal_replay_resume() resumes it); %s" % (row["pause"], detail))
    if lag > float(lag_fail_seconds):
        return check(name, FAIL, "%s: past the %s alarm threshold, searches there are stale" % (
            detail, duration(lag_fail_seconds)))
    return check(name, WARN if conflicts else PASS, detail)
