# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""The app's query sample: the table where the application records a sample of the query vectors it searches
with, its insert-only privileges, its trimming, and reading it back.  The engine behind
``ndis.dbops.pgvector_query_sample``; tuning, the recall check and health read it (``state``, ``read``).

Why a sample of the app's own queries: a stored row asked as a query (held out from its own answer) is still a node
of the HNSW graph, so the search walks to it and on along the edges built to its true neighbours; a query the graph
has never seen has no such node.  On data with small clusters (the chunks of one document) held-out rows overstate
the recall the app gets, and the app's questions are not shaped like its rows at all.  The sampled queries are what
the app really searches with.

The table (one per database, ``schema.table``)::

    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY
    index_name  text NOT NULL      the index searched, or its table.column (schema.table.column)
    embedding   vector NOT NULL    the query vector (any dimensions: each index reads its own)
    filter      jsonb              the search's filter, {"column": value, ...} (equality, ANDed), or NULL
    searched_at timestamptz NOT NULL DEFAULT now()

It holds no text: no question, no user, no session.  The query vectors are personal data all the same (an embedding
of what a person asked), so the table is bounded: the newest ``max_per_index`` rows per index, none older than
``retention_days``, trimmed by every run of the role and by the scheduled job.  The writer role may only INSERT:
it cannot read, change or delete what it wrote (no SELECT, UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER; USAGE
on the schema, not CREATE).  The identity column draws from its sequence without a privilege on it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi

DEFAULT_SCHEMA = "query_sample"
DEFAULT_TABLE = "vector_queries"
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
COLUMNS = ("id", "index_name", "embedding", "filter", "searched_at")
# Each distinct filter costs one pass over the table for its exact answers: the most frequent ones are measured.
MAX_FILTERS = 8


# The options of doc_fragments/query_sample.py, for the modules that measure on the sample.
SAMPLE_ARGS = dict(
    query_sample_schema=dict(type="str", default=DEFAULT_SCHEMA),
    query_sample_table=dict(type="str", default=""),
    sample_min_queries=dict(type="int", default=100),
    sample_retention_days=dict(type="int", default=7),
    heldout_margin=dict(type="float", default=0.03),
)


class SampleError(vi.VectorIndexError):
    pass


def sample_params(p):
    """(query_sample {schema, table} or None, keyword arguments for tune / recall_check) from module params."""
    qs = {"schema": p["query_sample_schema"], "table": p["query_sample_table"]} if p.get("query_sample_table") else None
    if p["sample_min_queries"] < 1:
        raise SampleError("sample_min_queries must be at least 1, got %s" % p["sample_min_queries"])
    if not 0 <= p["heldout_margin"] < 0.5:
        raise SampleError("heldout_margin must be in [0, 0.5) (a recall difference, 0.03), got %s" % p["heldout_margin"])
    return {"query_sample": qs, "sample_min_queries": p["sample_min_queries"], "heldout_margin": p["heldout_margin"],
            "sample_retention_days": p["sample_retention_days"]}


def _ident(cur, *parts):
    return vi.pgsql.Identifier(*parts).as_string(cur)


def names(d):
    """The ``index_name`` values that mean the declared index ``d``: its name, table.column, schema.table.column."""
    return [d["name"], "%s.%s" % (d["table"], d["column"]), "%s.%s.%s" % (d["schema"], d["table"], d["column"])]


def exists(cur, schema, table):
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (vi.pgsql.Identifier(schema, table).as_string(cur),))
    return cur.fetchone()[0]


def create_statements(cur, schema, table):
    t = _ident(cur, schema, table)
    return [
        "CREATE SCHEMA IF NOT EXISTS %s" % _ident(cur, schema),
        "CREATE TABLE %s (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, index_name text NOT NULL "
        "CHECK (length(index_name) BETWEEN 1 AND 200), embedding vector NOT NULL, filter jsonb "
        "CHECK (filter IS NULL OR jsonb_typeof(filter) = 'object'), searched_at timestamptz NOT NULL DEFAULT now())" % t,
        "CREATE INDEX %s ON %s (index_name, searched_at DESC, id DESC)" % (_ident(cur, table + "_index_newest"), t),
        "COMMENT ON TABLE %s IS %s" % (t, vi.pgsql.Literal(
            "ndis.dbops: a sample of the application's query vectors (no text), the newest rows per index only; "
            "the application may only INSERT").as_string(cur)),
    ]


def writer_privileges(cur, schema, table, writer):
    """(table privileges, column privileges by column, schema privileges) granted to ``writer`` directly."""
    cur.execute("SELECT coalesce(array_agg(DISTINCT a.privilege_type), '{}') FROM pg_class c, aclexplode(c.relacl) a"
                " WHERE c.oid = %s::regclass AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                (vi.pgsql.Identifier(schema, table).as_string(cur), writer))
    tab = sorted(cur.fetchone()[0])
    cur.execute("SELECT at.attname, array_agg(DISTINCT a.privilege_type) FROM pg_attribute at, aclexplode(at.attacl) a"
                " WHERE at.attrelid = %s::regclass AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)"
                " GROUP BY at.attname", (vi.pgsql.Identifier(schema, table).as_string(cur), writer))
    cols = dict((name, sorted(privs)) for name, privs in cur.fetchall())
    cur.execute("SELECT coalesce(array_agg(DISTINCT a.privilege_type), '{}') FROM pg_namespace n, aclexplode(n.nspacl) a"
                " WHERE n.nspname = %s AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)", (schema, writer))
    return tab, cols, sorted(cur.fetchone()[0])


def grant_statements(cur, schema, table, writer, have):
    """The statements that leave ``writer`` with INSERT on the table and USAGE on the schema, nothing else."""
    tab, cols, sch = have
    t, w = _ident(cur, schema, table), _ident(cur, writer)
    out = []
    extra = [p for p in tab if p != "INSERT"]
    if extra:
        out.append("REVOKE %s ON TABLE %s FROM %s" % (", ".join(extra), t, w))
    for col, privs in sorted(cols.items()):
        out.append("REVOKE %s (%s) ON TABLE %s FROM %s" % (", ".join(privs), _ident(cur, col), t, w))
    if "INSERT" not in tab:
        out.append("GRANT INSERT ON TABLE %s TO %s" % (t, w))
    if [p for p in sch if p != "USAGE"]:
        out.append("REVOKE CREATE ON SCHEMA %s FROM %s" % (_ident(cur, schema), w))
    if "USAGE" not in sch:
        out.append("GRANT USAGE ON SCHEMA %s TO %s" % (_ident(cur, schema), w))
    return out


def _trim_where(cur, schema, table):
    t = _ident(cur, schema, table)
    return ("searched_at < now() - make_interval(days => %(days)s) OR id IN (SELECT id FROM (SELECT id, row_number() "
            "OVER (PARTITION BY index_name ORDER BY searched_at DESC, id DESC) AS rn FROM " + t + ") ranked "
            "WHERE rn > %(keep)s)")


def trim_count(cur, schema, table, max_per_index, retention_days):
    """How many rows the trim deletes now (older than the retention, or beyond the newest ``max_per_index``)."""
    cur.execute("SELECT count(*) FROM %s WHERE %s" % (_ident(cur, schema, table), _trim_where(cur, schema, table)),
                {"days": int(retention_days), "keep": int(max_per_index)})
    return int(cur.fetchone()[0])


def trim(cur, schema, table, max_per_index, retention_days):
    cur.execute("DELETE FROM %s WHERE %s" % (_ident(cur, schema, table), _trim_where(cur, schema, table)),
                {"days": int(retention_days), "keep": int(max_per_index)})
    return cur.rowcount


def trim_statement(cur, schema, table, max_per_index, retention_days):
    return ("DELETE FROM %s WHERE %s" % (_ident(cur, schema, table), _trim_where(cur, schema, table))) % {
        "days": int(retention_days), "keep": int(max_per_index)}


def ensure(conn_params, schema=DEFAULT_SCHEMA, table=DEFAULT_TABLE, writer=None, max_per_index=2000, retention_days=7,
           check_mode=False):
    """The sample table with its index, the writer's insert-only privileges, and the trim, in one transaction.

    Returns {changed, queries, trimmed, rows, writer, diff}.  In check mode nothing is written and ``queries`` are
    the statements a real run would run (``trimmed`` the rows it would delete).
    """
    if int(max_per_index) < 1:
        raise SampleError("pgvector_query_sample_max_per_index must be at least 1, got %s" % max_per_index)
    if int(retention_days) < 1:
        raise SampleError("pgvector_query_sample_retention_days must be at least 1 (days), got %s" % retention_days)
    conn = vi.connect(conn_params, application_name="pgvector_query_sample")
    result = {"changed": False, "queries": [], "trimmed": 0, "rows": 0, "writer": writer or None}
    try:
        conn.autocommit = False
        cur = conn.cursor()
        found = exists(cur, schema, table)
        if found:
            cur.execute("SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute WHERE attrelid = %s::regclass"
                        " AND attnum > 0 AND NOT attisdropped", (vi.pgsql.Identifier(schema, table).as_string(cur),))
            cols = cur.fetchone()[0] or []
            if tuple(cols) != COLUMNS:
                raise SampleError("%s.%s exists with columns %s, not the query sample's %s: choose another "
                                  "pgvector_query_sample_table, or drop that table" % (schema, table, ", ".join(cols),
                                                                                         ", ".join(COLUMNS)))
        writer_exists = None
        if writer:
            cur.execute("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)", (writer,))
            writer_exists = cur.fetchone()[0]
            if not writer_exists and not check_mode:
                raise SampleError("the query sample's writer role %s does not exist: create it first (postgres_db), or "
                                  "set pgvector_query_sample_writer to the app's role" % writer)
        statements = [] if found else create_statements(cur, schema, table)
        if writer:
            have = writer_privileges(cur, schema, table, writer) if found and writer_exists else ([], {}, [])
            statements += grant_statements(cur, schema, table, writer, have)
        before = after = ""
        if found:
            result["trimmed"] = trim_count(cur, schema, table, max_per_index, retention_days)
            cur.execute("SELECT count(*) FROM %s" % _ident(cur, schema, table))
            result["rows"] = int(cur.fetchone()[0])
        if statements:
            before = "table %s.%s %s\n" % (schema, table, "exists" if found else "absent")
            after = "table %s.%s, %s may only INSERT\n" % (schema, table, writer or "no writer")
        if result["trimmed"]:
            statements.append(trim_statement(cur, schema, table, max_per_index, retention_days))
            before += "%d sampled queries\n" % result["rows"]
            after += "%d sampled queries (%d trimmed: older than %d days or beyond the newest %d per index)\n" % (
                result["rows"] - result["trimmed"], result["trimmed"], int(retention_days), int(max_per_index))
        result["queries"] = statements
        if statements:
            result["diff"] = {"before": before, "after": after}
        if not check_mode:
            for s in statements:
                cur.execute(s)
            conn.commit()
        else:
            conn.rollback()
        result["changed"] = bool(statements)
        result["rows"] -= result["trimmed"] if not check_mode else 0
        return result
    except pg.psycopg2.Error as e:
        conn.rollback()
        raise SampleError("the query sample %s.%s: %s" % (schema, table, pg.error_text(e)), result=result,
                          sqlstate=getattr(e, "pgcode", None))
    finally:
        conn.close()


# ---------------------------------------------------------------- reading it (tuning, the recall check, health)


def state(cur, schema, table, d, retention_days=None):
    """The cheap check: {queries, newest_id, newest_at, oldest_at} of the index's sampled queries with its dimensions
    (within the retention, when given); None when the table does not exist.  One statement on the bounded table."""
    if not schema or not table or not exists(cur, schema, table):
        return None
    cur.execute("SELECT count(*), max(id), max(searched_at), min(searched_at) FROM %s WHERE index_name = ANY(%%s) AND "
                "vector_dims(embedding) = %%s%s" % (
                    _ident(cur, schema, table),
                    " AND searched_at >= now() - make_interval(days => %d)" % int(retention_days) if retention_days else ""),
                (names(d), int(d["dims"])))
    n, newest, newest_at, oldest_at = cur.fetchone()
    return {"queries": int(n), "newest_id": int(newest or 0), "newest_at": _stamp(newest_at), "oldest_at": _stamp(oldest_at)}


def count_since(cur, schema, table, d, after_id, retention_days=None):
    """How many of the index's sampled queries arrived after ``after_id`` (the drift check's cheap count)."""
    if not exists(cur, schema, table):
        return 0
    cur.execute("SELECT count(*) FROM %s WHERE index_name = ANY(%%s) AND id > %%s AND vector_dims(embedding) = %%s%s" % (
        _ident(cur, schema, table),
        " AND searched_at >= now() - make_interval(days => %d)" % int(retention_days) if retention_days else ""),
        (names(d), int(after_id), int(d["dims"])))
    return int(cur.fetchone()[0])


def _stamp(when):
    return when.strftime("%Y-%m-%d %H:%M UTC") if when is not None else None


def filter_sql(cur, filt, columns):
    """SQL of a sampled filter ({"column": value}; equality, ANDed; null: IS NULL), or raise naming the problem."""
    if not isinstance(filt, dict) or not filt:
        raise SampleError("a filter is a JSON object of column: value, got %r" % (filt,))
    parts = []
    for col, value in sorted(filt.items()):
        if col not in columns:
            raise SampleError("the filter names column %s, which the table has not" % col)
        if isinstance(value, (dict, list)):
            raise SampleError("the filter's value for %s is not a scalar" % col)
        if value is None:
            parts.append("%s IS NULL" % _ident(cur, col))
        else:
            parts.append("%s = %s" % (_ident(cur, col), vi.pgsql.Literal(value if not isinstance(value, bool) else value)
                                      .as_string(cur)))
    return " AND ".join(parts)


def read(cur, schema, table, d, n, retention_days=None, seed=42):
    """The newest ``n`` sampled queries of the index, in a seeded random order (the first m of them are a random
    subset of the newest n, not the very newest m): {vecs, filters (SQL or None), ids, newest_at, oldest_at,
    skipped: [why a query is not measured]}."""
    import numpy as np
    cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (vi.pgsql.Identifier(d["schema"], d["table"]).as_string(cur),))
    columns = set(r[0] for r in cur.fetchall())
    cur.execute("SELECT id, embedding::text, filter::text, searched_at FROM %s WHERE index_name = ANY(%%s) AND "
                "vector_dims(embedding) = %%s%s ORDER BY searched_at DESC, id DESC LIMIT %%s" % (
                    _ident(cur, schema, table),
                    " AND searched_at >= now() - make_interval(days => %d)" % int(retention_days) if retention_days else ""),
                (names(d), int(d["dims"]), int(n)))
    rows = cur.fetchall()
    ids, vecs, filters, skipped, times = [], [], [], {}, []
    for qid, text, filt, at in rows:
        fsql = None
        if filt is not None:
            try:
                fsql = filter_sql(cur, json.loads(filt), columns)
            except SampleError as e:
                skipped[e.msg] = skipped.get(e.msg, 0) + 1
                continue
        ids.append(int(qid))
        vecs.append(np.array(json.loads(text), dtype=np.float32))
        filters.append(fsql)
        times.append(at)
    counts = {}
    for f in filters:
        if f is not None:
            counts[f] = counts.get(f, 0) + 1
    kept = set(sorted(counts, key=lambda f: (-counts[f], f))[:MAX_FILTERS])
    dropped = [i for i, f in enumerate(filters) if f is not None and f not in kept]
    if dropped:
        why = "its filter is not among the %d most frequent (each costs a pass over the table)" % MAX_FILTERS
        skipped[why] = len(dropped)
        gone = set(dropped)
        ids, vecs, filters, times = ([x for i, x in enumerate(col) if i not in gone] for col in (ids, vecs, filters, times))
    order = np.random.default_rng(seed).permutation(len(ids))
    dims = int(d["dims"])
    return {"ids": [ids[i] for i in order],
            "vecs": np.array([vecs[i] for i in order], dtype=np.float32).reshape(len(ids), dims),
            "filters": [filters[i] for i in order],
            "newest_at": _stamp(max(times)) if times else None, "oldest_at": _stamp(min(times)) if times else None,
            "skipped": ["%d queries not measured: %s" % (c, why) for why, c in sorted(skipped.items())]}
