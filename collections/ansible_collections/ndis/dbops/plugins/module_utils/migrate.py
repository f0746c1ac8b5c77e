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

Three files, one job each: ``migrate_files`` (the files and the statement splitter), this one
(options, lock, history, validation, lint: the plan) and ``migrate_apply`` (running the plan).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import time

from ansible_collections.ndis.dbops.plugins.module_utils import migrate_lint
from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils.migrate_apply import (
    APPLICATION_NAME,  # noqa: F401  (re-exported)
    LOCK_TIMEOUT_SQLSTATE,
    Executor,
    _batches,
    _flush_wal,
    _history_values,
    connect,
)
from ansible_collections.ndis.dbops.plugins.module_utils.migrate_files import (  # noqa: F401  (re-exported)
    Migration,
    MigrationError,
    _parse_version,
    scan,
    split_statements,
)
from ansible_collections.ndis.dbops.plugins.module_utils.postgres import error_text, pgsql, psycopg2

DEFAULT_PG_LOCK_TIMEOUT = 5  # seconds the app may queue behind one migration statement
DEFAULT_LOCK_RETRY_BUDGET = 300  # seconds of lock-timeout retries before a file gives up


# ------------------------------------------------------------------- connection


def lock_key(history_schema="public", history_table="schema_migrations"):
    """Signed 64-bit advisory lock key derived from the history table's qualified name."""
    digest = hashlib.sha256(("pg_migrate:%s.%s" % (history_schema, history_table)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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


def _set_role(cur, role, where):
    try:
        cur.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(role)))
    except psycopg2.Error as e:
        raise MigrationError(
            "SET ROLE %s failed on %s: %s. The login user must be a member of role %s (GRANT %s TO <login_user>)."
            % (role, where, error_text(e), role, role),
            sqlstate=e.pgcode,
        )


# ------------------------------------------------------------------------- run


def _history_lines(rows):
    return "".join("%s %s\n" % (v, name) for v, name in sorted(rows, key=lambda r: int(r[0])))



def _check_options(session_role, role, lock_timeout, lint, missing, seconds):
    """Refuse bad options before connecting; returns the role to SET ROLE to (or None)."""
    if lock_timeout is not None:
        raise MigrationError(
            "lock_timeout=%r is ambiguous and no longer accepted: set advisory_lock_timeout for the seconds to wait "
            "for another pg_migrate run, or pg_lock_timeout for PostgreSQL's lock_timeout on each migration statement"
            % (lock_timeout,)
        )
    if session_role and role and session_role != role:
        raise MigrationError("session_role=%r and its alias role=%r differ: set one of them" % (session_role, role))
    pg.require_psycopg2(MigrationError)
    if lint and not migrate_lint.HAS_PGLAST:
        raise MigrationError(
            "the Python library pglast is required for the lint (pip install pglast; see requirements.txt), "
            "or set lint=false: %s" % (migrate_lint.PGLAST_IMPORT_ERROR,)
        )
    if missing not in ("fail", "warn"):
        raise MigrationError("missing must be 'fail' or 'warn', got %r" % (missing,))
    for option, value in seconds:
        if value is None or float(value) < 0:
            raise MigrationError("%s=%r: give a number of seconds, 0 or more" % (option, value))
    return session_role or role


class History(object):
    """The history table as the run found it: {version: (name, checksum)}, whether it exists, its shape."""

    def __init__(self, schema, table):
        self.schema = schema
        self.ident = pgsql.Identifier(schema, table)
        self.label = "%s.%s" % (schema, table)
        self.exists = False
        self.has_lint_column = False
        self.rows = {}

    def read(self, conn, cur, where):
        cur.execute("SELECT to_regclass(%s)", (self.ident.as_string(conn),))
        self.exists = cur.fetchone()[0] is not None
        if not self.exists:
            return self
        try:
            cur.execute(pgsql.SQL("SELECT version::text, name, checksum FROM {}").format(self.ident))
        except psycopg2.Error as e:
            raise MigrationError(
                "cannot read migration history %s on %s: %s. Is it a pg_migrate history table "
                "(columns version, name, checksum, applied_at, execution_ms, applied_by)?"
                % (self.label, where, error_text(e)),
                sqlstate=e.pgcode,
            )
        for v, name, checksum in cur.fetchall():
            self.rows[int(v)] = (name, checksum)
        cur.execute(
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'lint_overrides' "
            "AND NOT attisdropped)",
            (self.ident.as_string(conn),),
        )
        self.has_lint_column = cur.fetchone()[0]
        return self

    def lines(self, extra=()):
        return _history_lines([(str(v), h[0]) for v, h in self.rows.items()] + list(extra))


class Plan(object):
    """What the run does: the files to run, to baseline, to repair, and what stays unapplied."""

    def __init__(self, migrations, history, path, missing, repair, baseline_v, target_v, allow_out_of_order):
        on_disk = dict((m.version, m) for m in migrations)
        rows = history.rows
        self.warnings, self.problems, drift = [], [], []
        for v in sorted(rows):
            name, checksum = rows[v]
            m = on_disk.get(v)
            if m is None:
                text = "applied version %d (%s) is recorded in %s but its file is missing from %s" % (
                    v, name, history.label, path)
                if missing == "warn":
                    self.warnings.append(text)
                else:
                    self.problems.append(text + " (restore the file, or set missing=warn to accept it)")
            elif m.checksum != checksum:
                drift.append((m, checksum))
        if drift and not repair:
            for m, old in drift:
                self.problems.append(
                    "applied file %s changed on disk: recorded checksum %s, file now %s "
                    "(revert the edit and add a new migration instead; after review, repair=true re-records the checksum)"
                    % (m.file, old, m.checksum)
                )
        self.unapplied = [m for m in migrations if m.version not in rows]
        self.to_baseline = []
        if baseline_v is not None and not rows:
            self.to_baseline = [m for m in self.unapplied if m.version <= baseline_v]
            self.unapplied = [m for m in self.unapplied if m.version > baseline_v]
        self.to_run = [m for m in self.unapplied if target_v is None or m.version <= target_v]
        self.max_applied = max(rows) if rows else None
        if self.max_applied is not None and not allow_out_of_order:
            late = [m for m in self.to_run if m.version < self.max_applied]
            if late:
                self.problems.append(
                    "out-of-order migration(s) %s have versions lower than the highest applied version %d; "
                    "renumber them above %d, or set allow_out_of_order=true to apply them anyway"
                    % (", ".join(m.file for m in late), self.max_applied, self.max_applied)
                )
        self.repairs = list(drift) if repair else []

    def describe(self, history, result):
        """The result's account of the plan: queries, baselined, repaired, changed, diff."""
        result["queries"] = [m.file for m in self.to_run]
        result["baselined"] = [m.brief() for m in self.to_baseline]
        result["repaired"] = [
            {"version": str(m.version), "name": m.file, "old_checksum": old, "new_checksum": m.checksum}
            for m, old in self.repairs
        ]
        result["changed"] = bool(self.to_run or self.to_baseline or self.repairs)
        result["diff"] = {"before": history.lines(),
                          "after": history.lines((str(m.version), m.file) for m in self.to_baseline + self.to_run)}


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
    role = _check_options(session_role, role, lock_timeout, lint, missing, (
        ("pg_lock_timeout", pg_lock_timeout), ("pg_statement_timeout", pg_statement_timeout),
        ("lock_retry_budget", lock_retry_budget), ("advisory_lock_timeout", advisory_lock_timeout)))
    target_v = _parse_version(target, "target")
    baseline_v = _parse_version(baseline, "baseline")

    migrations = scan(path)
    key = lock_key(history_schema, history_table)
    history = History(history_schema, history_table)
    result = {
        "changed": False,
        "applied": [],
        "pending": [],
        "queries": [],
        "baselined": [],
        "repaired": [],
        "warnings": [],
        "history_table": history.label,
        "lock_key": key,
        "lint": {},
        "lock_waits": [],
    }

    conn = connect(conn_params)
    where = "%s/%s" % pg.describe_target(conn.get_dsn_parameters())[:2]
    locked = False
    try:
        cur = conn.cursor()
        if role:
            _set_role(cur, role, where)
        _acquire_lock(conn, key, advisory_lock_timeout, history.label)
        locked = True
        history.read(conn, cur, where)
        plan = Plan(migrations, history, path, missing, repair, baseline_v, target_v, allow_out_of_order)
        result["warnings"].extend(plan.warnings)
        if plan.problems:
            raise MigrationError(
                "migration check failed on %s, nothing was changed: %s" % (where, "; ".join(plan.problems)),
                problems=plan.problems,
                result=result,
            )
        overrides = _lint(cur, plan.to_run, where, result) if lint and plan.to_run else {}
        plan.describe(history, result)
        if check_mode:
            result["pending"] = [m.brief() for m in plan.unapplied]
            result["history_count"] = len(history.rows)
            result["current_version"] = str(plan.max_applied) if plan.max_applied is not None else None
            return result
        inserts = _prepare_history(conn, cur, history, overrides, result["changed"])
        _record_baseline_and_repairs(conn, cur, plan, history, inserts[1], overrides, result)
        _apply(conn, cur, conn_params, plan, history, inserts, overrides, result,
               (pg_lock_timeout, pg_statement_timeout, lock_retry_budget, log))
        return result
    finally:
        _release(conn, key, locked)


def _keep_history_private(cur, table_ident):
    """The history is the project's own: the owner's default privileges just handed it to the app's roles (and
    PUBLIC may hold some); take every privilege but the owner's back, so an app's login can neither read nor
    rewrite which migrations ran."""
    cur.execute(
        pgsql.SQL("SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"
                  " FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = {}::regclass AND a.grantee <> c.relowner")
        .format(pgsql.Literal(table_ident.as_string(cur))))
    for (grantee,) in cur.fetchall():
        cur.execute(pgsql.SQL("REVOKE ALL ON {} FROM {}").format(
            table_ident, pgsql.SQL("PUBLIC") if grantee == "PUBLIC" else pgsql.Identifier(grantee)))


def _prepare_history(conn, cur, history, overrides, changed):
    """Create the history table (or its lint_overrides column) when needed; returns the two history inserts:
    (one inside a file's transaction, timed by the server; one after a no-transaction file or a baseline)."""
    table_ident = history.ident
    if changed and not history.exists:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (history.schema,))
        if cur.fetchone() is None:
            cur.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(history.schema)))
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
        _keep_history_private(cur, table_ident)
    if overrides and history.exists and not history.has_lint_column:
        cur.execute(pgsql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS lint_overrides jsonb").format(table_ident))
    # An older history table without lint_overrides keeps its shape until an override needs it.
    lint_col = bool(overrides or history.has_lint_column or not history.exists)
    insert_tx = pgsql.SQL(
        "INSERT INTO {} (version, name, checksum, execution_ms%s) VALUES (%%s, %%s, %%s, "
        "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer%s)"
        % ((", lint_overrides", ", %s") if lint_col else ("", ""))
    ).format(table_ident).as_string(conn)
    insert_plain = pgsql.SQL(
        "INSERT INTO {} (version, name, checksum, execution_ms%s) VALUES (%%s, %%s, %%s, %%s%s)"
        % ((", lint_overrides", ", %s") if lint_col else ("", ""))
    ).format(table_ident).as_string(conn)
    return insert_tx, insert_plain


def _record_baseline_and_repairs(conn, cur, plan, history, insert_plain, overrides, result):
    if not (plan.repairs or plan.to_baseline):
        return
    parts = [b"BEGIN"]
    update = pgsql.SQL("UPDATE {} SET checksum = %s, name = %s WHERE version = %s").format(history.ident).as_string(conn)
    for m, _old in plan.repairs:
        parts.append(cur.mogrify(update, (m.checksum, m.file, str(m.version))))
    for m in plan.to_baseline:
        parts.append(cur.mogrify(insert_plain, _history_values(insert_plain, m, None, overrides)))
    parts.append(b"COMMIT")
    try:
        cur.execute(b";\n".join(parts))
    except psycopg2.Error as e:
        raise MigrationError(
            "recording baseline/repair in %s failed: %s; nothing was recorded" % (history.label, error_text(e)),
            result=result,
            sqlstate=e.pgcode,
        )


def _apply(conn, cur, conn_params, plan, history, inserts, overrides, result, limits):
    """Run the plan's files; on failure, the result says what was applied before the error is raised."""
    done = result["applied"]
    to_run = plan.to_run
    if to_run:
        # Each file's commit need not wait for its own WAL flush: _flush_wal makes the last
        # commit synchronous, and flushing it flushes every earlier one (WAL is sequential),
        # before the run reports anything. A server crash in between can lose only a tail of
        # files together with their history rows, which the next run applies again.
        cur.execute("SET synchronous_commit TO off")
    ex = Executor(conn, cur, conn_params, history.ident, inserts[0], inserts[1], overrides, done, result, *limits)
    try:
        if to_run:
            ex.start()
        _run_batches(ex, to_run, done)
    except MigrationError:
        _flush_wal(conn, cur)
        _account(plan, history, done, result)
        raise
    finally:
        ex.stop()
    if to_run:
        _flush_wal(conn, cur)
    _account(plan, history, done, result)
    all_v = list(history.rows) + [m.version for m in plan.to_baseline + to_run]
    result["current_version"] = str(max(all_v)) if all_v else None


def _run_batches(ex, to_run, done):
    """Run the files batch by batch; a whole batch that timed out on a lock is retried from its first unapplied file."""
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


def _account(plan, history, done, result):
    """pending, history_count and the diff's after side from what was applied."""
    applied_now = set(d["version"] for d in done)
    result["pending"] = [m.brief() for m in plan.unapplied if str(m.version) not in applied_now]
    result["history_count"] = len(history.rows) + len(plan.to_baseline) + len(done)
    result["diff"]["after"] = history.lines(
        [(str(m.version), m.file) for m in plan.to_baseline] + [(d["version"], d["name"]) for d in done])


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

