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
import os
import re
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


APPLICATION_NAME = "pg_migrate"
FILE_RE = re.compile(r"^(\d+)(?:_.*)?\.sql$")
NO_TX_RE = re.compile(r"^--\s*migrate:no-transaction\b", re.IGNORECASE)
TX_PREFIX = b"BEGIN;\n"


class MigrationError(Exception):
    """A migration run failed.  ``str(e)`` says what, where and what to do next.

    ``details`` holds machine-readable facts (file, line, sqlstate, ...);
    ``result`` is the partial run result (files applied before the failure stay applied).
    """

    def __init__(self, msg, result=None, **details):
        super(MigrationError, self).__init__(msg)
        self.msg = msg
        self.details = details
        self.result = result


# --------------------------------------------------------------------------- files


class Migration(object):
    __slots__ = ("version", "file", "path", "data", "checksum", "no_transaction", "_text")

    def __init__(self, version, file, path, data):
        self.version = version
        self.file = file
        self.path = path
        self.data = data
        self.checksum = hashlib.sha256(data).hexdigest()
        self.no_transaction = _has_no_tx_header(data)
        self._text = None

    @property
    def text(self):
        if self._text is None:
            self._text = self.data.decode("utf-8", errors="replace")
        return self._text

    def brief(self):
        return {"version": str(self.version), "name": self.file}


def _has_no_tx_header(data):
    """True when the leading comment block of the file contains ``-- migrate:no-transaction``."""
    for raw in data.split(b"\n", 64)[:64]:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        if not line.startswith("--"):
            return False
        if NO_TX_RE.match(line):
            return True
    return False


def _parse_version(value, option):
    if value is None or value == "":
        return None
    text = str(value).strip()
    m = re.match(r"^(\d+)(?:_.*)?(?:\.sql)?$", text)
    if not m:
        raise MigrationError(
            "%s=%r is not a migration version: give the leading digits of a file name, e.g. 0042 or 20260101120000"
            % (option, value)
        )
    return int(m.group(1))


def scan(path):
    """Read the migration files of ``path``; returns them sorted by version.

    Raises MigrationError for a missing directory, a ``.sql`` file without a version
    prefix, or two files with the same (numeric) version.
    """
    if not path or not os.path.isdir(path):
        raise MigrationError(
            "migrations directory %r does not exist or is not a directory; set path to the directory "
            "holding the NNNN_name.sql files (on the managed host)" % (path,)
        )
    by_version = {}
    bad = []
    for entry in sorted(os.listdir(path)):
        if entry.startswith(".") or not entry.endswith(".sql"):
            continue
        full = os.path.join(path, entry)
        if not os.path.isfile(full):
            continue
        m = FILE_RE.match(entry)
        if not m:
            bad.append(entry)
            continue
        version = int(m.group(1))
        with open(full, "rb") as fh:
            mig = Migration(version, entry, full, fh.read())
        if version in by_version:
            raise MigrationError(
                "duplicate migration version %d: %s and %s in %s; give each file a unique version prefix"
                % (version, by_version[version].file, entry, path),
                files=[by_version[version].file, entry],
            )
        by_version[version] = mig
    if bad:
        raise MigrationError(
            "file(s) without a version prefix in %s: %s; rename them to NNNN_name.sql "
            "(or move them out of the migrations directory)" % (path, ", ".join(bad)),
            files=bad,
        )
    return [by_version[v] for v in sorted(by_version)]


# ----------------------------------------------------------------- SQL splitting

_DOLLAR_TAG_RE = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_IDENT_CHAR_RE = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]")


def split_statements(text):
    """Split SQL text on top-level ``;``.  Returns ``[(start_offset, statement_text)]``.

    Understands ``--`` and nested ``/* */`` comments, '...' / E'...' strings,
    "identifiers" and $tag$ dollar quotes.  Chunks holding only whitespace/comments
    are dropped.  Not handled: SQL-standard ``BEGIN ATOMIC ... END`` bodies.
    Used only for ``-- migrate:no-transaction`` files.
    """
    out = []
    n = len(text)
    i = 0
    start = 0
    content = False
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and text.startswith("/*", i):
            depth = 1
            i += 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth += 1
                    i += 2
                elif text.startswith("*/", i):
                    depth -= 1
                    i += 2
                else:
                    i += 1
            continue
        if c == "'":
            content = True
            backslash = i > 0 and text[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR_RE.match(text[i - 2]))
            i += 1
            while i < n:
                ch = text[i]
                if backslash and ch == "\\":
                    i += 2
                    continue
                if ch == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
            continue
        if c == '"':
            content = True
            j = text.find('"', i + 1)
            while j >= 0 and j + 1 < n and text[j + 1] == '"':
                j = text.find('"', j + 2)
            i = n if j < 0 else j + 1
            continue
        if c == "$" and not (i > 0 and _IDENT_CHAR_RE.match(text[i - 1])):
            m = _DOLLAR_TAG_RE.match(text, i)
            if m:
                content = True
                tag = m.group(0)
                j = text.find(tag, m.end())
                i = n if j < 0 else j + len(tag)
                continue
        if c == ";":
            if content:
                out.append((start, text[start:i]))
            i += 1
            start = i
            content = False
            continue
        if not c.isspace():
            content = True
        i += 1
    if content:
        out.append((start, text[start:]))
    return out


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


def _connect(conn_params):
    params = dict((k, v) for k, v in conn_params.items() if v is not None and v != "")
    if "database" in params and "dbname" not in params:
        params["dbname"] = params.pop("database")
    params.setdefault("connect_timeout", 10)
    params["application_name"] = APPLICATION_NAME
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
    role=None,
    history_schema="public",
    history_table="schema_migrations",
    lock_timeout=60,
    allow_out_of_order=False,
    missing="fail",
    baseline=None,
    repair=False,
    target=None,
    check_mode=False,
):
    """Apply pending migrations from ``path``.

    ``conn_params``: psycopg2.connect keyword arguments (host, port, user, password,
    dbname, connect_timeout, ...) and/or ``dsn``.

    Returns a dict: ``changed``, ``applied`` ([{version, name, execution_ms}] run now),
    ``pending`` (not yet applied after this run; in check mode: everything that is not
    applied yet, i.e. what would run plus what lies beyond ``target``), ``queries``
    (file names run / that would run), ``baselined``, ``repaired``, ``warnings``,
    ``current_version``, ``history_count``, ``lock_key`` and ``diff`` {before, after}.
    Raises MigrationError.
    """
    if not HAS_PSYCOPG2:
        raise MigrationError("the Python library psycopg2 is required (pip install psycopg2-binary): %s" % PSYCOPG2_IMPORT_ERROR)
    if missing not in ("fail", "warn"):
        raise MigrationError("missing must be 'fail' or 'warn', got %r" % (missing,))
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

        _acquire_lock(conn, key, lock_timeout, table_label)
        locked = True

        # ---- read history (one query if the table exists)
        cur.execute("SELECT to_regclass(%s)", (table_ident.as_string(conn),))
        exists = cur.fetchone()[0] is not None
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
                    " applied_by text NOT NULL DEFAULT current_user)"
                ).format(table_ident)
            )

        insert_tx = pgsql.SQL(
            "INSERT INTO {} (version, name, checksum, execution_ms) VALUES (%s, %s, %s, "
            "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer)"
        ).format(table_ident).as_string(conn)
        insert_plain = pgsql.SQL(
            "INSERT INTO {} (version, name, checksum, execution_ms) VALUES (%s, %s, %s, %s)"
        ).format(table_ident).as_string(conn)

        if repairs or to_baseline:
            parts = [b"BEGIN"]
            update = pgsql.SQL("UPDATE {} SET checksum = %s, name = %s WHERE version = %s").format(table_ident).as_string(conn)
            for m, _old in repairs:
                parts.append(cur.mogrify(update, (m.checksum, m.file, str(m.version))))
            for m in to_baseline:
                parts.append(cur.mogrify(insert_plain, (str(m.version), m.file, m.checksum, None)))
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
        try:
            for batch in _batches(to_run):
                t0 = time.monotonic()
                if batch[0].no_transaction:
                    _run_no_tx(conn, cur, batch[0], insert_plain, done, result)
                elif len(batch) == 1:
                    _run_tx(conn, cur, batch[0], insert_tx, done, result)
                else:
                    _run_tx_batch(conn, cur, batch, insert_tx, done, result, conn_params, table_ident)
                ms = int((time.monotonic() - t0) * 1000)
                for m in batch:
                    done.append({"version": str(m.version), "name": m.file, "execution_ms": ms // len(batch)})
                    remaining.remove(m)
        except MigrationError:
            _flush_wal(conn, cur)
            result["pending"] = [m.brief() for m in remaining]
            result["history_count"] = len(history) + len(to_baseline) + len(done)
            after_rows = list(before_rows) + [(str(m.version), m.file) for m in to_baseline] + [(d["version"], d["name"]) for d in done]
            result["diff"]["after"] = _history_lines(after_rows)
            raise
        if to_run:
            _flush_wal(conn, cur)
        result["pending"] = [m.brief() for m in remaining]
        result["history_count"] = len(history) + len(to_baseline) + len(done)
        all_v = list(history) + [m.version for m in to_baseline + to_run]
        result["current_version"] = str(max(all_v)) if all_v else None
        return result
    finally:
        _release(conn, key, locked)


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


def _run_tx_batch(conn, cur, batch, insert_tx, done, result, conn_params, table_ident):
    """Run several transactional files in one query; on failure, find which one failed.

    The files before the failing one committed (each had its own COMMIT); the failing one
    rolled back; the rest never ran. Which is which is read back from the history table,
    over a new connection when the server dropped this one.
    """
    parts, starts, offset = [], [], 0
    for m in batch:
        head = TX_PREFIX
        piece = head + m.data + b"\n;\n" + cur.mogrify(insert_tx, (str(m.version), m.file, m.checksum)) + b";\nCOMMIT;\n"
        starts.append(offset + len(head.decode("utf-8")))
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
    try:
        if alive:
            cur.execute(pgsql.SQL("SELECT version FROM {} WHERE version = ANY(%s)").format(table_ident), (versions,))
            recorded = {r[0] for r in cur.fetchall()}
        else:
            probe, _where = _connect(conn_params)
            try:
                with probe.cursor() as pc:
                    pc.execute(pgsql.SQL("SELECT version FROM {} WHERE version = ANY(%s)").format(table_ident), (versions,))
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
        if alive:
            _run_tx_batch(conn, cur, batch[:failed_at], insert_tx, [], result, conn_params, table_ident)
    for m in batch[:failed_at]:
        done.append({"version": str(m.version), "name": m.file, "execution_ms": None})
    failing = batch[failed_at]
    line = _error_line(failing.text, pos, starts[failed_at]) if pos else None
    if line is None and alive and not isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        line = _locate_failure(cur, failing.text)
    _fail_apply(failing, error, line, done, result, no_tx=False)


def _run_tx(conn, cur, m, insert_tx, done, result):
    query = TX_PREFIX + m.data + b"\n;\n" + cur.mogrify(insert_tx, (str(m.version), m.file, m.checksum)) + b";\nCOMMIT"
    try:
        cur.execute(query)
    except psycopg2.Error as e:
        diag = getattr(e, "diag", None)
        line = _error_line(m.text, diag.statement_position if diag is not None else None, len(TX_PREFIX))
        if not conn.closed:
            try:
                cur.execute("ROLLBACK")
            except psycopg2.Error:
                pass
            if line is None and not isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)):
                line = _locate_failure(cur, m.text)
        _fail_apply(m, e, line, done, result, no_tx=False)


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


def _run_no_tx(conn, cur, m, insert_plain, done, result):
    text = m.text
    t0 = time.monotonic()
    for n, (start, stmt) in enumerate(split_statements(text), 1):
        try:
            cur.execute(stmt.encode("utf-8"))
        except psycopg2.Error as e:
            diag = getattr(e, "diag", None)
            pos = diag.statement_position if diag is not None else None
            line = _error_line(text, pos, -start) if pos else text.count("\n", 0, start + len(stmt) - len(stmt.lstrip())) + 1
            _fail_apply(m, e, line, done, result, no_tx=True, stmt_no=n)
    ms = int((time.monotonic() - t0) * 1000)
    try:
        cur.execute(insert_plain, (str(m.version), m.file, m.checksum, ms))
    except psycopg2.Error as e:
        _fail_apply(m, e, None, done, result, no_tx=True, stmt_no="(history insert)")
