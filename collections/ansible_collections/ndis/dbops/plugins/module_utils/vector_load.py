# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""The first load of a corpus into a table whose vector indexes the project declares, at the speed of the floor:
the engine behind ``ndis.dbops.pgvector_load``.  Its neighbours: ``vector_index.py`` (declarations, the build and
its sizing), ``vector_tune.py`` (tuning and the recall check).

Every row COPYed into a table with an HNSW index pays a graph insert: 100,000 x 1536 took about 14.5 minutes on 2
cores, against about 2 minutes 10 s for COPY into the bare table and one build afterwards (pgvector's README:
"Add any indexes *after* loading the initial data"; pg_restore loads in the same order).  So, on one table:

1. read the declarations of its vector indexes (``indexes``, the role's ``pgvector_indexes``) and the catalog;
   refuse when the table holds more than ``max_live_rows`` rows and a valid declared index would be dropped,
   unless ``allow_live`` (meanwhile the app's searches are exact scans), and offer ``in_place``;
2. ``DROP INDEX CONCURRENTLY`` each declared index (the declaration is the record of what to rebuild: whatever
   stops the load, the next load or ``site.yml``'s index phase builds what is missing, and rebuilds an INVALID one);
3. COPY the file in batches of ``batch_rows`` rows, each batch in its own transaction, one progress line per batch
   (rows, rows per second, share of the file, elapsed).  A kill leaves the rows of the committed batches.  A batch
   goes straight into the table while the load started on an empty table; otherwise (a re-run, or a conflict) it
   goes through a temporary staging table and ``INSERT ... ON CONFLICT DO NOTHING``: rows whose key is already
   there are skipped, so re-loading the same file neither duplicates rows nor fails on a key.  The table must
   have a unique key made of loaded columns (for ``embeddings``: ``doc_id, chunk_idx``), else the load is refused;
4. build the missing declared indexes once with ``vector_index.ensure_indexes`` (memory sized to the build,
   parallel workers, the version floor, progress lines from pg_stat_progress_create_index), ``ANALYZE``, tune
   (``vector_tune.tune``) and verify (``vector_tune.recall_check``).

Formats: ``binary`` (PostgreSQL's binary COPY format: ``COPY t (cols) TO ... WITH (FORMAT binary)``, or the writer
in tests/ and bench/; the columns are given, as the format does not carry them) and ``csv`` (a header line naming
the columns, as ``COPY ... WITH (FORMAT csv, HEADER)`` writes it; vectors in pgvector's text form, quoted:
``"[0.1,0.2,...]"``).  Columns not in the file take their defaults (``embeddings.id``, ``created_at``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import csv
import io
import os
import struct
import time

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_tune as vt
from ansible_collections.ndis.dbops.plugins.module_utils.postgres import PostgresError, error_text, pgsql, psycopg2
from ansible_collections.ndis.dbops.plugins.module_utils.progress import ProgressFile

APPLICATION_NAME = "pgvector_load"
FORMATS = ("binary", "csv")
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
STAGE = "ndis_load_stage"


class VectorLoadError(PostgresError):
    """Something failed.  ``str(e)`` says what, where and what to do next; ``details`` is machine-readable."""


# ---------------------------------------------------------------- the file, in batches


def binary_header(f, src):
    """Read and check the binary COPY header; return its bytes (signature, flags, extension)."""
    head = f.read(19)
    if len(head) < 19 or head[:11] != SIGNATURE:
        raise VectorLoadError("%s is not in PostgreSQL's binary COPY format (no PGCOPY signature): give format csv, or "
                              "write it with COPY ... TO ... WITH (FORMAT binary)" % src)
    flags, ext_len = struct.unpack("!ii", head[11:])
    if flags & (1 << 16):
        raise VectorLoadError("%s carries OIDs (binary COPY flag bit 16): write it without WITH OIDS" % src)
    return head + f.read(ext_len)


def binary_batches(f, src, batch_rows):
    """Yield (binary COPY stream of up to ``batch_rows`` tuples, rows, bytes of the file read so far)."""
    head = binary_header(f, src)
    read = len(head)
    parts, rows, fields = [], 0, None
    while True:
        count = f.read(2)
        if len(count) < 2:
            raise VectorLoadError("%s ends without the binary COPY trailer after %d bytes: the file is truncated" % (src, read))
        n = struct.unpack("!h", count)[0]
        if n == -1:
            break
        if fields is None:
            fields = n
        elif n != fields:
            raise VectorLoadError("%s: a tuple at byte %d has %d fields, the first had %d" % (src, read, n, fields))
        tup = [count]
        for _ in range(n):
            lb = f.read(4)
            length = struct.unpack("!i", lb)[0]
            tup.append(lb)
            if length > 0:
                tup.append(f.read(length))
        data = b"".join(tup)
        read += len(data)
        parts.append(data)
        rows += 1
        if rows == batch_rows:
            yield head + b"".join(parts) + b"\xff\xff", rows, read
            parts, rows = [], 0
    if rows:
        yield head + b"".join(parts) + b"\xff\xff", rows, read + 2


def csv_header(f, src):
    try:
        header = next(csv.reader(f))
    except StopIteration:
        raise VectorLoadError("%s is empty: a csv load needs a header line naming the columns" % src)
    return [c.strip() for c in header]


def csv_batches(f, src, batch_rows):
    """Yield (csv text of up to ``batch_rows`` records, rows, approximate bytes read); the header is read already."""
    buf, rows, read = io.StringIO(), 0, 0
    writer = csv.writer(buf, lineterminator="\n")
    for record in csv.reader(f):
        if not record:
            continue
        writer.writerow(record)
        rows += 1
        if rows == batch_rows:
            text = buf.getvalue()
            read += len(text)
            yield text, rows, read
            buf, rows = io.StringIO(), 0
            writer = csv.writer(buf, lineterminator="\n")
    if rows:
        text = buf.getvalue()
        yield text, rows, read + len(text)


# ---------------------------------------------------------------- catalog


def table_columns(cur, schema, table):
    cur.execute("SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"
                " ORDER BY a.attnum", (schema, table))
    return [r[0] for r in cur.fetchall()]


def unique_keys(cur, schema, table):
    """The table's valid unique indexes without a predicate or expression: [(name, [columns])]."""
    cur.execute("SELECT i.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index x"
                " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
                " JOIN pg_namespace n ON n.oid = t.relnamespace"
                " CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
                " LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
                " WHERE n.nspname = %s AND t.relname = %s AND x.indisunique AND x.indisvalid AND x.indpred IS NULL"
                " GROUP BY i.relname HAVING bool_and(k.attnum > 0) ORDER BY 1", (schema, table))
    return [(r[0], list(r[1])) for r in cur.fetchall()]


def count_rows(cur, schema, table):
    """Exact below 200,000 rows (reltuples is an estimate, -1 before the first ANALYZE), the estimate above."""
    cur.execute("SELECT c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s", (schema, table))
    est = cur.fetchone()[0]
    if est is not None and est >= 200000:
        return int(est)
    cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(schema, table)))
    return int(cur.fetchone()[0])


# ---------------------------------------------------------------- the load


def _refusal(target, rows, max_live_rows, names):
    return ("%s holds %d rows (more than max_live_rows %d) and is served by %s. A deferred load drops %s until the "
            "build ends: meanwhile the app's searches are exact scans (correct, but each reads the whole table: at "
            "20,000 x 1536 rows about 110 ms against 1.4 ms with the index, docs/vector-search.md). Either load in place "
            "(in_place / pgvector_load_in_place: true: the index stays, every row pays an HNSW insert, several times "
            "slower), or accept the exact scans (allow_live / pgvector_load_allow_live: true)."
            % (target, rows, max_live_rows, ", ".join(names), "it" if len(names) == 1 else "them"))


def load(conn_params, src, table, indexes, fmt="binary", columns=None, schema="public", batch_rows=5000,
         max_live_rows=10000, allow_live=False, in_place=False, check_mode=False, build=None, tune=None, check=None,
         progress_file="", progress_interval=10, also=None):
    """Load ``src`` into ``schema.table`` deferring its declared vector indexes (see the module docstring).

    ``build``: keyword arguments of vector_index.ensure_indexes (min_version, maintenance_work_mem, ...);
    ``tune`` / ``check``: of vector_tune.tune / recall_check, or None to skip that step.
    Returns {changed, queries, mode, rows_before, rows_loaded, rows_skipped, batches, copy_seconds, rows_per_second,
    dropped, indexes, build_seconds, tuning, recall, seconds}.
    """
    if fmt not in FORMATS:
        raise VectorLoadError("format %r is not one of %s" % (fmt, ", ".join(FORMATS)))
    if int(batch_rows) < 1:
        raise VectorLoadError("batch_rows must be at least 1, got %r" % (batch_rows,))
    target = "%s.%s" % (schema, table)
    if not os.path.isfile(src):
        raise VectorLoadError("the file to load, %s, does not exist on this host (pgvector_load_file)" % src)
    t_start = time.monotonic()
    result = {"changed": False, "queries": [], "table": target, "src": src, "format": fmt,
              "mode": "in_place" if in_place else "deferred", "dropped": [], "rows_loaded": 0, "rows_skipped": 0,
              "batches": 0, "warnings": [], "problems": []}
    opener = (lambda: open(src, "rb")) if fmt == "binary" else (lambda: open(src, "r", newline=""))
    with opener() as f:
        if fmt == "binary":
            binary_header(f, src)
            if not columns:
                raise VectorLoadError("a binary COPY file does not name its columns: give columns (pgvector_load_columns), "
                                      "in the file's order")
        else:
            header = csv_header(f, src)
            if columns and list(columns) != header:
                raise VectorLoadError("%s's header names columns %s, columns says %s" % (src, ", ".join(header), ", ".join(columns)))
            columns = header
    columns = list(columns)
    result["columns"] = columns
    conn = vi.connect(conn_params, application_name=APPLICATION_NAME)
    try:
        cur = conn.cursor()
        have = table_columns(cur, schema, table)
        if not have:
            raise VectorLoadError("table %s does not exist: run site.yml first (the migrations create it)" % target)
        missing = [c for c in columns if c not in have]
        if missing:
            raise VectorLoadError("%s names column(s) %s, which table %s does not have (it has %s)"
                                  % (src, ", ".join(missing), target, ", ".join(have)))
        keys = [(n, k) for n, k in unique_keys(cur, schema, table) if set(k) <= set(columns)]
        if not keys:
            raise VectorLoadError(
                "table %s has no unique key made of the loaded columns (%s): a re-run after an interruption would load "
                "the committed batches twice. Load the key's columns too (for embeddings: doc_id, chunk_idx), or add a "
                "unique constraint" % (target, ", ".join(columns)))
        result["key"] = keys[0][1]
        info, _ = vi.check_extension(cur, (build or {}).get("min_version", "0.5.0"), False, True, "database %s"
                                     % conn.get_dsn_parameters().get("dbname"))
        result["warnings"].extend(info["assessment"]["warnings"])
        declared = []
        for decl in indexes:
            d = vi.normalize(decl)
            if d["schema"] == schema and d["table"] == table:
                vi.table_state(cur, d)  # resolves storage and the index name
                declared.append((decl, d, vi.read_index(cur, schema, d["name"])))
        names = set(d["name"] for _, d, _ in declared)
        for col in set(d["column"] for _, d, _ in declared):
            others = [n for n in vi.vector_indexes_on(cur, {"schema": schema, "table": table, "column": col}) if n not in names]
            if others:
                result["problems"].append("vector indexes on %s.%s not declared, kept in place (every row pays their insert): %s"
                                          % (target, col, ", ".join(others)))
        rows_before = count_rows(cur, schema, table)
        result["rows_before"] = rows_before
        serving = [d["name"] for _, d, idx in declared if idx is not None and idx["valid"]]
        if not in_place and serving and rows_before > max_live_rows and not allow_live:
            raise VectorLoadError(_refusal(target, rows_before, max_live_rows, serving), result=result, refused=True)
        drops = [] if in_place else [d for _, d, idx in declared if idx is not None]
        drop_sql = [pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(pgsql.Identifier(schema, d["name"])) for d in drops]
        copy_text = "COPY %s (%s) FROM %s WITH (FORMAT %s) in batches of %d rows%s" % (
            target, ", ".join(columns), src, fmt, int(batch_rows),
            "" if rows_before == 0 else ", through a staging table, skipping rows whose key exists")
        if check_mode:
            result["queries"] = [s.as_string(cur) for s in drop_sql] + [copy_text]
            for _, d, idx in declared:
                if in_place and idx is not None and idx["valid"]:
                    continue
                result["queries"].append(vi.create_sql(d, vi.desired_params(d, rows_before)).as_string(cur))
            result["queries"].append("ANALYZE %s" % target)
            result["changed"] = True
            result["dropped"] = [d["name"] for d in drops]
            return result

        progress = ProgressFile(progress_file, also)
        what = "load %s" % target
        for d, stmt in zip(drops, drop_sql):
            progress.line(what, "dropping index %s (rebuilt after the rows)" % d["name"])
            cur.execute(stmt)
            result["queries"].append(stmt.as_string(cur))
            result["dropped"].append(d["name"])
        result["changed"] = bool(drops)
        copied = _copy(conn, src, fmt, schema, table, columns, int(batch_rows), rows_before, progress, what, result)
        result["changed"] = result["changed"] or copied > 0
        result["queries"].append(copy_text)

        # The declared indexes missing now (dropped above, or by an interrupted earlier load) are built once.
        built = vi.ensure_indexes(conn_params, [decl for decl, _, _ in declared], check_mode=False,
                                  progress=ProgressFile(progress_file, also, fresh=False),
                                  progress_interval=progress_interval, **(build or {}))
        result["indexes"] = built["indexes"]
        result["warnings"].extend(w for w in built["warnings"] if w not in result["warnings"])
        result["problems"].extend(built["problems"])
        result["queries"].extend(built["queries"])
        result["build_seconds"] = round(sum(p.get("build_seconds", 0) for p in built["indexes"]), 3)
        result["changed"] = result["changed"] or built["changed"]
        progress.line(what, "ANALYZE")
        cur.execute(pgsql.SQL("ANALYZE {}").format(pgsql.Identifier(schema, table)))
        result["queries"].append("ANALYZE %s" % target)
        decls = [decl for decl, _, _ in declared]
        if tune is not None and decls:
            progress.line(what, "tuning the query-time defaults")
            tuned = vt.tune(conn_params, decls, **tune)
            result["tuning"] = {"changed": tuned["changed"], "settings": tuned["settings"],
                                "indexes": [i.get("detail", "") for i in tuned["indexes"]],
                                "recommendations": tuned["recommendations"]}
            result["queries"].extend(tuned["queries"])
            result["changed"] = result["changed"] or tuned["changed"]
        if check is not None and decls:
            progress.line(what, "checking recall")
            checked = vt.recall_check(conn_params, decls, **check)
            result["recall"] = {"ok": checked["ok"], "summary": checked["summary"],
                                "checks": [c.get("detail", "") for c in checked["checks"]]}
        result["seconds"] = round(time.monotonic() - t_start, 3)
        progress.line(what, "done: %d rows loaded, %d skipped, indexes %s" % (
            result["rows_loaded"], result["rows_skipped"], ", ".join(d["name"] for _, d, _ in declared) or "none declared"))
        if "recall" in result and not result["recall"]["ok"]:
            raise VectorLoadError("%s: the rows are loaded and the indexes built, but the recall check failed: %s"
                                  % (target, result["recall"]["summary"]), result=result)
        return result
    except VectorLoadError as e:
        if e.result is None:
            e.result = result
        raise
    except vi.VectorIndexError as e:
        raise VectorLoadError("loading %s: %s" % (target, e.msg), result=result)
    except psycopg2.Error as e:
        raise VectorLoadError("loading %s from %s failed: %s. The committed batches stay (%d rows); re-run the load: rows "
                              "whose key exists are skipped, and the declared indexes are built"
                              % (target, src, error_text(e), result["rows_loaded"]),
                              result=result, sqlstate=getattr(e, "pgcode", None))
    finally:
        conn.close()


def _copy(conn, src, fmt, schema, table, columns, batch_rows, rows_before, progress, what, result):
    """COPY the file in batches, one transaction each; returns the rows inserted."""
    cols = pgsql.SQL(", ").join(pgsql.Identifier(c) for c in columns)
    opts = "(FORMAT binary)" if fmt == "binary" else "(FORMAT csv)"
    direct = pgsql.SQL("COPY {} ({}) FROM STDIN WITH " + opts).format(pgsql.Identifier(schema, table), cols)
    staged = pgsql.SQL("COPY {} ({}) FROM STDIN WITH " + opts).format(pgsql.Identifier(STAGE), cols)
    insert = pgsql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
        pgsql.Identifier(schema, table), cols, cols, pgsql.Identifier(STAGE))
    size = float(os.path.getsize(src)) or 1.0
    cur = conn.cursor()
    cur.execute("SET client_connection_check_interval = '2s'")  # a killed load's backend goes at once, even waiting on a lock
    conn.autocommit = False
    stage_ready = False
    use_stage = rows_before > 0
    t0 = time.monotonic()
    opener = (lambda: open(src, "rb")) if fmt == "binary" else (lambda: open(src, "r", newline=""))
    try:
        with opener() as f:
            if fmt == "csv":
                csv_header(f, src)
            batches = binary_batches(f, src, batch_rows) if fmt == "binary" else csv_batches(f, src, batch_rows)
            for data, rows, read in batches:
                stream = io.BytesIO(data) if fmt == "binary" else io.StringIO(data)
                inserted = None
                if not use_stage:
                    try:
                        cur.copy_expert(direct, stream)
                        inserted = rows
                        conn.commit()
                    except psycopg2.errors.UniqueViolation:
                        conn.rollback()  # rows of this batch are there already (a re-load): from now on, staged
                        use_stage = True
                        stream.seek(0)
                if inserted is None:
                    if not stage_ready:
                        cur.execute(pgsql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                                    .format(pgsql.Identifier(STAGE), pgsql.Identifier(schema, table)))
                        stage_ready = True
                    cur.copy_expert(staged, stream)
                    cur.execute(insert)
                    inserted = cur.rowcount
                    conn.commit()
                result["batches"] += 1
                result["rows_loaded"] += inserted
                result["rows_skipped"] += rows - inserted
                elapsed = time.monotonic() - t0
                done = result["rows_loaded"] + result["rows_skipped"]
                progress.line(what, "batch %d committed, %d rows (%d loaded, %d skipped), %d rows/s, %d%% of the file" % (
                    result["batches"], done, result["rows_loaded"], result["rows_skipped"], done / max(elapsed, 1e-6),
                    min(100, int(round(100 * read / size)))))
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.autocommit = True
    result["copy_seconds"] = round(time.monotonic() - t0, 3)
    result["rows_per_second"] = round((result["rows_loaded"] + result["rows_skipped"]) / max(result["copy_seconds"], 1e-6), 1)
    return result["rows_loaded"]


# ---------------------------------------------------------------- module glue


LOAD_ARGS = dict(
    src=dict(type="path", required=True),
    table=dict(type="str", required=True),
    schema=dict(type="str", default="public"),
    format=dict(type="str", default="binary", choices=list(FORMATS)),
    columns=dict(type="list", elements="str"),
    batch_rows=dict(type="int", default=5000),
    max_live_rows=dict(type="int", default=10000),
    allow_live=dict(type="bool", default=False),
    in_place=dict(type="bool", default=False),
)


def conn_params(p):
    return pg.conn_params(p, p["login_db"])
