# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""pgvector index declarations, the catalog, and index plan + build: the engine behind
``ndis.dbops.pgvector_index``.  Its neighbours, one job each: ``vector_extension.py`` (the
version floor), ``vector_recall.py`` (recall measurement, shared by tuning, the recall check
and the restore test), ``vector_tune.py`` (tuning and the recall check).

Plain Python + psycopg2, importable without Ansible (tests and bench/bench_vector.py use it)::

    from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
    vi.ensure_indexes({"dsn": "..."}, [{"table": "embeddings", "column": "embedding"}])

Design:

* An index declaration is table, column, metric (cosine | l2 | inner_product), method
  (hnsw | ivfflat | auto), type (auto | vector | halfvec), an optional filter (the SQL
  predicate the application's searches use; measured by vector_tune) and optional m /
  ef_construction / lists.  ``auto`` is HNSW (m=16, ef_construction=64): it needs no training
  and is right on an empty table.  IVFFlat learns its lists from the rows present at build
  time, so it is only built on a table holding at least ``ivfflat_min_rows`` rows (otherwise
  deferred, and said so), with lists = rows/1000 up to 1M rows, sqrt(rows) beyond, at least 10.
* Storage: a ``vector`` column of more than 2000 dimensions (or ``type: halfvec``) is indexed
  as the expression ``(column::halfvec(N))`` with the halfvec_* operator class; a ``halfvec``
  column as it is.  ``search_expr`` / ``app_query`` give the expression the application must
  order by for the planner to use the index.
* Indexes are found by name (default ``<table>_<column>[_halfvec]_<method>_<metric>``, the name
  the baseline migration uses).  INVALID (an interrupted CREATE INDEX CONCURRENTLY) is rebuilt;
  a definition that differs from the declaration is reported and rebuilt only with
  ``allow_rebuild`` (built under a temporary name, then swapped, so searches keep an index).
* Builds run ``CREATE INDEX CONCURRENTLY`` over an autocommit connection whose
  ``application_name`` is ``pgvector_index`` (the role watches pg_stat_progress_create_index
  for it), with maintenance_work_mem sized to the build, max_parallel_maintenance_workers (0
  on versions the version floor marks unsafe for parallel builds) and a statement_timeout.
  A failed build drops the INVALID index it leaves behind.
* What the engine knows about an index (rows at build; the tuner's measurement state) is kept
  in the index's COMMENT as ``ndis.dbops.pgvector {json}``; a build replaces it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import re
import time

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_extension as vext
from ansible_collections.ndis.dbops.plugins.module_utils.postgres import PostgresError, error_text, pgsql, psycopg2
from ansible_collections.ndis.dbops.plugins.module_utils.progress import ProgressFile, Ticker, index_build_poll

APPLICATION_NAME = "pgvector_index"
COMMENT_PREFIX = "ndis.dbops.pgvector "
METRICS = {  # metric: (operator class, distance operator, short name for index names)
    "cosine": ("vector_cosine_ops", "<=>", "cosine"),
    "l2": ("vector_l2_ops", "<->", "l2"),
    "inner_product": ("vector_ip_ops", "<#>", "ip"),
}
OPCLASS_METRIC = dict((v[0], k) for k, v in METRICS.items())
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}
IVFFLAT_DEFAULT_LISTS = 100  # pgvector's default when WITH (lists) is absent
MIN_LISTS = 10
# Versions with a known defect worth stopping for (pgvector CHANGELOG).
MAX_VECTOR_INDEX_DIMS = 2000  # HNSW / IVFFlat on vector
MAX_HALFVEC_INDEX_DIMS = 4000  # HNSW / IVFFlat on halfvec
HALFVEC_EXPR = re.compile(r'^\(*"?([^":()]+?)"?\)?::halfvec\((\d+)\)\)*$')


class VectorIndexError(PostgresError):
    """Something failed.  ``str(e)`` says what, where and what to do next; ``details`` is machine-readable."""


# ---------------------------------------------------------------- helpers


version_tuple = vext.version_tuple


def parse_memory(value):
    """'256MB' / '1GB' / '65536kB' / 512 (MB) -> kB (int)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value) * 1024
    m = re.match(r"^\s*(\d+)\s*(kB|KB|k|MB|M|GB|G|TB|T)?\s*$", str(value))
    if not m:
        raise VectorIndexError("cannot read memory size %r: use a number with kB, MB or GB (for example 256MB)" % (value,))
    n, unit = int(m.group(1)), (m.group(2) or "MB").upper().rstrip("B") or "M"
    return n * {"K": 1, "M": 1024, "G": 1024 * 1024, "T": 1024 * 1024 * 1024}[unit[0]]


def format_kb(kb):
    return "%dMB" % int(math.ceil(kb / 1024.0))


def ivfflat_lists(rows):
    """The pgvector guidance: rows/1000 up to 1M rows, sqrt(rows) beyond; at least MIN_LISTS."""
    lists = rows // 1000 if rows <= 1000000 else int(math.sqrt(rows))
    return max(MIN_LISTS, int(lists))


def default_probes(lists):
    return max(1, int(round(math.sqrt(lists))))


def index_name(decl):
    method = decl["method"] if decl["method"] != "auto" else "hnsw"
    half = "_halfvec" if decl.get("storage") == "halfvec_expr" else ""
    name = "%s_%s%s_%s_%s" % (decl["table"], decl["column"], half, method, METRICS[decl["metric"]][2])
    return name[:63]


def opclass_for(d):
    """The operator class of the declared index: halfvec_* for a halfvec column or expression."""
    op = METRICS[d["metric"]][0]
    return op.replace("vector_", "halfvec_", 1) if d.get("storage", "vector") != "vector" else op


def search_expr(d):
    """(SQL of the searched expression, cast of the query literal): what the application must write.

    vector column: ``"v" <=> $1::vector``; halfvec expression index: ``("v"::halfvec(N)) <=> $1::halfvec(N)``;
    halfvec column: ``"v" <=> $1::halfvec``.
    """
    col = pgsql.Identifier(d["column"])
    if d.get("storage") == "halfvec_expr":
        return pgsql.SQL("({}::halfvec(%d))" % int(d["dims"])).format(col), "halfvec(%d)" % int(d["dims"])
    if d.get("storage") == "halfvec_column":
        return col, "halfvec"
    return col, "vector"


def app_query(d, k=10):
    """The query text the application writes for the planner to use the declared index."""
    searched = ("%s::halfvec(%d)" % (d["column"], int(d["dims"]))) if d.get("storage") == "halfvec_expr" else d["column"]
    where = (" WHERE " + d["filter"]) if d.get("filter") else ""
    return "SELECT ... FROM %s%s ORDER BY %s %s $1::%s LIMIT %d" % (
        qualified(d), where, searched, METRICS[d["metric"]][1], search_expr(d)[1], k)


def normalize(decl):
    """Fill in a declaration's defaults; raise on unknown values."""
    d = dict(decl or {})
    for key in ("table", "column"):
        if not d.get(key):
            raise VectorIndexError("index declaration %r has no %s" % (decl, key))
    d.setdefault("schema", "public")
    d["schema"] = d.get("schema") or "public"
    d["metric"] = (d.get("metric") or "cosine").replace(" ", "_")
    if d["metric"] in ("ip", "inner"):
        d["metric"] = "inner_product"
    if d["metric"] not in METRICS:
        raise VectorIndexError("index on %s.%s: metric %r is not one of cosine, l2, inner_product" % (d["table"], d["column"], d["metric"]))
    d["method"] = d.get("method") or "auto"
    if d["method"] not in ("auto", "hnsw", "ivfflat"):
        raise VectorIndexError("index on %s.%s: method %r is not one of auto, hnsw, ivfflat" % (d["table"], d["column"], d["method"]))
    d["resolved_method"] = "hnsw" if d["method"] == "auto" else d["method"]
    if d["resolved_method"] == "hnsw":
        d["m"] = int(d.get("m") or HNSW_DEFAULTS["m"])
        d["ef_construction"] = int(d.get("ef_construction") or HNSW_DEFAULTS["ef_construction"])
        if d["ef_construction"] < 2 * d["m"]:
            raise VectorIndexError("index on %s.%s: ef_construction (%d) must be at least 2 * m (%d)"
                                   % (d["table"], d["column"], d["ef_construction"], 2 * d["m"]))
    d["lists"] = int(d["lists"]) if d.get("lists") else None
    d["type"] = d.get("type") or "auto"
    if d["type"] not in ("auto", "vector", "halfvec"):
        raise VectorIndexError("index on %s.%s: type %r is not one of auto, vector, halfvec" % (d["table"], d["column"], d["type"]))
    d["filter"] = (d.get("filter") or "").strip() or None
    if d["filter"] and (";" in d["filter"] or "--" in d["filter"] or "/*" in d["filter"]):
        raise VectorIndexError("index on %s.%s: filter %r must be one SQL predicate (no ';' or comments), for example "
                               "\"source = 'docs'\"" % (d["table"], d["column"], d["filter"]))
    d["name_given"] = bool(d.get("name"))
    d.setdefault("storage", "halfvec_expr" if d["type"] == "halfvec" else "vector")
    d["name"] = d.get("name") or index_name(d)
    return d


def resolve_storage(d, typname, dims):
    """Decide how the declared column is indexed: vector, halfvec_column or halfvec_expr (sets d's storage and name).

    A halfvec column is indexed as it is; a vector column is indexed as a halfvec expression when the declaration
    says type: halfvec or the column has more than MAX_VECTOR_INDEX_DIMS dimensions (HNSW and IVFFlat cannot
    index a vector that wide; halfvec allows up to MAX_HALFVEC_INDEX_DIMS).
    """
    if typname == "halfvec":
        d["storage"] = "halfvec_column"
    elif d["type"] == "halfvec" or (dims or 0) > MAX_VECTOR_INDEX_DIMS:
        if not dims:
            raise VectorIndexError("column %s.%s has no declared dimensions: a halfvec expression index needs them; "
                                   "declare the column as vector(N)" % (qualified(d), d["column"]))
        d["storage"] = "halfvec_expr"
    else:
        d["storage"] = "vector"
    if d["storage"] != "vector" and (dims or 0) > MAX_HALFVEC_INDEX_DIMS:
        raise VectorIndexError("column %s.%s has %d dimensions: pgvector indexes halfvec up to %d; reduce the dimensions "
                               "(for example the embedding model's dimensions parameter)" % (
                                   qualified(d), d["column"], dims, MAX_HALFVEC_INDEX_DIMS))
    d["dims"] = dims
    if not d.get("name_given"):
        d["name"] = index_name(d)
    return d


def qualified(d):
    return "%s.%s" % (d["schema"], d["table"])


def connect(conn_params, application_name=APPLICATION_NAME):
    return pg.connect(conn_params, application_name=application_name, error=VectorIndexError)


def _one(cur, query, params=None):
    cur.execute(query, params)
    row = cur.fetchone()
    return row[0] if row else None


def read_meta(comment):
    if comment and comment.startswith(COMMENT_PREFIX):
        try:
            return json.loads(comment[len(COMMENT_PREFIX):])
        except ValueError:
            return {}
    return {}


def meta_comment(meta):
    return COMMENT_PREFIX + json.dumps(meta, sort_keys=True)


# ---------------------------------------------------------------- extension


def check_extension(cur, min_version="0.5.0", update=False, check_mode=False, where=""):
    """The version floor (module_utils/vector_extension.py), its errors as VectorIndexError."""
    try:
        return vext.check_extension(cur, min_version, update, check_mode, where)
    except vext.ExtensionError as e:
        raise VectorIndexError(e.msg)


# ---------------------------------------------------------------- catalog


def table_state(cur, d):
    """{exists, rows, dims} for the declared table/column."""
    cur.execute(
        "SELECT c.oid, c.reltuples::bigint, a.atttypmod, t.typname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped"
        " LEFT JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (d["column"], d["schema"], d["table"]))
    row = cur.fetchone()
    if row is None:
        return {"exists": False, "rows": 0, "dims": None}
    oid, reltuples, typmod, typname = row
    if typname is None:
        raise VectorIndexError("table %s has no column %s: fix the declaration (pgvector_indexes)" % (qualified(d), d["column"]))
    if typname not in ("vector", "halfvec"):
        raise VectorIndexError("column %s.%s is of type %s, not vector or halfvec: only those columns are supported"
                               % (qualified(d), d["column"], typname))
    resolve_storage(d, typname, typmod if typmod and typmod > 0 else None)
    # reltuples is an estimate (-1 before the first ANALYZE); small tables are counted exactly.
    if reltuples is None or reltuples < 200000:
        rows = _one(cur, pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(d["schema"], d["table"])))
    else:
        rows = int(reltuples)
    return {"exists": True, "rows": int(rows), "dims": typmod if typmod and typmod > 0 else None, "oid": oid, "type": typname}


def read_index(cur, schema, name):
    cur.execute(
        "SELECT i.relname, am.amname, opc.opcname, coalesce(i.reloptions, '{}'), x.indisvalid,"
        " obj_description(i.oid, 'pg_class'), pg_get_indexdef(i.oid), t.relname, a.attname, pg_relation_size(i.oid),"
        " pg_get_indexdef(i.oid, 1, true), i.oid::bigint, pg_get_expr(x.indpred, x.indrelid, true)"
        " FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace"
        " JOIN pg_index x ON x.indexrelid = i.oid JOIN pg_am am ON am.oid = i.relam"
        " JOIN pg_class t ON t.oid = x.indrelid"
        " LEFT JOIN pg_opclass opc ON opc.oid = x.indclass[0]"
        " LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
        " WHERE n.nspname = %s AND i.relname = %s AND i.relkind = 'i'",
        (schema, name))
    row = cur.fetchone()
    if row is None:
        return None
    options = {}
    for opt in row[3]:
        k, _, v = opt.partition("=")
        options[k] = int(v) if v.isdigit() else v
    column, expr_dims = row[8], None
    if column is None:  # an expression index: (v::halfvec(N))
        m = HALFVEC_EXPR.match(row[10] or "")
        if m:
            column, expr_dims = m.group(1), int(m.group(2))
    return {
        "name": row[0], "method": row[1], "opclass": row[2], "options": options, "valid": bool(row[4]),
        "comment": row[5], "meta": read_meta(row[5]), "definition": row[6], "table": row[7], "column": column,
        "size_bytes": int(row[9] or 0), "key": row[10], "expr_dims": expr_dims, "oid": int(row[11]), "predicate": row[12],
    }


def vector_indexes_on(cur, d):
    """Names of the hnsw/ivfflat indexes on the declared column."""
    cur.execute(
        "SELECT i.relname, a.attname, pg_get_indexdef(i.oid, 1, true) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_am am ON am.oid = i.relam"
        " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
        " WHERE n.nspname = %s AND t.relname = %s AND am.amname IN ('hnsw', 'ivfflat')"
        " ORDER BY 1", (d["schema"], d["table"]))
    out = []
    for name, att, key in cur.fetchall():
        m = HALFVEC_EXPR.match(key or "")
        if att == d["column"] or (m and m.group(1) == d["column"]):
            out.append(name)
    return out


def actual_params(idx):
    if idx["method"] == "hnsw":
        return {"m": int(idx["options"].get("m", HNSW_DEFAULTS["m"])),
                "ef_construction": int(idx["options"].get("ef_construction", HNSW_DEFAULTS["ef_construction"]))}
    return {"lists": int(idx["options"].get("lists", IVFFLAT_DEFAULT_LISTS))}


def desired_params(d, rows):
    if d["resolved_method"] == "hnsw":
        return {"m": d["m"], "ef_construction": d["ef_construction"]}
    return {"lists": d["lists"] or ivfflat_lists(rows)}


def create_sql(d, params, name=None):
    opclass = opclass_for(d)
    with_ = ", ".join("%s = %d" % (k, params[k]) for k in sorted(params, key=lambda k: ("m", "ef_construction", "lists").index(k)))
    return pgsql.SQL("CREATE INDEX CONCURRENTLY {} ON {} USING {} ({} {}) WITH (" + with_ + ")").format(
        pgsql.Identifier(name or d["name"]), pgsql.Identifier(d["schema"], d["table"]),
        pgsql.SQL(d["resolved_method"]), search_expr(d)[0], pgsql.SQL(opclass))


def build_memory_kb(d, params, rows, dims):
    """maintenance_work_mem for a build of this index (kB): enough for the graph / the k-means sample, +25%."""
    dims = dims or 1536
    vec = dims * (2 if d.get("storage", "vector") != "vector" else 4) + 8
    if d["resolved_method"] == "hnsw":
        # in-memory graph: each element holds its vector, 2*m neighbours on layer 0 (m above), tuple overhead
        per = vec + (2 * params["m"] + params["m"] // 2) * 12 + 120
        need = rows * per
    else:
        lists = params["lists"]
        samples = min(rows, lists * 50)  # pgvector samples 50 rows per list for k-means
        need = 2 * samples * vec + 4 * lists * vec
    return int(need * 1.25 / 1024) + 16 * 1024


# ---------------------------------------------------------------- plan / apply


def plan_index(cur, decl, allow_rebuild=False, ivfflat_min_rows=1000, stale_factor=2.0):
    """What to do for one declaration: {name, action, reason, ...}.

    action: none | create | rebuild | defer | report (drift / stale without allow_rebuild) | missing_table
    """
    d = normalize(decl)
    ts = table_state(cur, d)
    plan = {"name": d["name"], "table": qualified(d), "column": d["column"], "metric": d["metric"],
            "method": d["resolved_method"], "rows": ts["rows"], "action": "none", "reason": "", "problems": [],
            "decl": d, "dims": ts["dims"], "storage": d.get("storage", "vector")}
    if not ts["exists"]:
        plan.update(action="missing_table", reason="table %s does not exist yet: nothing to index (re-run after the migrations)"
                    % qualified(d))
        return plan
    if d["resolved_method"] == "ivfflat" and ts["rows"] < ivfflat_min_rows:
        existing = read_index(cur, d["schema"], d["name"])
        plan.update(action="defer", reason=(
            "IVFFlat learns its lists from the rows present at build time; %s holds %d rows (fewer than %d), so the build "
            "is deferred until it has data (use method hnsw or auto to index an empty table)" % (qualified(d), ts["rows"], ivfflat_min_rows)))
        if existing is not None:
            plan["current"] = _brief(existing)
        return plan
    params = desired_params(d, ts["rows"])
    plan["params"] = params
    plan["app_query"] = app_query(d)
    plan["sql"] = create_sql(d, params).as_string(cur)
    existing = read_index(cur, d["schema"], d["name"])
    if existing is None:
        others = vector_indexes_on(cur, d)
        plan.update(action="create", reason="index %s does not exist" % d["name"])
        if others:
            plan["problems"].append("other vector indexes on %s.%s are not declared: %s" % (qualified(d), d["column"], ", ".join(others)))
        return plan
    plan["current"] = _brief(existing)
    if not existing["valid"]:
        plan.update(action="rebuild", reason="index %s is INVALID (an interrupted CREATE INDEX CONCURRENTLY): dropped and rebuilt" % d["name"])
        return plan
    drift = []
    if existing["method"] != d["resolved_method"]:
        drift.append("method %s, declared %s" % (existing["method"], d["resolved_method"]))
    if existing["opclass"] != opclass_for(d):
        drift.append("operator class %s, declared %s" % (existing["opclass"], opclass_for(d)))
    if existing["table"] != d["table"] or existing["column"] != d["column"]:
        drift.append("on %s.%s, declared %s.%s" % (existing["table"], existing["column"], d["table"], d["column"]))
    elif (existing["expr_dims"] is not None) != (d["storage"] == "halfvec_expr"):
        drift.append("on %s, declared %s" % (existing["key"], search_expr(d)[0].as_string(cur)))
    if not drift:
        have = actual_params(existing)
        for k, v in sorted(params.items()):
            if k == "lists" and not d["lists"]:
                continue  # computed lists: staleness below, not drift
            if have.get(k) != v:
                drift.append("%s = %s, declared %s" % (k, have.get(k), v))
    stale = None
    if not drift and existing["method"] == "ivfflat":
        built = existing["meta"].get("built_rows")
        if built is None:
            stale = ("IVFFlat index %s has no build record (not built by this module): the rows it was trained on are "
                     "unknown; run the recall check, and rebuild if recall is low" % d["name"])
            plan["problems"].append(stale)
            stale = None
        elif ts["rows"] > stale_factor * max(int(built), 1):
            stale = ("IVFFlat index %s was built on %d rows and the table now holds %d (more than %.1fx): its lists are "
                     "stale, recall drops as rows land in lists trained without them" % (d["name"], built, ts["rows"], stale_factor))
    if drift or stale:
        what = ("definition differs from the declaration: " + "; ".join(drift)) if drift else stale
        plan["drift"] = drift
        plan["stale"] = bool(stale)
        if allow_rebuild:
            plan.update(action="rebuild", reason=what + " (rebuilt: allow_rebuild)")
        else:
            plan.update(action="report", reason=what + ". Not rebuilt: set allow_rebuild (pgvector_allow_rebuild) to rebuild it")
            plan["problems"].append(plan["reason"])
    return plan


def _brief(idx):
    return {"name": idx["name"], "method": idx["method"], "opclass": idx["opclass"], "options": idx["options"],
            "valid": idx["valid"], "definition": idx["definition"]}


def _session_settings(cur, settings):
    for name, value in settings:
        cur.execute("SELECT set_config(%s, %s, false)", (name, str(value)))


def _drop_concurrently(cur, schema, name):
    cur.execute(pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(pgsql.Identifier(schema, name)))


def build_settings(plan, maintenance_work_mem=None, max_memory="2GB", parallel_workers=None, timeout=3600):
    d = plan["decl"]
    if maintenance_work_mem:
        mwm = parse_memory(maintenance_work_mem)
    else:
        mwm = min(build_memory_kb(d, plan["params"], plan["rows"], plan["dims"]), parse_memory(max_memory))
        mwm = max(mwm, 64 * 1024)
    # client_connection_check_interval: a build whose client died (a killed job or load) is cancelled within seconds
    # instead of building on for an hour; the INVALID index it leaves is rebuilt by the next run.
    settings = [("maintenance_work_mem", format_kb(mwm)), ("statement_timeout", "%ds" % int(timeout) if timeout else "0"),
                ("client_connection_check_interval", "2s")]
    if parallel_workers is not None:
        settings.append(("max_parallel_maintenance_workers", int(parallel_workers)))
    return settings


def apply_plan(conn, plan, settings, progress=None, conn_params=None, interval=10):
    """Run a create / rebuild plan.  Returns the list of statements run.

    With ``progress`` (a progress.ProgressFile) and ``conn_params``, a line per ``interval``
    seconds says how far the build is, read from pg_stat_progress_create_index.
    """
    d = plan["decl"]
    cur = conn.cursor()
    ran = []
    _session_settings(cur, settings)
    ran.extend("SET %s = %s" % (k, v) for k, v in settings)
    target = d["name"]
    swap = plan["action"] == "rebuild" and plan.get("current", {}).get("valid")
    if plan["action"] == "rebuild" and not swap:
        _drop_concurrently(cur, d["schema"], d["name"])  # INVALID: nothing to keep serving
        ran.append("DROP INDEX CONCURRENTLY IF EXISTS %s.%s" % (d["schema"], d["name"]))
    if swap:
        target = (d["name"][:55] + "_ndis_new")
        _drop_concurrently(cur, d["schema"], target)  # leftover of an interrupted earlier swap
    stmt = create_sql(d, plan["params"], name=target)
    t0 = time.monotonic()
    poll = (index_build_poll(lambda: connect(conn_params, application_name="pgvector_index_progress"),
                             conn.get_backend_pid()) if progress and conn_params else None)
    try:
        if poll:
            with Ticker(progress, "index %s" % target, poll, interval):
                cur.execute(stmt)
            progress.line("index %s" % target, "built", plan["rows"], plan["rows"])
        else:
            cur.execute(stmt)
    except psycopg2.Error as e:
        text = error_text(e)
        try:
            _drop_concurrently(cur, d["schema"], target)
            cleanup = "the INVALID index it left was dropped"
        except psycopg2.Error:
            cleanup = "drop the INVALID index %s it left (DROP INDEX CONCURRENTLY) before retrying" % target
        hint = ""
        if "memory required" in text or "maintenance_work_mem" in text:
            hint = " Raise maintenance_work_mem (pgvector_maintenance_work_mem) or its cap (pgvector_maintenance_work_mem_max)."
        elif getattr(e, "pgcode", None) == "57014":
            hint = " The build hit statement_timeout: raise pgvector_build_timeout."
        raise VectorIndexError("building index %s on %s failed: %s; %s.%s" % (target, plan["table"], text, cleanup, hint),
                               sqlstate=getattr(e, "pgcode", None), index=d["name"])
    finally:
        if poll:
            poll.close()
    ran.append(stmt.as_string(cur))
    if swap:
        _drop_concurrently(cur, d["schema"], d["name"])
        cur.execute(pgsql.SQL("ALTER INDEX {} RENAME TO {}").format(pgsql.Identifier(d["schema"], target), pgsql.Identifier(d["name"])))
        ran.append("DROP INDEX CONCURRENTLY %s.%s; ALTER INDEX %s RENAME TO %s" % (d["schema"], d["name"], target, d["name"]))
    meta = {"built_rows": plan["rows"]}
    cur.execute(pgsql.SQL("COMMENT ON INDEX {} IS %s").format(pgsql.Identifier(d["schema"], d["name"])), (meta_comment(meta),))
    ran.append("COMMENT ON INDEX %s.%s IS '%s'" % (d["schema"], d["name"], meta_comment(meta)))
    plan["build_seconds"] = round(time.monotonic() - t0, 3)
    return ran


def _public_plan(plan):
    return dict((k, v) for k, v in plan.items() if k != "decl")


def ensure_indexes(conn_params, indexes, min_version="0.5.0", update_extension=False, allow_rebuild=False,
                   ivfflat_min_rows=1000, stale_factor=2.0, maintenance_work_mem=None, maintenance_work_mem_max="2GB",
                   parallel_workers=None, build_timeout=3600, check_mode=False, progress_file="", progress_interval=10,
                   progress=None):
    """Bring the declared vector indexes to their declaration.

    ``progress``: a progress.ProgressFile to write the build lines to (a caller's own job, vector_load), instead of a
    fresh one at ``progress_file``.

    Returns {changed, queries, indexes: [plan...], extension: {installed, available}, deferred, problems, diff}.
    """
    conn = connect(conn_params)
    where = "database %s" % conn.get_dsn_parameters().get("dbname")
    result = {"changed": False, "queries": [], "indexes": [], "deferred": [], "problems": [], "warnings": []}
    try:
        cur = conn.cursor()
        info, queries = check_extension(cur, min_version, update_extension, check_mode, where)
        result["extension"] = info
        result["warnings"].extend(info["assessment"]["warnings"])
        if info["assessment"]["serial_builds"]:
            parallel_workers = 0  # the version floor: parallel HNSW builds are unsafe on this version
        result["queries"].extend(queries)
        result["changed"] = bool(queries)
        plans = [plan_index(cur, decl, allow_rebuild, ivfflat_min_rows, stale_factor) for decl in indexes]
        names = [p["name"] for p in plans]
        dup = sorted(set(n for n in names if names.count(n) > 1))
        if dup:
            raise VectorIndexError("two declarations resolve to the same index name %s: give one of them a name" % ", ".join(dup))
        before, after = [], []
        for p in plans:
            before.append(p.get("current", {}).get("definition") or "")
            if p["action"] in ("defer", "missing_table"):
                result["deferred"].append("%s: %s" % (p["name"], p["reason"]))
            result["problems"].extend(p["problems"])
            if p["action"] in ("create", "rebuild"):
                result["changed"] = True
                if check_mode:
                    result["queries"].append(p["sql"])
                else:
                    settings = build_settings(p, maintenance_work_mem, maintenance_work_mem_max, parallel_workers, build_timeout)
                    p["settings"] = dict(settings)
                    lines = progress or (ProgressFile(progress_file) if progress_file else None)
                    result["queries"].extend(apply_plan(conn, p, settings, lines, conn_params, progress_interval))
                after.append(p["sql"].replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX"))
            else:
                after.append(before[-1])
        result["indexes"] = [_public_plan(p) for p in plans]
        result["diff"] = {"before": "".join(x + "\n" for x in before if x), "after": "".join(x + "\n" for x in after if x)}
        return result
    except VectorIndexError as e:
        if e.result is None:
            e.result = result
        raise
    except psycopg2.Error as e:
        raise VectorIndexError("vector index management on %s failed: %s" % (where, error_text(e)),
                               result=result, sqlstate=getattr(e, "pgcode", None))
    finally:
        conn.close()


# ---------------------------------------------------------------- module glue


CONNECTION_ARGS = dict(
    login_user=dict(type="str", default="postgres"),
    login_db=dict(type="str", required=True, aliases=["db"]),
    **pg.CONNECTION_ARGS
)

INDEX_ARGS = dict(
    type="list", elements="dict", required=True,
    options=dict(
        table=dict(type="str", required=True),
        column=dict(type="str", required=True),
        schema=dict(type="str", default="public"),
        name=dict(type="str"),
        metric=dict(type="str", default="cosine", choices=["cosine", "l2", "inner_product"]),
        method=dict(type="str", default="auto", choices=["auto", "hnsw", "ivfflat"]),
        m=dict(type="int"),
        ef_construction=dict(type="int"),
        lists=dict(type="int"),
        type=dict(type="str", default="auto", choices=["auto", "vector", "halfvec"]),
        filter=dict(type="str"),
    ),
)


def conn_params(p):
    """psycopg2.connect keyword arguments from the modules' connection options."""
    return pg.conn_params(p, p["login_db"])
