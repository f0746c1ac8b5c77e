# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""pgvector indexes, query-time defaults and recall checks: the engine behind
``ndis.dbops.pgvector_index``, ``ndis.dbops.pgvector_tune`` and ``ndis.dbops.pgvector_recall_info``.

Plain Python + psycopg2, importable without Ansible (tests and bench/bench_vector.py use it)::

    from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
    vi.ensure_indexes({"dsn": "..."}, [{"table": "embeddings", "column": "embedding"}])
    vi.tune({"dsn": "..."}, [{"table": "embeddings", "column": "embedding"}], recall_target=0.95)
    vi.recall_check({"dsn": "..."}, [{"table": "embeddings", "column": "embedding"}])

Design:

* An index declaration is table, column, metric (cosine | l2 | inner_product), method
  (hnsw | ivfflat | auto) and optional m / ef_construction / lists.  ``auto`` is HNSW
  (m=16, ef_construction=64): it needs no training and is right on an empty table.
  IVFFlat learns its lists from the rows present at build time, so it is only built on a
  table holding at least ``ivfflat_min_rows`` rows (otherwise deferred, and said so), with
  lists = rows/1000 up to 1M rows, sqrt(rows) beyond, at least 10.
* Indexes are found by name (default ``<table>_<column>_<method>_<metric>``, the name the
  baseline migration uses).  INVALID (an interrupted CREATE INDEX CONCURRENTLY) is rebuilt;
  a definition that differs from the declaration is reported and rebuilt only with
  ``allow_rebuild`` (built under a temporary name, then swapped, so searches keep an index).
* Builds run ``CREATE INDEX CONCURRENTLY`` over an autocommit connection whose
  ``application_name`` is ``pgvector_index`` (the role watches pg_stat_progress_create_index
  for it), with maintenance_work_mem sized to the build, max_parallel_maintenance_workers and
  a statement_timeout.  A failed build drops the INVALID index it leaves behind.
* What the engine knows about an index it built or tuned (rows at build, rows at tuning, the
  chosen ef_search / probes) is kept in the index's COMMENT as ``ndis.dbops.pgvector {json}``.
* Recall is measured on a sample of stored vectors used as queries: the index's top-k (index
  forced, the stored vector itself excluded) against the exact top-k (index scans disabled).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import re
import statistics
import time

from ansible_collections.ndis.dbops.plugins.module_utils import pg_connection
from ansible_collections.ndis.dbops.plugins.module_utils.progress import ProgressFile, Ticker, index_build_poll

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql as pgsql

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None
    pgsql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc


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
KNOWN_BAD_VERSIONS = {
    "0.2.7": "inserts silently corrupt ivfflat indexes (fixed in 0.3.1; rebuild ivfflat indexes after upgrading)",
    "0.3.0": "inserts silently corrupt ivfflat indexes (fixed in 0.3.1; rebuild ivfflat indexes after upgrading)",
}
EF_SEARCH_STEPS = (40, 64, 100, 150, 200, 300, 400, 600, 800, 1000)
DEFAULT_SETTINGS = {"hnsw.ef_search": 40, "ivfflat.probes": 1}


class VectorIndexError(Exception):
    """Something failed.  ``str(e)`` says what, where and what to do next; ``details`` is machine-readable."""

    def __init__(self, msg, result=None, **details):
        super(VectorIndexError, self).__init__(msg)
        self.msg = msg
        self.details = details
        self.result = result


# ---------------------------------------------------------------- helpers


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", str(v or ""))[:3]) or (0,)


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
    name = "%s_%s_%s_%s" % (decl["table"], decl["column"], method, METRICS[decl["metric"]][2])
    return name[:63]


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
    d["name"] = d.get("name") or index_name(d)
    return d


def qualified(d):
    return "%s.%s" % (d["schema"], d["table"])


def _pg_error_text(e):
    diag = getattr(e, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or str(e).strip().split("\n")[0]
    parts = [primary]
    if diag is not None and diag.message_detail:
        parts.append("DETAIL: " + diag.message_detail)
    if diag is not None and diag.message_hint:
        parts.append("HINT: " + diag.message_hint)
    if getattr(e, "pgcode", None):
        parts.append("SQLSTATE " + e.pgcode)
    return "; ".join(parts)


def connect(conn_params, application_name=APPLICATION_NAME):
    if not HAS_PSYCOPG2:
        raise VectorIndexError("the Python library psycopg2 is required (pip install psycopg2-binary): %s" % PSYCOPG2_IMPORT_ERROR)
    params = dict(conn_params)
    params.setdefault("application_name", application_name)
    where = "%s:%s/%s" % (params.get("host") or "(socket)", params.get("port") or 5432, params.get("dbname") or "?")
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as e:
        raise VectorIndexError(
            "cannot connect to %s: %s. Check host, port, credentials and that the database exists."
            % (where, str(e).strip().split("\n")[0]))
    conn.autocommit = True
    return conn


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


def extension_info(cur):
    cur.execute(
        "SELECT e.extversion, n.nspname, (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')"
        " FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'")
    row = cur.fetchone()
    if row is None:
        available = _one(cur, "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        return {"installed": None, "schema": None, "available": available}
    return {"installed": row[0], "schema": row[1], "available": row[2]}


def check_extension(cur, min_version="0.5.0", update=False, check_mode=False, where=""):
    """Version gate and optional ALTER EXTENSION vector UPDATE.  Returns (info, queries)."""
    info = extension_info(cur)
    queries = []
    if info["installed"] is None:
        raise VectorIndexError(
            "pgvector is not installed in %s (available: %s). Create it first (CREATE EXTENSION vector, the "
            "pgvector role's extension phase)." % (where, info["available"] or "none"))
    if update and info["available"] and version_tuple(info["available"]) > version_tuple(info["installed"]):
        queries.append("ALTER EXTENSION vector UPDATE")
        if not check_mode:
            cur.execute("ALTER EXTENSION vector UPDATE")
            info = extension_info(cur)
        else:
            info = dict(info, installed_after=info["available"])
    effective = info.get("installed_after") or info["installed"]
    if version_tuple(effective) < version_tuple(min_version):
        raise VectorIndexError(
            "pgvector %s is installed in %s, older than the required %s (HNSW needs 0.5.0); available: %s. "
            "Set update_extension (pgvector_update_extension) to run ALTER EXTENSION vector UPDATE, or on RDS move to a "
            "minor version that ships a newer pgvector." % (effective, where, min_version, info["available"]))
    if effective in KNOWN_BAD_VERSIONS:
        raise VectorIndexError(
            "pgvector %s in %s is a known-bad version: %s. Upgrade (ALTER EXTENSION vector UPDATE after the server "
            "ships a fixed version)." % (effective, where, KNOWN_BAD_VERSIONS[effective]))
    return info, queries


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
    if typname != "vector":
        raise VectorIndexError("column %s.%s is of type %s, not vector: only vector columns are supported"
                               % (qualified(d), d["column"], typname))
    # reltuples is an estimate (-1 before the first ANALYZE); small tables are counted exactly.
    if reltuples is None or reltuples < 200000:
        rows = _one(cur, pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(d["schema"], d["table"])))
    else:
        rows = int(reltuples)
    return {"exists": True, "rows": int(rows), "dims": typmod if typmod and typmod > 0 else None, "oid": oid}


def read_index(cur, schema, name):
    cur.execute(
        "SELECT i.relname, am.amname, opc.opcname, coalesce(i.reloptions, '{}'), x.indisvalid,"
        " obj_description(i.oid, 'pg_class'), pg_get_indexdef(i.oid), t.relname, a.attname, pg_relation_size(i.oid)"
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
    return {
        "name": row[0], "method": row[1], "opclass": row[2], "options": options, "valid": bool(row[4]),
        "comment": row[5], "meta": read_meta(row[5]), "definition": row[6], "table": row[7], "column": row[8],
        "size_bytes": int(row[9] or 0),
    }


def vector_indexes_on(cur, d):
    """Names of the hnsw/ivfflat indexes on the declared column."""
    cur.execute(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam"
        " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
        " WHERE n.nspname = %s AND t.relname = %s AND a.attname = %s AND am.amname IN ('hnsw', 'ivfflat')"
        " ORDER BY 1", (d["schema"], d["table"], d["column"]))
    return [r[0] for r in cur.fetchall()]


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
    opclass = METRICS[d["metric"]][0]
    with_ = ", ".join("%s = %d" % (k, params[k]) for k in sorted(params, key=lambda k: ("m", "ef_construction", "lists").index(k)))
    return pgsql.SQL("CREATE INDEX CONCURRENTLY {} ON {} USING {} ({} {}) WITH (" + with_ + ")").format(
        pgsql.Identifier(name or d["name"]), pgsql.Identifier(d["schema"], d["table"]),
        pgsql.SQL(d["resolved_method"]), pgsql.Identifier(d["column"]), pgsql.SQL(opclass))


def build_memory_kb(d, params, rows, dims):
    """maintenance_work_mem for a build of this index (kB): enough for the graph / the k-means sample, +25%."""
    dims = dims or 1536
    vec = dims * 4 + 8
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
            "decl": d, "dims": ts["dims"]}
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
    if existing["opclass"] != METRICS[d["metric"]][0]:
        drift.append("operator class %s, declared %s" % (existing["opclass"], METRICS[d["metric"]][0]))
    if existing["table"] != d["table"] or existing["column"] != d["column"]:
        drift.append("on %s.%s, declared %s.%s" % (existing["table"], existing["column"], d["table"], d["column"]))
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
    settings = [("maintenance_work_mem", format_kb(mwm)), ("statement_timeout", "%ds" % int(timeout) if timeout else "0")]
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
        text = _pg_error_text(e)
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
                   parallel_workers=None, build_timeout=3600, check_mode=False, progress_file="", progress_interval=10):
    """Bring the declared vector indexes to their declaration.

    Returns {changed, queries, indexes: [plan...], extension: {installed, available}, deferred, problems, diff}.
    """
    conn = connect(conn_params)
    where = "database %s" % conn.get_dsn_parameters().get("dbname")
    result = {"changed": False, "queries": [], "indexes": [], "deferred": [], "problems": [], "warnings": []}
    try:
        cur = conn.cursor()
        info, queries = check_extension(cur, min_version, update_extension, check_mode, where)
        result["extension"] = info
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
                    result["queries"].extend(apply_plan(conn, p, settings, ProgressFile(progress_file) if progress_file else None,
                                                        conn_params, progress_interval))
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
        raise VectorIndexError("vector index management on %s failed: %s" % (where, _pg_error_text(e)),
                               result=result, sqlstate=getattr(e, "pgcode", None))
    finally:
        conn.close()


# ---------------------------------------------------------------- recall


def _vec_literal(v):
    return v if isinstance(v, str) else "[" + ",".join(repr(float(x)) for x in v) + "]"


def sample_queries(cur, d, sample_size, seed=42):
    """Up to ``sample_size`` stored vectors (ctid, text) chosen reproducibly."""
    rows = table_state(cur, d)["rows"]
    if rows == 0:
        return []
    pct = min(100.0, 100.0 * sample_size * 3.0 / rows)
    cur.execute(pgsql.SQL("SELECT ctid::text, {}::text FROM {} TABLESAMPLE BERNOULLI (%s) REPEATABLE (%s) LIMIT %s").format(
        pgsql.Identifier(d["column"]), pgsql.Identifier(d["schema"], d["table"])), (pct, seed, sample_size))
    got = cur.fetchall()
    if len(got) < sample_size and len(got) < rows:
        cur.execute(pgsql.SQL("SELECT ctid::text, {}::text FROM {} LIMIT %s").format(
            pgsql.Identifier(d["column"]), pgsql.Identifier(d["schema"], d["table"])), (sample_size,))
        got = cur.fetchall()
    return got


def _knn(cur, d, qvec, k, exclude):
    op = METRICS[d["metric"]][1]
    cur.execute(pgsql.SQL("SELECT ctid::text FROM {} ORDER BY {} " + op + " %s::vector LIMIT %s").format(
        pgsql.Identifier(d["schema"], d["table"]), pgsql.Identifier(d["column"])), (qvec, k + 1))
    ids = [r[0] for r in cur.fetchall() if r[0] != exclude]
    return ids[:k]


def exact_truth(conn, d, queries, k):
    """Exact top-k for each query (index and bitmap scans off), and the median exact latency in ms."""
    cur = conn.cursor()
    cur.execute("BEGIN")
    try:
        cur.execute("SET LOCAL enable_indexscan = off")
        cur.execute("SET LOCAL enable_bitmapscan = off")
        truth, times = [], []
        for ctid, vec in queries:
            t0 = time.perf_counter()
            truth.append(_knn(cur, d, vec, k, ctid))
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        cur.execute("ROLLBACK")
    return truth, (statistics.median(times) if times else None)


def index_recall(conn, d, queries, truth, k, settings):
    """Recall@k and median latency (ms) with the index forced and ``settings`` (GUC: value) applied."""
    cur = conn.cursor()
    cur.execute("BEGIN")
    try:
        cur.execute("SET LOCAL enable_seqscan = off")
        for name, value in settings.items():
            cur.execute("SELECT set_config(%s, %s, true)", (name, str(value)))
        used = _index_used(cur, d, queries[0][1]) if queries else None
        if used is not None and used != d["name"]:
            raise VectorIndexError(
                "the planner searches %s with index %s, not %s: with two vector indexes of the same operator class on "
                "one column the recall of one cannot be measured; drop the one the application does not need"
                % (qualified(d), used, d["name"]), index=d["name"], index_used=used)
        hits, total, times = 0, 0, []
        for (ctid, vec), want in zip(queries, truth):
            t0 = time.perf_counter()
            got = _knn(cur, d, vec, k, ctid)
            times.append((time.perf_counter() - t0) * 1000)
            hits += len(set(got) & set(want))
            total += len(want)
    finally:
        cur.execute("ROLLBACK")
    return (hits / float(total) if total else 1.0), (statistics.median(times) if times else None)


def _index_used(cur, d, qvec):
    op = METRICS[d["metric"]][1]
    cur.execute(pgsql.SQL("EXPLAIN (FORMAT JSON) SELECT ctid FROM {} ORDER BY {} " + op + " %s::vector LIMIT 1").format(
        pgsql.Identifier(d["schema"], d["table"]), pgsql.Identifier(d["column"])), (qvec,))
    plan = cur.fetchone()[0]
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("Index Name"):
                return node["Index Name"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _guc_for(method):
    return "hnsw.ef_search" if method == "hnsw" else "ivfflat.probes"


def recall_check(conn_params, indexes, k=10, sample_size=50, min_rows=1000, threshold=0.9, settings=None):
    """Read-only recall@k of each declared index with the settings the app gets (database/role defaults).

    Returns {ok, checks: [{name, table, status: pass|fail|skipped, recall, ...}], summary}.
    """
    conn = connect(conn_params, application_name="pgvector_recall_check")
    checks = []
    try:
        cur = conn.cursor()
        cur.execute("SET default_transaction_read_only = on")
        for decl in indexes:
            d = normalize(decl)
            c = {"name": d["name"], "table": qualified(d), "k": k, "threshold": threshold}
            ts = table_state(cur, d)
            idx = read_index(cur, d["schema"], d["name"]) if ts["exists"] else None
            c["rows"] = ts["rows"]
            if not ts["exists"]:
                c.update(status="skipped", detail="skipped: table %s does not exist" % qualified(d))
            elif idx is None:
                c.update(status="fail", detail="index %s does not exist" % d["name"],
                         cause="the index was never built or was dropped", fix="run the pgvector role (indexes phase)")
            elif not idx["valid"]:
                c.update(status="fail", detail="index %s is INVALID" % d["name"],
                         cause="an interrupted CREATE INDEX CONCURRENTLY", fix="run the pgvector role: it drops and rebuilds it")
            elif ts["rows"] < max(min_rows, k + 1):
                c.update(status="skipped", detail="skipped: fewer than %d rows (%d)" % (max(min_rows, k + 1), ts["rows"]))
            else:
                d["resolved_method"] = idx["method"]
                d["metric"] = OPCLASS_METRIC.get(idx["opclass"], d["metric"])
                guc = _guc_for(idx["method"])
                value = (settings or {}).get(guc) or _one(cur, "SELECT current_setting(%s)", (guc,))
                queries = sample_queries(cur, d, sample_size)
                truth, exact_ms = exact_truth(conn, d, queries, k)
                try:
                    recall, ms = index_recall(conn, d, queries, truth, k, {guc: value})
                except VectorIndexError as e:
                    c.update(status="fail", detail=e.msg, cause="two vector indexes compete", fix="drop the undeclared one")
                    checks.append(c)
                    continue
                c.update(recall=round(recall, 4), median_ms=round(ms, 2), exact_median_ms=round(exact_ms, 2),
                         queries=len(queries), setting={guc: int(value)}, method=idx["method"])
                c["detail"] = "%s recall@%d %.3f at %s=%s, %.1f ms median (exact %.1f ms), %d queries" % (
                    d["name"], k, recall, guc, value, ms, exact_ms, len(queries))
                if recall >= threshold:
                    c["status"] = "pass"
                else:
                    c["status"] = "fail"
                    c.update(_low_recall_cause(idx, ts["rows"], guc, value))
                    c["detail"] += " (below %.2f)" % threshold
            checks.append(c)
    finally:
        conn.close()
    for c in checks:
        if c["status"] == "fail" and c.get("fix") and "fix:" not in c["detail"]:
            c["detail"] += "; likely cause: %s; fix: %s" % (c.get("cause", "unknown"), c["fix"])
    ok = all(c["status"] != "fail" for c in checks)
    return {"ok": ok, "checks": checks, "summary": "; ".join(c["detail"] for c in checks) or "no vector indexes declared"}


def _low_recall_cause(idx, rows, guc, value):
    if idx["method"] == "ivfflat":
        built = idx["meta"].get("built_rows")
        lists = actual_params(idx)["lists"]
        if built is None or rows > 2 * max(int(built or 0), 1):
            cause = ("IVFFlat lists trained on %s rows, the table holds %d (an IVFFlat index built before the data, as the "
                     "runbook's step 5 does, has untrained lists)" % ("an unknown number of" if built is None else built, rows))
            fix = "rebuild it on the loaded table (pgvector_allow_rebuild: true), or use method hnsw"
        else:
            cause = "ivfflat.probes=%s searches %s of %d lists" % (value, value, lists)
            fix = "raise ivfflat.probes (pgvector_recall_target tuning), or rebuild with method hnsw"
    else:
        cause = "hnsw.ef_search=%s is too small for this data" % value
        fix = "let the role tune ef_search (pgvector_recall_target), or rebuild with larger m / ef_construction"
    return {"cause": cause, "fix": fix}


# ---------------------------------------------------------------- tuning


def current_setting_at(cur, scope, guc, role=None):
    """The value stored by ALTER DATABASE / ALTER ROLE ... IN DATABASE ... SET for ``guc`` (or None)."""
    if scope == "role":
        cur.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
                    " WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND r.rolname = %s",
                    (role,))
    else:
        cur.execute("SELECT s.setconfig FROM pg_db_role_setting s"
                    " WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.setrole = 0")
    row = cur.fetchone()
    for item in (row[0] if row else None) or []:
        k, _, v = item.partition("=")
        if k == guc:
            return v
    return None


def _set_sql(cur, scope, guc, value, role=None):
    db = _one(cur, "SELECT current_database()")
    if scope == "role":
        return pgsql.SQL("ALTER ROLE {} IN DATABASE {} SET " + guc + " = %s").format(
            pgsql.Identifier(role), pgsql.Identifier(db)).as_string(cur) % int(value)
    return pgsql.SQL("ALTER DATABASE {} SET " + guc + " = %s").format(pgsql.Identifier(db)).as_string(cur) % int(value)


def candidates(method, lists, bound):
    if method == "hnsw":
        return [v for v in EF_SEARCH_STEPS if v <= bound] or [bound]
    top = min(bound, lists)
    out, p = [], 1
    while p < top:
        out.append(p)
        p *= 2
    out.append(top)
    return sorted(set(out))


def measure_curve(conn, d, method, lists, queries, truth, k, target, bound):
    """Recall at increasing ef_search / probes until ``target`` is reached: [(value, recall, ms)]."""
    guc = _guc_for(method)
    curve = []
    for v in candidates(method, lists, bound):
        recall, ms = index_recall(conn, d, queries, truth, k, {guc: v})
        curve.append((v, round(recall, 4), round(ms, 2)))
        if recall >= target:
            break
    return curve


def tune(conn_params, indexes, recall_target=0.95, k=10, sample_size=50, min_rows=1000, scope="database", role=None,
         max_ef_search=400, max_probes=None, growth_factor=2.0, check_mode=False):
    """Set hnsw.ef_search / ivfflat.probes at database or role level to the smallest value reaching ``recall_target``.

    Returns {changed, queries, settings: {guc: value}, indexes: [...], problems, recommendations, skipped}.
    """
    if scope not in ("database", "role", "none"):
        raise VectorIndexError("tuning scope must be database, role or none, got %r" % (scope,))
    if scope == "role" and not role:
        raise VectorIndexError("tuning scope role needs the role name (pgvector_tuning_role)")
    conn = connect(conn_params, application_name="pgvector_tune")
    result = {"changed": False, "queries": [], "settings": {}, "indexes": [], "problems": [], "recommendations": [],
              "skipped": [], "warnings": []}
    try:
        cur = conn.cursor()
        needed = {}  # guc -> max value over indexes
        comments = []
        for decl in indexes:
            d = normalize(decl)
            ts = table_state(cur, d)
            idx = read_index(cur, d["schema"], d["name"]) if ts["exists"] else None
            entry = {"name": d["name"], "table": qualified(d), "rows": ts["rows"]}
            result["indexes"].append(entry)
            if idx is None or not idx["valid"]:
                entry["status"] = "skipped"
                entry["detail"] = "skipped: index %s %s" % (d["name"], "is INVALID" if idx else "does not exist (yet)")
                result["skipped"].append(entry["detail"])
                continue
            if ts["rows"] < max(min_rows, k + 1):
                entry["status"] = "skipped"
                entry["detail"] = ("skipped: fewer than %d rows (%d) in %s, too few to measure recall; the server "
                                   "defaults stay" % (max(min_rows, k + 1), ts["rows"], qualified(d)))
                result["skipped"].append(entry["detail"])
                continue
            method = idx["method"]
            guc = _guc_for(method)
            lists = actual_params(idx).get("lists")
            bound = max_ef_search if method == "hnsw" else (max_probes or lists)
            meta = idx["meta"]
            stored = current_setting_at(cur, scope, guc, role) if scope != "none" else None
            tuned_rows = meta.get("tuned_rows")
            if (stored is not None and tuned_rows and meta.get(guc) is not None
                    and ts["rows"] <= growth_factor * tuned_rows and int(stored) >= int(meta[guc])):
                entry.update(status="kept", value=int(meta[guc]), detail="%s=%s tuned at %d rows, table now %d (re-tuned beyond %.1fx)"
                             % (guc, meta[guc], tuned_rows, ts["rows"], growth_factor))
                needed[guc] = max(needed.get(guc, 0), int(meta[guc]))
                continue
            d["resolved_method"] = method
            d["metric"] = OPCLASS_METRIC.get(idx["opclass"], d["metric"])
            queries = sample_queries(cur, d, sample_size)
            truth, exact_ms = exact_truth(conn, d, queries, k)
            try:
                curve = measure_curve(conn, d, method, lists, queries, truth, k, recall_target, bound)
            except VectorIndexError as e:
                entry.update(status="skipped", detail="skipped: " + e.msg)
                result["skipped"].append(entry["detail"])
                result["problems"].append(e.msg)
                continue
            value, recall, ms = curve[-1]
            entry.update(status="measured", value=value, recall=recall, median_ms=ms, exact_median_ms=round(exact_ms, 2),
                         curve=curve, queries=len(queries))
            entry["detail"] = "%s: recall@%d %.3f at %s=%d, %.1f ms median (exact %.1f ms), %d rows, %d queries; tried %s" % (
                d["name"], k, recall, guc, value, ms, exact_ms, ts["rows"], len(queries),
                ", ".join("%d -> %.3f" % (v, r) for v, r, _ in curve))
            if recall < recall_target:
                rec = ("%s: recall@%d %.3f at the bound %s=%d, below the target %.2f. Rebuild with %s (allow a rebuild and "
                       "declare it in pgvector_indexes), or raise the bound." % (
                           d["name"], k, recall, guc, value, recall_target,
                           "larger m / ef_construction (for example m=32, ef_construction=128)" if method == "hnsw"
                           else "lists recomputed on the current rows, or method hnsw"))
                result["recommendations"].append(rec)
                result["warnings"].append(rec)
            needed[guc] = max(needed.get(guc, 0), value)
            new_meta = dict(meta, tuned_rows=ts["rows"])
            new_meta[guc] = value
            if new_meta != meta:
                comments.append((d, new_meta))
        result["settings"] = needed
        if scope != "none":
            for guc, value in sorted(needed.items()):
                stored = current_setting_at(cur, scope, guc, role)
                if stored is None or int(stored) != int(value):
                    stmt = _set_sql(cur, scope, guc, value, role)
                    result["queries"].append(stmt)
                    result.setdefault("diff", {"before": "", "after": ""})
                    result["diff"]["before"] += "%s = %s\n" % (guc, stored if stored is not None else "(server default)")
                    result["diff"]["after"] += "%s = %s\n" % (guc, value)
                    if not check_mode:
                        cur.execute(stmt)
        for d, meta in comments:
            stmt = pgsql.SQL("COMMENT ON INDEX {} IS %s").format(pgsql.Identifier(d["schema"], d["name"]))
            result["queries"].append(stmt.as_string(cur) % ("'" + meta_comment(meta) + "'"))
            if not check_mode:
                cur.execute(stmt, (meta_comment(meta),))
        result["changed"] = bool(result["queries"])
        return result
    except psycopg2.Error as e:
        raise VectorIndexError("tuning query-time defaults failed: %s" % _pg_error_text(e), result=result,
                               sqlstate=getattr(e, "pgcode", None))
    finally:
        conn.close()


# ---------------------------------------------------------------- module glue


CONNECTION_ARGS = dict(
    login_user=dict(type="str", default="postgres"),
    login_db=dict(type="str", required=True, aliases=["db"]),
    **pg_connection.CONNECTION_ARGS
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
    ),
)


def conn_params(p):
    """psycopg2.connect keyword arguments from the modules' connection options."""
    return pg_connection.conn_params(p, p["login_db"])
