# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Versioned SQL migrations for PostgreSQL: the engine behind ``ndis.dbops.pg_migrate``.

Plain Python + psycopg2, importable without Ansible::

    from ansible_collections.ndis.dbops.plugins.module_utils.migrate import run, MigrationError
    result = run({"dsn": "host=... dbname=..."}, "/path/to/migrations")

Design (see ``run``):

* ``NNNN_name.sql`` files; the version is the leading digits, compared numerically.
* One connection, autocommit.  A session-level advisory lock (key derived from the
  history table's qualified name) serialises migrators.  It is taken with a polling
  ``pg_try_advisory_lock`` loop, so a waiting migrator never sits inside a transaction
  (which would make a ``CREATE INDEX CONCURRENTLY`` of the lock holder wait for it).
* All validation (checksum drift, missing files, out-of-order) happens before any change.
* Each file is sent as ONE simple query ``BEGIN; <file>; INSERT history row; COMMIT;``:
  one round trip per file, and the history row is atomic with the file's changes.
  Files whose header contains ``-- migrate:no-transaction`` run statement by statement in
  autocommit (needed for ``CREATE INDEX CONCURRENTLY``); their history row follows.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import threading
import time

try:
    import psycopg2
    import psycopg2.errors  # noqa: F401  (registers error classes)
    import psycopg2.extensions
    from psycopg2 import sql as pgsql

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None
    pgsql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc


from ansible_collections.ndis.dbops.plugins.module_utils import migrate_lint
from ansible_collections.ndis.dbops.plugins.module_utils.migrate_files import (  # noqa: F401  (re-exported)
    Migration,
    MigrationError,
    _parse_version,
    scan,
    split_statements,
)

APPLICATION_NAME = "pg_migrate"
LOCK_TIMEOUT_SQLSTATE = "55P03"
DEFAULT_PG_LOCK_TIMEOUT = 5  # seconds the app may queue behind one migration statement
DEFAULT_LOCK_RETRY_BUDGET = 300  # seconds of lock-timeout retries before a file gives up


# ------------------------------------------------------------------- connection


def lock_key(history_schema="public", history_table="schema_migrations"):
    """Signed 64-bit advisory lock key derived from the history table's qualified name."""
    digest = hashlib.sha256(("pg_migrate:%s.%s" % (history_schema, history_table)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _describe_target(conn_params):
    params = dict(conn_params)
    dsn = params.pop("dsn", None)
    if dsn:
        try:
            parsed = psycopg2.extensions.parse_dsn(dsn)
            parsed.update(params)
            params = parsed
        except Exception:
            pass
    host = params.get("host") or params.get("hostaddr") or "local socket"
    port = params.get("port") or 5432
    db = params.get("dbname") or params.get("database") or params.get("user") or "?"
    return "%s:%s/%s" % (host, port, db)


def _connect(conn_params, application_name=APPLICATION_NAME):
    params = dict((k, v) for k, v in conn_params.items() if v is not None and v != "")
    if "database" in params and "dbname" not in params:
        params["dbname"] = params.pop("database")
    params.setdefault("connect_timeout", 10)
    params["application_name"] = application_name
    where = _describe_target(params)
    started = time.monotonic()
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as e:
        msg = (str(e).strip() or e.__class__.__name__).replace("\n", " ")
        raise MigrationError(
            "cannot connect to PostgreSQL at %s as %s after %.1fs (connect_timeout=%ss): %s. "
            "Check login_host/login_port/login_db/login_user/login_password and that the server is reachable."
            % (where, params.get("user", "?"), time.monotonic() - started, params["connect_timeout"], msg),
            target=where,
        )
    conn.autocommit = True
    return conn, where


def _acquire_lock(conn, key, timeout, table_label):
    """Poll pg_try_advisory_lock (no transaction stays open while waiting)."""
    deadline = time.monotonic() + max(float(timeout), 0.0)
    delay = 0.02
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if cur.fetchone()[0]:
                return
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 1.5, 0.25)
        u = key & 0xFFFFFFFFFFFFFFFF
        cur.execute(
            """
            SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''),
                   coalesce(host(a.client_addr), 'local'), a.backend_start, a.state, a.state_change,
                   left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 120)
              FROM pg_locks l
              JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1
            """,
            (u >> 32, u & 0xFFFFFFFF),
        )
        rows = cur.fetchall()
    if rows:
        holders = "; ".join(
            "pid %s (application_name=%r, user %s from %s, connected since %s, state %s since %s, last query: %s)"
            % (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])
            for r in rows
        )
    else:
        holders = "unknown holder (it released the lock just now or is not visible to this user)"
    raise MigrationError(
        "timed out after %ss waiting for the migration lock on %s (advisory lock key %d), held by %s. "
        "Another migration is probably running: wait for it and re-run, or, if that session is stale, "
        "end it with SELECT pg_terminate_backend(<pid>)." % (timeout, table_label, key, holders),
        lock_key=key,
        holders=[{"pid": r[0], "application_name": r[1], "since": str(r[4])} for r in rows],
    )


def _release(conn, key, locked):
    if conn is None:
        return
    try:
        if locked and not conn.closed:
            with conn.cursor() as cur:
                if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    cur.execute("ROLLBACK")
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    except Exception:
        pass  # closing the session releases the lock anyway
    finally:
        try:
            conn.close()
        except Exception:
            pass


# ------------------------------------------------------------------------- run


def _history_lines(rows):
    return "".join("%s %s\n" % (v, name) for v, name in sorted(rows, key=lambda r: int(r[0])))


def _error_line(text, pos_chars, base):
    """1-based line in ``text`` for a 1-based server error position; ``base`` = chars before the text."""
    if not pos_chars:
        return None
    try:
        off = int(pos_chars) - 1 - base
    except (TypeError, ValueError):
        return None
    if off < 0 or off > len(text):
        return None
    return text.count("\n", 0, off) + 1


def _pg_error_text(e):
    diag = getattr(e, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or (str(e).strip().split("\n")[0])
    parts = [primary]
    if diag is not None:
        if diag.message_detail:
            parts.append("DETAIL: " + diag.message_detail)
        if diag.message_hint:
            parts.append("HINT: " + diag.message_hint)
        if diag.context:
            parts.append("CONTEXT: " + diag.context.strip().split("\n")[0])
    if getattr(e, "pgcode", None):
        parts.append("SQLSTATE " + e.pgcode)
    return "; ".join(parts)


def run(
    conn_params,
    path,
    session_role=None,
    history_schema="public",
    history_table="schema_migrations",
    advisory_lock_timeout=60,
    pg_lock_timeout=DEFAULT_PG_LOCK_TIMEOUT,
    pg_statement_timeout=0,
    lock_retry_budget=DEFAULT_LOCK_RETRY_BUDGET,
    lint=True,
    allow_out_of_order=False,
    missing="fail",
    baseline=None,
    repair=False,
    target=None,
    check_mode=False,
    log=None,
    role=None,
    lock_timeout=None,
):
    """Apply pending migrations from ``path``.

    ``conn_params``: psycopg2.connect keyword arguments (host, port, user, password,
    dbname, connect_timeout, ...) and/or ``dsn``.

    ``session_role`` (alias ``role``): SET ROLE right after connecting.
    ``advisory_lock_timeout``: seconds to wait for another run's advisory lock.
    ``pg_lock_timeout`` / ``pg_statement_timeout``: PostgreSQL's lock_timeout and
    statement_timeout (seconds, 0 = no limit) for every migration statement.  A file whose
    lock wait times out is rolled back and retried with backoff until ``lock_retry_budget``
    seconds have passed, naming the blocking session each time (``log``, a callable taking
    one line; the lines are also returned in ``lock_waits``).
    ``lint``: refuse, before any file runs, statements that lock or rewrite a table with rows
    (``migrate_lint``).

    Returns a dict: ``changed``, ``applied`` ([{version, name, execution_ms}] run now),
    ``pending`` (not yet applied after this run; in check mode: everything that is not
    applied yet, i.e. what would run plus what lies beyond ``target``), ``queries``
    (file names run / that would run), ``baselined``, ``repaired``, ``warnings``,
    ``current_version``, ``history_count``, ``lock_key``, ``lint``, ``lock_waits`` and
    ``diff`` {before, after}.  Raises MigrationError.
    """
    if lock_timeout is not None:
        raise MigrationError(
            "lock_timeout=%r is ambiguous and no longer accepted: set advisory_lock_timeout for the seconds to wait "
            "for another pg_migrate run, or pg_lock_timeout for PostgreSQL's lock_timeout on each migration statement"
            % (lock_timeout,)
        )
    if session_role and role and session_role != role:
        raise MigrationError("session_role=%r and its alias role=%r differ: set one of them" % (session_role, role))
    role = session_role or role
    if not HAS_PSYCOPG2:
        raise MigrationError("the Python library psycopg2 is required (pip install psycopg2-binary): %s" % PSYCOPG2_IMPORT_ERROR)
    if lint and not migrate_lint.HAS_PGLAST:
        raise MigrationError(
            "the Python library pglast is required for the lint (pip install pglast; see requirements.txt), "
            "or set lint=false: %s" % (migrate_lint.PGLAST_IMPORT_ERROR,)
        )
    if missing not in ("fail", "warn"):
        raise MigrationError("missing must be 'fail' or 'warn', got %r" % (missing,))
    for option, value in (("pg_lock_timeout", pg_lock_timeout), ("pg_statement_timeout", pg_statement_timeout),
                          ("lock_retry_budget", lock_retry_budget), ("advisory_lock_timeout", advisory_lock_timeout)):
        if value is None or float(value) < 0:
            raise MigrationError("%s=%r: give a number of seconds, 0 or more" % (option, value))
    target_v = _parse_version(target, "target")
    baseline_v = _parse_version(baseline, "baseline")

    migrations = scan(path)
    on_disk = dict((m.version, m) for m in migrations)
    key = lock_key(history_schema, history_table)
    table_label = "%s.%s" % (history_schema, history_table)
    warnings = []
    result = {
        "changed": False,
        "applied": [],
        "pending": [],
        "queries": [],
        "baselined": [],
        "repaired": [],
        "warnings": warnings,
        "history_table": table_label,
        "lock_key": key,
        "lint": {},
        "lock_waits": [],
    }

    conn, where = _connect(conn_params)
    locked = False
    try:
        cur = conn.cursor()
        schema_ident = pgsql.Identifier(history_schema)
        table_ident = pgsql.Identifier(history_schema, history_table)
        if role:
            try:
                cur.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(role)))
            except psycopg2.Error as e:
                raise MigrationError(
                    "SET ROLE %s failed on %s: %s. The login user must be a member of role %s (GRANT %s TO <login_user>)."
                    % (role, where, _pg_error_text(e), role, role),
                    sqlstate=e.pgcode,
                )

        _acquire_lock(conn, key, advisory_lock_timeout, table_label)
        locked = True

        # ---- read history (one query if the table exists)
        cur.execute("SELECT to_regclass(%s)", (table_ident.as_string(conn),))
        exists = cur.fetchone()[0] is not None
        has_lint_column = False
        history = {}
        if exists:
            try:
                cur.execute(pgsql.SQL("SELECT version::text, name, checksum FROM {}").format(table_ident))
            except psycopg2.Error as e:
                raise MigrationError(
                    "cannot read migration history %s on %s: %s. Is it a pg_migrate history table "
                    "(columns version, name, checksum, applied_at, execution_ms, applied_by)?"
                    % (table_label, where, _pg_error_text(e)),
                    sqlstate=e.pgcode,
                )
            for v, name, checksum in cur.fetchall():
                history[int(v)] = (name, checksum)
            cur.execute(
                "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'lint_overrides' "
                "AND NOT attisdropped)",
                (table_ident.as_string(conn),),
            )
            has_lint_column = cur.fetchone()[0]
        before_rows = [(str(v), h[0]) for v, h in history.items()]

        # ---- validation, all before any change
        problems = []
        drift = []
        for v in sorted(history):
            name, checksum = history[v]
            m = on_disk.get(v)
            if m is None:
                text = "applied version %d (%s) is recorded in %s but its file is missing from %s" % (v, name, table_label, path)
                if missing == "warn":
                    warnings.append(text)
                else:
                    problems.append(text + " (restore the file, or set missing=warn to accept it)")
            elif m.checksum != checksum:
                drift.append((m, checksum))
        if drift and not repair:
            for m, old in drift:
                problems.append(
                    "applied file %s changed on disk: recorded checksum %s, file now %s "
                    "(revert the edit and add a new migration instead; after review, repair=true re-records the checksum)"
                    % (m.file, old, m.checksum)
                )

        unapplied = [m for m in migrations if m.version not in history]
        to_baseline = []
        if baseline_v is not None and not history:
            to_baseline = [m for m in unapplied if m.version <= baseline_v]
            unapplied = [m for m in unapplied if m.version > baseline_v]
        to_run = [m for m in unapplied if target_v is None or m.version <= target_v]
        max_applied = max(history) if history else None
        if max_applied is not None and not allow_out_of_order:
            late = [m for m in to_run if m.version < max_applied]
            if late:
                problems.append(
                    "out-of-order migration(s) %s have versions lower than the highest applied version %d; "
                    "renumber them above %d, or set allow_out_of_order=true to apply them anyway"
                    % (", ".join(m.file for m in late), max_applied, max_applied)
                )
        if problems:
            raise MigrationError(
                "migration check failed on %s, nothing was changed: %s" % (where, "; ".join(problems)),
                problems=problems,
                result=result,
            )

        overrides = {}
        if lint and to_run:
            overrides = _lint(cur, to_run, where, result)

        repairs = [(m, old) for m, old in drift] if repair else []
        result["queries"] = [m.file for m in to_run]
        result["baselined"] = [m.brief() for m in to_baseline]
        result["repaired"] = [
            {"version": str(m.version), "name": m.file, "old_checksum": old, "new_checksum": m.checksum} for m, old in repairs
        ]
        result["changed"] = bool(to_run or to_baseline or repairs)
        after_rows = list(before_rows) + [(str(m.version), m.file) for m in to_baseline + to_run]
        result["diff"] = {"before": _history_lines(before_rows), "after": _history_lines(after_rows)}

        if check_mode:
            result["pending"] = [m.brief() for m in unapplied]
            result["history_count"] = len(history)
            result["current_version"] = str(max_applied) if max_applied is not None else None
            return result

        # ---- real run from here on
        if result["changed"] and not exists:
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (history_schema,))
            if cur.fetchone() is None:
                cur.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema_ident))
            cur.execute(
                pgsql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " version text PRIMARY KEY,"
                    " name text NOT NULL,"
                    " checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now(),"
                    " execution_ms integer,"
                    " applied_by text NOT NULL DEFAULT current_user,"
                    " lint_overrides jsonb)"
                ).format(table_ident)
            )

        if overrides and exists and not has_lint_column:
            cur.execute(pgsql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS lint_overrides jsonb").format(table_ident))
        # An older history table without lint_overrides keeps its shape until an override needs it.
        lint_col = bool(overrides or has_lint_column or not exists)
        insert_tx = pgsql.SQL(
            "INSERT INTO {} (version, name, checksum, execution_ms%s) VALUES (%%s, %%s, %%s, "
            "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer%s)"
            % ((", lint_overrides", ", %s") if lint_col else ("", ""))
        ).format(table_ident).as_string(conn)
        insert_plain = pgsql.SQL(
            "INSERT INTO {} (version, name, checksum, execution_ms%s) VALUES (%%s, %%s, %%s, %%s%s)"
            % ((", lint_overrides", ", %s") if lint_col else ("", ""))
        ).format(table_ident).as_string(conn)


        if repairs or to_baseline:
            parts = [b"BEGIN"]
            update = pgsql.SQL("UPDATE {} SET checksum = %s, name = %s WHERE version = %s").format(table_ident).as_string(conn)
            for m, _old in repairs:
                parts.append(cur.mogrify(update, (m.checksum, m.file, str(m.version))))
            for m in to_baseline:
                parts.append(cur.mogrify(insert_plain, _history_values(insert_plain, m, None, overrides)))
            parts.append(b"COMMIT")
            try:
                cur.execute(b";\n".join(parts))
            except psycopg2.Error as e:
                raise MigrationError(
                    "recording baseline/repair in %s failed: %s; nothing was recorded" % (table_label, _pg_error_text(e)),
                    result=result,
                    sqlstate=e.pgcode,
                )

        done = result["applied"]
        remaining = list(unapplied)
        if to_run:
            # Each file's commit need not wait for its own WAL flush: _flush_wal makes the last
            # commit synchronous, and flushing it flushes every earlier one (WAL is sequential),
            # before the run reports anything. A server crash in between can lose only a tail of
            # files together with their history rows, which the next run applies again.
            cur.execute("SET synchronous_commit TO off")
        ex = _Executor(conn, cur, conn_params, table_ident, insert_tx, insert_plain, overrides, done, result,
                       pg_lock_timeout, pg_statement_timeout, lock_retry_budget, log)
        try:
            if to_run:
                ex.start()
            todo = list(to_run)
            while todo:
                try:
                    for batch in _batches(todo):
                        t0 = time.monotonic()
                        ex.retry.begin_attempt()
                        if batch[0].no_transaction:
                            ex.run_no_tx(batch[0])
                        elif len(batch) == 1:
                            ex.run_tx(batch[0])
                        else:
                            ex.run_tx_batch(batch)
                        ms = int((time.monotonic() - t0) * 1000)
                        for m in batch:
                            done.append({"version": str(m.version), "name": m.file, "execution_ms": ms // len(batch)})
                    todo = []
                except MigrationError as e:
                    applied_now = set(d["version"] for d in done)
                    todo = [m for m in todo if str(m.version) not in applied_now]
                    if e.details.get("sqlstate") != LOCK_TIMEOUT_SQLSTATE or not todo:
                        raise
                    ex.retry.wait(todo[0], e)
        except MigrationError:
            _flush_wal(conn, cur)
            applied_now = set(d["version"] for d in done)
            remaining = [m for m in remaining if str(m.version) not in applied_now]
            result["pending"] = [m.brief() for m in remaining]
            result["history_count"] = len(history) + len(to_baseline) + len(done)
            after_rows = list(before_rows) + [(str(m.version), m.file) for m in to_baseline] + [(d["version"], d["name"]) for d in done]
            result["diff"]["after"] = _history_lines(after_rows)
            raise
        finally:
            ex.stop()
        if to_run:
            _flush_wal(conn, cur)
        applied_now = set(d["version"] for d in done)
        result["pending"] = [m.brief() for m in remaining if str(m.version) not in applied_now]
        result["history_count"] = len(history) + len(to_baseline) + len(done)
        all_v = list(history) + [m.version for m in to_baseline + to_run]
        result["current_version"] = str(max(all_v)) if all_v else None
        return result
    finally:
        _release(conn, key, locked)


# ------------------------------------------------------------------------ lint


def _lint(cur, to_run, where, result):
    """Lint the files about to run; refuse before any of them runs.  Returns {file: overrides}."""
    try:
        report = migrate_lint.lint(to_run, cur)
    except migrate_lint.LintError as e:
        raise MigrationError("lint: %s; nothing was changed" % e, result=result)
    result["warnings"].extend(report["unused"] + report["skipped"])
    result["lint"] = {
        "files": len(to_run),
        "statements": report["statements"],
        "ms": report["ms"],
        "allowed": [f.as_dict() for fs in report["allowed"].values() for f in fs],
    }
    if report["refused"]:
        findings = report["refused"]
        result["lint"]["refused"] = [f.as_dict() for f in findings]
        raise MigrationError(
            "lint refused %d statement(s) on %s, nothing was changed: %s. After review, let a statement through with a "
            "comment line '-- migrate:allow RULE reason' just above it (the history records it), or set lint=false"
            % (len(findings), where, "; ".join(f.describe() for f in findings)),
            result=result,
            lint=result["lint"],
            file=findings[0].file,
            line=findings[0].line,
            rule=findings[0].rule,
        )
    return dict(
        (file, [{"rule": f.rule, "line": f.line, "reason": f.allowed_reason} for f in fs])
        for file, fs in report["allowed"].items()
    )


def _history_values(insert, m, ms, overrides):
    """Parameters of a history insert: with lint_overrides when the statement has the column."""
    values = (str(m.version), m.file, m.checksum) + (() if ms is False else (ms,))
    if "lint_overrides" in insert:
        o = overrides.get(m.file)
        values += (json.dumps(o) if o else None,)
    return values


# ------------------------------------------------------------- lock-safe execution


BLOCKERS_SQL = """
SELECT a.pid, coalesce(a.usename::text, ''), coalesce(a.application_name, ''), coalesce(a.state, ''),
       extract(epoch FROM now() - a.xact_start)::float8, a.query_start,
       left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 100)
  FROM pg_stat_activity a
 WHERE a.pid = ANY (pg_blocking_pids(%s))
 ORDER BY a.xact_start NULLS LAST
"""


def _blocker_text(rows):
    if not rows:
        return "an unknown session (it let go before it could be read)"
    return "; ".join(
        "pid %s (user %s, application_name %r, state %s, transaction open %s, query started %s, query: %s)"
        % (r[0], r[1], r[2], r[3], ("%.0fs" % r[4]) if r[4] is not None else "none", r[5], r[6])
        for r in rows
    )


class BlockerWatch(object):
    """A second connection that reads, a few times a second, who blocks the migrating session.

    A lock wait ends (timed out and rolled back) before the runner can ask who held it, so
    the watch keeps the last sessions it saw blocking; the runner reads them on a timeout.
    """

    def __init__(self, conn_params, pid, interval):
        self.conn_params = conn_params
        self.pid = pid
        self.interval = interval
        self.seen = []
        self.seen_at = None
        self._stop = threading.Event()
        self._thread = None
        self._conn = None

    def start(self):
        try:
            params = dict(conn_params_for_watch(self.conn_params))
            self._conn, _where = _connect(params, application_name=APPLICATION_NAME + " lock watch")
        except MigrationError:
            self._conn = None  # the runner still retries; it only cannot name the blocker
            return
        self._thread = threading.Thread(target=self._loop, name="pg_migrate-lock-watch", daemon=True)
        self._thread.start()

    def _loop(self):
        try:
            with self._conn.cursor() as cur:
                while not self._stop.wait(self.interval):
                    cur.execute(BLOCKERS_SQL, (self.pid,))
                    rows = cur.fetchall()
                    if rows:
                        self.seen, self.seen_at = rows, time.monotonic()
        except Exception:
            pass  # a lost watch connection only costs the blocker's name

    def blockers_since(self, t0):
        return self.seen if self.seen_at is not None and self.seen_at >= t0 else []

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass


def conn_params_for_watch(conn_params):
    return dict((k, v) for k, v in conn_params.items() if k != "application_name")


class LockRetry(object):
    """Backoff between attempts of a file whose lock wait timed out, within a total budget."""

    FIRST_DELAY = 0.5
    MAX_DELAY = 30.0

    def __init__(self, pg_lock_timeout, budget, watch, log, result):
        self.pg_lock_timeout = pg_lock_timeout
        self.budget = float(budget)
        self.watch = watch
        self.log = log
        self.result = result
        self.started = None
        self.file = None
        self.attempts = 0
        self.attempt_started = time.monotonic()

    def begin_attempt(self):
        self.attempt_started = time.monotonic()

    def wait(self, m, error, stmt_no=None):
        """Sleep before the next attempt of ``m``, or raise when the budget is spent."""
        now = time.monotonic()
        if self.started is None or self.file != m.file:
            self.started, self.file, self.attempts = self.attempt_started, m.file, 0
        self.attempts += 1
        blockers = self.watch.blockers_since(self.attempt_started) if self.watch else []
        spent = now - self.started
        delay = min(self.FIRST_DELAY * (2 ** (self.attempts - 1)), self.MAX_DELAY)
        what = "%s%s" % (m.file, " statement %s" % stmt_no if stmt_no else "")
        holder = _blocker_text(blockers)
        if spent + delay > self.budget:
            line = ("%s: gave up after %d attempt(s) over %.1fs (lock_retry_budget=%gs); each timed out after "
                    "pg_lock_timeout=%gs waiting for a lock held by %s" % (what, self.attempts, spent, self.budget,
                                                                         self.pg_lock_timeout, holder))
            self._emit(line)
            state = ("Its transaction was rolled back and it was NOT recorded" if stmt_no is None else
                     "It runs without a transaction: statements before statement %s were committed; it was NOT recorded"
                     % stmt_no)
            earlier = ", ".join(d["name"] for d in self.result["applied"]) or "none"
            self.result["changed"] = bool(self.result["applied"]) or bool(self.result.get("baselined")) or bool(
                self.result.get("repaired"))
            raise MigrationError(
                "migration %s could not take its locks: %s. %s. Files applied earlier in this run stay "
                "applied: %s. End the blocking session (SELECT pg_terminate_backend(<pid>)) or wait for it, then "
                "re-run; or raise lock_retry_budget." % (m.file, line, state, earlier),
                result=self.result,
                file=m.file,
                path=m.path,
                sqlstate=LOCK_TIMEOUT_SQLSTATE,
                blockers=[{"pid": r[0], "user": r[1], "application_name": r[2], "state": r[3],
                           "transaction_seconds": r[4], "query_start": str(r[5]), "query": r[6]} for r in blockers],
            )
        self._emit("%s: lock wait timed out after pg_lock_timeout=%gs (attempt %d, %.1fs of lock_retry_budget=%gs "
                   "spent), blocked by %s; rolled back, retrying in %.1fs"
                   % (what, self.pg_lock_timeout, self.attempts, spent, self.budget, holder, delay))
        time.sleep(delay)
        self.attempt_started = time.monotonic()

    def _emit(self, line):
        self.result["lock_waits"].append(line)
        self.result["warnings"].append(line)
        if self.log is not None:
            self.log(line)


def _ms(seconds):
    return "%dms" % int(round(float(seconds) * 1000))


class _Executor(object):
    """Runs the pending files: transactional ones batched, each still its own transaction with
    ``SET LOCAL lock_timeout``/``statement_timeout``; no-transaction ones statement by statement."""

    def __init__(self, conn, cur, conn_params, table_ident, insert_tx, insert_plain, overrides, done, result,
                 pg_lock_timeout, pg_statement_timeout, lock_retry_budget, log):
        self.conn = conn
        self.cur = cur
        self.conn_params = conn_params
        self.table_ident = table_ident
        self.insert_tx = insert_tx
        self.insert_plain = insert_plain
        self.overrides = overrides
        self.done = done
        self.result = result
        self.pg_lock_timeout = pg_lock_timeout
        self.settings = ("lock_timeout = '%s', statement_timeout = '%s'" % (_ms(pg_lock_timeout), _ms(pg_statement_timeout)))
        self.prefix = ("BEGIN;\nSET LOCAL lock_timeout = '%s';\nSET LOCAL statement_timeout = '%s';\n"
                       % (_ms(pg_lock_timeout), _ms(pg_statement_timeout))).encode("ascii")
        self.session_set = ("SET lock_timeout = '%s'; SET statement_timeout = '%s'"
                            % (_ms(pg_lock_timeout), _ms(pg_statement_timeout)))
        self.watch = None
        self.retry = LockRetry(pg_lock_timeout, lock_retry_budget, None, log, result)

    def start(self):
        if float(self.pg_lock_timeout) > 0:
            self.cur.execute("SELECT pg_backend_pid()")
            pid = self.cur.fetchone()[0]
            self.watch = BlockerWatch(self.conn_params, pid, min(0.1, float(self.pg_lock_timeout) / 4))
            self.watch.start()
            self.retry.watch = self.watch
        self.retry.begin_attempt()

    def stop(self):
        if self.watch is not None:
            self.watch.stop()

    def _file_query(self, m):
        return (self.prefix + m.data + b"\n;\n"
                + self.cur.mogrify(self.insert_tx, _history_values(self.insert_tx, m, False, self.overrides))
                + b";\nCOMMIT")

    def run_tx(self, m):
        cur, conn = self.cur, self.conn
        try:
            cur.execute(self._file_query(m))
        except psycopg2.Error as e:
            diag = getattr(e, "diag", None)
            line = _error_line(m.text, diag.statement_position if diag is not None else None, len(self.prefix))
            if not conn.closed:
                try:
                    cur.execute("ROLLBACK")
                except psycopg2.Error:
                    pass
                if line is None and e.pgcode != LOCK_TIMEOUT_SQLSTATE and not isinstance(
                        e, (psycopg2.OperationalError, psycopg2.InterfaceError)):
                    line = _locate_failure(cur, m.text)
            _fail_apply(m, e, line, self.done, self.result, no_tx=False)

    def run_tx_batch(self, batch):
        """Run several transactional files in one query; on failure, find which one failed.

        The files before the failing one committed (each had its own COMMIT); the failing one
        rolled back; the rest never ran. Which is which is read back from the history table,
        over a new connection when the server dropped this one.
        """
        cur, conn, table_ident = self.cur, self.conn, self.table_ident
        parts, starts, offset = [], [], 0
        head_len = len(self.prefix.decode("ascii"))
        for m in batch:
            piece = self._file_query(m) + b";\n"
            starts.append(offset + head_len)
            offset += len(piece.decode("utf-8", "replace"))
            parts.append(piece)
        try:
            cur.execute(b"".join(parts))
            return
        except psycopg2.Error as e:
            error = e
        alive = not conn.closed
        if alive:
            try:
                cur.execute("ROLLBACK")
            except psycopg2.Error:
                alive = False
        versions = [str(m.version) for m in batch]
        recorded = set()
        select = pgsql.SQL("SELECT version FROM {} WHERE version = ANY(%s)").format(table_ident)
        try:
            if alive:
                cur.execute(select, (versions,))
                recorded = {r[0] for r in cur.fetchall()}
            else:
                probe, _where = _connect(self.conn_params)
                try:
                    with probe.cursor() as pc:
                        pc.execute(select, (versions,))
                        recorded = {r[0] for r in pc.fetchall()}
                finally:
                    probe.close()
        except (psycopg2.Error, MigrationError):
            recorded = set()
        diag = getattr(error, "diag", None)
        pos = diag.statement_position if diag is not None else None
        by_pos = None
        if pos:
            by_pos = max((i for i, start in enumerate(starts) if int(pos) - 1 >= start), default=None)
        failed_at = next((i for i, v in enumerate(versions) if v not in recorded), 0)
        if by_pos is not None and by_pos > failed_at and not recorded:
            # A syntax error stops the whole query before anything runs: the files before the
            # one at fault are fine, so apply them as they would have been one at a time.
            failed_at = by_pos
            if alive and failed_at:
                saved, self.done = self.done, []
                try:
                    self.run_tx_batch(batch[:failed_at]) if failed_at > 1 else self.run_tx(batch[0])
                finally:
                    self.done = saved
        for m in batch[:failed_at]:
            self.done.append({"version": str(m.version), "name": m.file, "execution_ms": None})
        failing = batch[failed_at]
        line = _error_line(failing.text, pos, starts[failed_at]) if pos else None
        if line is None and alive and error.pgcode != LOCK_TIMEOUT_SQLSTATE and not isinstance(
                error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            line = _locate_failure(cur, failing.text)
        _fail_apply(failing, error, line, self.done, self.result, no_tx=False)

    def run_no_tx(self, m):
        cur, text = self.cur, m.text
        t0 = time.monotonic()
        cur.execute(self.session_set)
        try:
            for n, (start, stmt) in enumerate(split_statements(text), 1):
                while True:
                    try:
                        cur.execute(stmt.encode("utf-8"))
                        break
                    except psycopg2.Error as e:
                        if e.pgcode == LOCK_TIMEOUT_SQLSTATE:
                            self._drop_invalid_index_left_by(stmt)
                            self.retry.wait(m, e, stmt_no=n)  # raises once the budget is spent
                            continue
                        diag = getattr(e, "diag", None)
                        pos = diag.statement_position if diag is not None else None
                        lead = len(stmt) - len(stmt.lstrip())
                        line = _error_line(text, pos, -start) if pos else text.count("\n", 0, start + lead) + 1
                        _fail_apply(m, e, line, self.done, self.result, no_tx=True, stmt_no=n)
        finally:
            if not self.conn.closed:
                try:
                    cur.execute("RESET lock_timeout; RESET statement_timeout")
                except psycopg2.Error:
                    pass
        ms = int((time.monotonic() - t0) * 1000)
        try:
            cur.execute(self.insert_plain, _history_values(self.insert_plain, m, ms, self.overrides))
        except psycopg2.Error as e:
            _fail_apply(m, e, None, self.done, self.result, no_tx=True, stmt_no="(history insert)")

    def _drop_invalid_index_left_by(self, stmt):
        """A CREATE INDEX CONCURRENTLY that timed out waiting for older transactions leaves an
        INVALID index behind; drop it so that the retry (often IF NOT EXISTS) builds it anew."""
        if not migrate_lint.HAS_PGLAST:
            return
        try:
            parsed = migrate_lint.pg_parser.parse_sql(stmt)
        except Exception:
            return
        if len(parsed) != 1 or not isinstance(parsed[0].stmt, migrate_lint.pg_ast.IndexStmt):
            return
        node = parsed[0].stmt
        if not (node.concurrent and node.idxname):
            return
        schema = node.relation.schemaname
        name = pgsql.Identifier(schema, node.idxname) if schema else pgsql.Identifier(node.idxname)
        self.cur.execute(
            "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name.as_string(self.conn),)
        )
        row = self.cur.fetchone()
        if row and row[0]:
            self.cur.execute(pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))


def _flush_wal(conn, cur):
    """Commit a transaction synchronously: the server flushes the WAL up to its commit record,
    so every file committed before it in this session is durable when this returns."""
    if conn.closed:
        return
    try:
        cur.execute("SET synchronous_commit TO on; BEGIN; SELECT pg_current_xact_id(); COMMIT")
    except psycopg2.Error:
        pass  # the connection is gone: the server's WAL writer flushes within wal_writer_delay


def _fail_apply(m, e, line, done, result, no_tx, stmt_no=None):
    result["changed"] = bool(done) or bool(result.get("baselined")) or bool(result.get("repaired"))
    where = "line %s" % line if line else "line unknown"
    earlier = ", ".join(d["name"] for d in done) or "none"
    if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)) and (
        getattr(e, "pgcode", None) in (None, "57P01", "57P02", "57P03") or e.__class__.__name__ in ("AdminShutdown",)
    ):
        what = "the connection to the server was lost"
    else:
        what = "the server reported an error"
    if no_tx:
        state = (
            "the file runs without a transaction (-- migrate:no-transaction), so statements before "
            "statement %s were committed; it was NOT recorded. Make the file idempotent (IF NOT EXISTS; drop an "
            "INVALID index left by a failed CREATE INDEX CONCURRENTLY), fix it and re-run" % (stmt_no or "?")
        )
    else:
        state = "its transaction was rolled back and it was NOT recorded; fix it and re-run"
        if getattr(e, "pgcode", None) == "25001":
            state += " (this statement cannot run in a transaction block: add a '-- migrate:no-transaction' header line)"
    raise MigrationError(
        "migration %s failed at %s: %s: %s. %s. Files applied earlier in this run stay applied: %s."
        % (m.file, where, what, _pg_error_text(e), state[0].upper() + state[1:], earlier),
        result=result,
        file=m.file,
        path=m.path,
        line=line,
        sqlstate=getattr(e, "pgcode", None),
    )


BATCH_FILES = 100
BATCH_BYTES = 1 << 20


def _batches(to_run):
    """Consecutive transactional files, up to BATCH_FILES / BATCH_BYTES, go in one round trip.

    Each file is still its own transaction (BEGIN; file; history row; COMMIT) inside the
    batch's query text, so the guarantees are the same as one file at a time; a
    no-transaction file is a batch of its own.
    """
    batch, size = [], 0
    for m in to_run:
        if m.no_transaction:
            if batch:
                yield batch
            yield [m]
            batch, size = [], 0
            continue
        if batch and (len(batch) >= BATCH_FILES or size + len(m.data) > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(m)
        size += len(m.data)
    if batch:
        yield batch


def _locate_failure(cur, text, max_chars=1_000_000):
    """Line of the statement that fails, for errors the server reports without a position.

    Replays the file statement by statement inside a transaction that is always rolled
    back, so nothing it does survives; runs only after a failure, on files up to max_chars.
    """
    if len(text) > max_chars:
        return None
    line = None
    try:
        cur.execute("BEGIN")
        for start, stmt in split_statements(text):
            try:
                cur.execute(stmt.encode("utf-8"))
            except psycopg2.Error as e:
                diag = getattr(e, "diag", None)
                pos = diag.statement_position if diag is not None else None
                lead = len(stmt) - len(stmt.lstrip())
                line = _error_line(text, pos, -start) if pos else text.count("\n", 0, start + lead) + 1
                break
    except psycopg2.Error:
        line = None
    finally:
        try:
            cur.execute("ROLLBACK")
        except psycopg2.Error:
            pass
    return line
