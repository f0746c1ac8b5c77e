# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Applying pending migration files for ``ndis.dbops.pg_migrate``: the runner's second half.

``migrate.run`` plans (history, validation, lint); this module runs the plan over the locked
connection and says, on a failure, which file and line failed and what state it left:

* transactional files are batched (``_batches``), each still ``BEGIN; SET LOCAL lock_timeout /
  statement_timeout; file; history row; COMMIT``; a failed batch is read back from the history
  table to find the failing file (``Executor.run_tx_batch``);
* ``-- migrate:no-transaction`` files run statement by statement, their history row after;
* a lock wait that times out (SQLSTATE 55P03) rolls back and is retried with backoff within a
  budget (``LockRetry``), naming the blocking session a second connection saw (``BlockerWatch``);
* errors without a server position are located by a rolled-back replay (``_locate_failure``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading
import time

from ansible_collections.ndis.dbops.plugins.module_utils import migrate_lint
from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils.migrate_files import (
    MigrationError,
    split_statements,
    statement_line,
)
from ansible_collections.ndis.dbops.plugins.module_utils.postgres import error_text, pgsql, psycopg2

APPLICATION_NAME = "pg_migrate"
LOCK_TIMEOUT_SQLSTATE = "55P03"


def connect(conn_params, application_name=APPLICATION_NAME):
    """The runner's autocommit connection, named ``application_name`` (a caller's name is replaced)."""
    params = dict(conn_params, application_name=application_name)
    return pg.connect(params, error=MigrationError)


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


def _statement_error_line(text, start, stmt, e):
    """Line of ``text`` where statement ``stmt`` (at offset ``start``) failed: the server's position, else its first line."""
    diag = getattr(e, "diag", None)
    pos = diag.statement_position if diag is not None else None
    return _error_line(text, pos, -start) if pos else statement_line(text, start, stmt)


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
            self._conn = connect(params, application_name=APPLICATION_NAME + " lock watch")
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


class Executor(object):
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
                probe = connect(self.conn_params)
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
                        line = _statement_error_line(text, start, stmt, e)
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
        % (m.file, where, what, error_text(e), state[0].upper() + state[1:], earlier),
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
                line = _statement_error_line(text, start, stmt, e)
                break
    except psycopg2.Error:
        line = None
    finally:
        try:
            cur.execute("ROLLBACK")
        except psycopg2.Error:
            pass
    return line

