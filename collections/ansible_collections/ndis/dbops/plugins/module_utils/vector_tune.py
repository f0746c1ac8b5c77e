# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Query-time defaults from measured recall (``tune``) and the read-only recall check
(``recall_check``): the engine behind ``ndis.dbops.pgvector_tune`` and
``ndis.dbops.pgvector_recall_info``.  Measurements come from module_utils/vector_recall.py.

The queries: the app's own, sampled as it searches (module_utils/vector_sample.py, ``vr.AppQueries``), when the
sample holds at least ``sample_min_queries`` of the index; otherwise held-out rows (``vr.Sample``), whose figures are
labelled so and lowered by ``heldout_margin`` (a held-out row is still a node of the graph and overstates the recall
of an unseen query), the tuner then needing their lower bound to reach the target plus the margin.  Once enough
queries were sampled since a measurement (``drift_queries``), tuning measures the newest at the stored setting and
tunes again when they no longer reach the target (query drift); ``sample_recall`` is health's measurement of the
newest sampled queries.

Tuning: for each declared index, the queries are measured at increasing
``hnsw.ef_search`` (``ivfflat.probes``) and the smallest value whose 95% lower confidence bound
reaches the target is stored (``ALTER DATABASE ... SET`` or ``ALTER ROLE ... IN DATABASE ...
SET``).  The sample starts at ``sample_size`` queries and grows, up to ``max_sample_size``, only
for a value worth certifying (``choose``: the values in ascending order, a sequential test with an
indifference zone of ``INDIFFERENCE`` above the target).

The measurement's state is kept in the database, in the index's COMMENT
(``ndis.dbops.pgvector {"recall": {...}}``): the value, estimate, bounds, queries, rows, the
table's insert/update/delete counters (pg_stat_all_tables) and the index's relfilenode at
measurement time.  Tuning and the recall check re-measure only when something it depends on
changed: a share of rows (``remeasure_share``) inserted, updated or deleted since, the index
rebuilt (new relfilenode, or the COMMENT replaced by a build), counters reset (a crash or a
restore), the stored setting changed, or k / the target / the filter / the iterative-scan
settings differ, or the queries would now come from elsewhere.  Otherwise the recall check reports the stored
estimate and bound.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_extension as vext
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_recall as vr
from ansible_collections.ndis.dbops.plugins.module_utils import vector_sample as vs

# ~1.6x apart: finer steps buy little latency and make the decision between neighbours unclear (more queries)
EF_SEARCH_STEPS = (40, 64, 100, 160, 250, 400, 640, 1000)
ITERATIVE_SCAN = ("off", "strict_order", "relaxed_order")
FILTERED_QUERIES = 200
# Recall within this much above the target is the indifference zone: the sample does not grow to certify such a
# value, the next higher one is stored (see growth()).
INDIFFERENCE = 0.01
# How much held-out rows overstate the recall of queries the graph has never seen, subtracted from their figures when
# the app's query sample is too small to measure on (bench/bench_vector.py and docs/vector-search.md: the largest
# bias measured near a 0.95 target was 0.026, on many small clusters; the margin is taken above it).
HELD_OUT_MARGIN = 0.03


# ---------------------------------------------------------------- settings


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def guc_for(method):
    return "hnsw.ef_search" if method == "hnsw" else "ivfflat.probes"


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


def app_setting(cur, guc, role=None):
    """What a new session of ``role`` gets for ``guc``: its role-in-database setting, the database's, else the server's."""
    value = current_setting_at(cur, "role", guc, role) if role else None
    if value is None:
        value = current_setting_at(cur, "database", guc)
    if value is None:
        cur.execute("SELECT '[1]'::vector")  # loads pgvector, which defines its settings in this session
        value = vi._one(cur, "SELECT current_setting(%s, true)", (guc,))
    return value


def app_extra(cur, method, role, managed):
    """The iterative-scan settings a new session of the application gets for an index of ``method``
    (``managed``: the values the tuner stores, overriding what is stored now)."""
    out = {}
    for g in ("hnsw.iterative_scan", "hnsw.max_scan_tuples") if method == "hnsw" else ("ivfflat.iterative_scan",):
        v = managed[g] if g in managed else app_setting(cur, g, role)
        if v is not None:
            out[g] = int(v) if str(v).isdigit() else v
    return out


def _set_sql(cur, scope, guc, value, role=None):
    db = vi._one(cur, "SELECT current_database()")
    if scope == "role":
        stmt = vi.pgsql.SQL("ALTER ROLE {} IN DATABASE {} SET " + guc + " = {}").format(
            vi.pgsql.Identifier(role), vi.pgsql.Identifier(db), _value_sql(value))
    else:
        stmt = vi.pgsql.SQL("ALTER DATABASE {} SET " + guc + " = {}").format(vi.pgsql.Identifier(db), _value_sql(value))
    return stmt.as_string(cur)


def _value_sql(value):
    if isinstance(value, int) or str(value).isdigit():
        return vi.pgsql.SQL(str(int(value)))
    return vi.pgsql.Literal(str(value))


def iterative_settings(methods, iterative_scan, max_scan_tuples):
    """The iterative-scan GUCs for the index methods present (IVFFlat has no strict order: it gets relaxed_order)."""
    out = {}
    if iterative_scan is None:
        return out
    if "hnsw" in methods:
        out["hnsw.iterative_scan"] = iterative_scan
        if max_scan_tuples and iterative_scan != "off":
            out["hnsw.max_scan_tuples"] = int(max_scan_tuples)
    if "ivfflat" in methods:
        out["ivfflat.iterative_scan"] = "off" if iterative_scan == "off" else "relaxed_order"
    return out


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


# ---------------------------------------------------------------- measurement state


def measured_state(cur, d, idx):
    """Counters and identity that decide whether a stored measurement still holds."""
    cur.execute("SELECT coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_del, 0),"
                " pg_relation_filenode(%s::oid) FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid"
                " WHERE c.oid = %s::regclass", (idx["oid"], vi.qualified(d)))
    ins, upd, dele, filenode = cur.fetchone()
    return {"counters": [int(ins), int(upd), int(dele)], "filenode": int(filenode or 0)}


def changed_share(stored, now):
    """Share of the measured rows inserted, updated or deleted since (None: unknown, the counters went back)."""
    then = stored.get("counters") or []
    if len(then) != 3:
        return None
    delta = [a - b for a, b in zip(now["counters"], then)]
    if any(x < 0 for x in delta):
        return None
    return sum(delta) / float(max(int(stored.get("rows") or 0), 1))


def why_remeasure(stored, now, expect, remeasure_share):
    """None when the stored measurement holds, else the reason to measure again."""
    if not stored:
        return "no measurement stored"
    if stored.get("filenode") != now["filenode"]:
        return "the index was rebuilt since the last measurement"
    if "source" in expect and stored.get("source") != expect["source"]:
        return ("%s: measured on %s" % (source_reason(expect), SOURCE_NAMES.get(stored.get("source"), "held-out rows without "
                                                                                        "their optimism margin")))
    for key in ("guc", "value", "k", "filter", "extra", "margin"):
        if key in expect and stored.get(key) != expect[key]:
            return "%s is %r, measured with %r" % (key, expect[key], stored.get(key))
    if "target" in expect and stored.get("target") is not None and stored["target"] != expect["target"]:
        return "target is %r, measured for %r" % (expect["target"], stored["target"])
    share = changed_share(stored, now)
    if share is None:
        return "the table's change counters were reset (a restart after a crash, or a restore) since the last measurement"
    if share > remeasure_share:
        return "%.1f%% of the rows changed since the last measurement (re-measured beyond %.1f%%)" % (100 * share, 100 * remeasure_share)
    return None


SOURCE_NAMES = {"sample": "the app's sampled queries", "held_out": "held-out rows"}


def source_reason(expect):
    if expect["source"] == "sample":
        return "the query sample holds %d queries of this index (at least %d)" % (expect["sample_queries"],
                                                                                   expect["sample_min_queries"])
    return "the query sample holds %d queries of this index (fewer than %d)" % (expect.get("sample_queries") or 0,
                                                                                  expect["sample_min_queries"])


def source_text(st):
    """Which queries a figure came from, how many, and when: the words verify, health and the tuner print."""
    if st.get("source") == "sample":
        return "%d sampled app queries (searched %s to %s)" % (st["queries"], st.get("sample_oldest_at") or "?",
                                                                st.get("sample_newest_at") or "?")
    if st.get("source") == "held_out":
        raw = st.get("held_out") or {}
        return ("%d held-out rows, corrected by -%.2f for their optimism (held-out estimate %.3f, lower bound %.3f; "
                "fewer than %d sampled app queries)" % (st["queries"], st.get("margin") or 0, raw.get("recall", 0),
                                                        raw.get("lower", 0), st.get("sample_min_queries") or 0))
    return "%s held-out rows" % st["queries"]


def corrected(st, margin):
    """A held-out figure with the optimism margin taken off: what unseen queries are expected to get at least."""
    out = dict(st)
    for key in ("recall", "lower", "upper"):
        if st.get(key) is not None:
            out[key] = round(max(0.0, st[key] - margin), 4)
    out["held_out"] = {"recall": st["recall"], "lower": st["lower"], "upper": st["upper"]}
    return out


def _measure_line(name, k, st, guc, value, extra=""):
    return "%s: recall@%d %.3f (95%% lower bound %.3f) at %s=%s on %s%s" % (
        name, k, st["recall"], st["lower"], guc, value, source_text(st), extra)


def _sample_filtered_line(st):
    f = st.get("sample_filtered")
    if not f:
        return ""
    return "; sampled filtered queries (%d, %d filters, each with its own): recall@%s %.3f (95%% lower bound %.3f), " \
           "%.0f%% got k rows" % (f["queries"], f.get("filters", 0), st.get("k", 10), f["recall"], f["lower"],
                                  100 * (f["full_k_share"] or 0))


def query_source(cur, d, query_sample, min_queries, retention_days=None):
    """(source, sample state): the app's sampled queries when the sample holds at least ``min_queries`` of this
    index, else held-out rows.  The cheap check: one statement on the bounded sample table."""
    qs = vs.state(cur, query_sample["schema"], query_sample["table"], d, retention_days) if query_sample else None
    return ("sample" if qs and qs["queries"] >= min_queries else "held_out"), qs


def measurement_sample(cur, d, rows, k, source, query_sample, sample_size, max_sample_size, retention_days=None):
    """The queries a measurement runs on: the app's newest sampled queries, or held-out rows."""
    if source == "sample":
        rd = vs.read(cur, query_sample["schema"], query_sample["table"], d, max_sample_size, retention_days)
        s = vr.AppQueries(cur, d, rd, k, sample_size, max_sample_size)
        s.newest_at, s.oldest_at, s.skipped = rd["newest_at"], rd["oldest_at"], rd["skipped"]
        return s
    return vr.Sample(cur, d, rows, k, sample_size, max_sample_size)


def labelled(st, sample, source, margin, min_queries):
    """The figure as stored and reported: its source, and for held-out rows the margin taken off."""
    out = dict(st) if source == "sample" else corrected(st, margin)
    out.update(source=source, margin=None if source == "sample" else margin, sample_min_queries=min_queries)
    if source == "sample":
        out.update(sample_newest_at=sample.newest_at, sample_oldest_at=sample.oldest_at,
                   sample_filtered=st.get("filtered"))
    out.pop("filtered", None)
    return out


def _filtered_line(st):
    return "filtered (%s): recall@%d %.3f (95%% lower bound %.3f), %.0f%% of queries got k rows%s" % (
        st["filter"], st["k"], st["recall"], st["lower"], 100 * (st["full_k_share"] or 0),
        "" if st.get("index_used") else ", planner did not use the index")


def measure_filtered(sample_args, d, settings, k):
    cur, rows = sample_args
    fs = vr.Sample(cur, d, rows, k, FILTERED_QUERIES, FILTERED_QUERIES, filter_sql=d["filter"])
    if fs.n == 0:
        return None
    st = fs.measure(settings, force_index=False)
    vr.set_local(cur, settings)
    st.update(filter=d["filter"], k=k, index_used=vr.index_used(cur, d, fs.vecs[0], d["filter"]) == d["name"])
    return st


def settled_below(st, target, indifference=INDIFFERENCE):
    """True when ``st`` will not be stored: its upper bound is under the target, or it is not certified and its
    estimate lies inside the indifference zone (under ``target + indifference``)."""
    return st["upper"] < target or (st["lower"] < target and st["recall"] < target + indifference)


def growth(st, target, cap, indifference=INDIFFERENCE):
    """The sample size at which ``st`` (a value not yet certified) is expected to get its lower bound to ``target``,
    or None when growing is not worth it.

    A value is worth certifying only when its estimate clears the target by the indifference zone (``st["recall"]
    >= target + indifference``): closer to the target, certifying it needs more than (1.645 sigma / indifference)^2
    queries (sigma, the per-query spread, is about 0.1 near recall 0.95: some 270), without bound as the estimate
    nears the target, so the safe higher value is taken instead.  The bound's half-width shrinks as 1/sqrt(n): the
    projection is n (half-width / (estimate - target))^2, with a fifth more as margin, at least 1.5 n, at most the cap.
    """
    n = st["queries"]
    if st["lower"] >= target or settled_below(st, target, indifference) or n >= cap:
        return None
    half = max(st["recall"] - st["lower"], 1e-9)
    need = n * (half / (st["recall"] - target)) ** 2 * 1.2
    return int(min(cap, max(need, 1.5 * n)))


def choose(sample, guc, values, target, settings, indifference=INDIFFERENCE):
    """Smallest value whose lower bound reaches ``target``, the values measured in ascending order.

    Each value is measured on the current sample.  Certified (lower bound >= target): it is the answer, and no
    value above it is ever searched.  Settled below (``settled_below``: its upper bound is under the target, or its
    estimate lies inside the indifference zone): the next value is measured.  Otherwise (its estimate clears the
    target by ``indifference`` but its bound does not yet), the sample grows to the size ``growth`` projects for it
    and the value is measured again; at the cap it counts as settled.  This is a sequential test with an
    indifference zone: a value within ``indifference`` above the target is not worth the queries that certifying it
    takes, so the next higher one is stored, whose own bound must reach the target.  The sample size, and so the
    tuning cost per row, is bounded by the indifference zone, not by how close a value's recall falls to the target.

    Why ascending: an index search costs about in proportion to ef_search (probes), and the values are a geometric
    series (~1.6x apart), so the values below the chosen one together cost less than about 1.7 times the chosen
    one, and nothing is spent above it.  A binary search measures values above the answer (the dearest searches)
    to save measuring cheap ones below it.  Values measured before a growth keep their verdict (they were settled
    below on the smaller sample).  Returns (value or None, {value: stats}, rounds: the sample sizes used).
    """
    stats, rounds = {}, 1
    for value in values:
        run = dict(settings, **{guc: value})
        st = sample.measure(run)
        while st["lower"] < target:
            grow_to = growth(st, target, sample.cap, indifference)
            if grow_to is None or not sample.grow(grow_to):
                break
            rounds += 1
            st = sample.measure(run)
        stats[value] = st
        if st["lower"] >= target:
            return value, stats, rounds
    return None, stats, rounds


def settle(sample, guc, values, bound, target, settings):
    """``choose``, then the figure that is stored: (value, stats of the value, {value: stats}, rounds, reached).

    When no value is certified on the sample it was judged on, the bound (the largest value measured) is stored, and
    its figure is the one verify and any warning report, so it is measured on the whole sample (the cap), not on the
    few queries that sufficed to rule the smaller values out.  If that whole-sample lower bound reaches the target,
    the target is reached at the bound (``reached``): a value settled inside the indifference zone on a small sample
    can be certified on the whole one, and then nothing is wrong with the index.
    """
    value, stats, rounds = choose(sample, guc, values, target, settings)
    reached = value is not None
    if not reached:
        value = max(stats) if stats else bound
        if sample.grow(sample.cap):
            rounds += 1
    st = sample.measure(dict(settings, **{guc: value}))
    if not reached and st["lower"] >= target:
        reached = True
    return value, st, stats, rounds, reached


def bound_warning(name, k, guc, value, st, target, method):
    """The warning and advice for an index whose measured figure at the bound is below the target; None when the
    figure's lower bound reaches it (no warning, no rebuild advice)."""
    if st["lower"] >= target:
        return None
    return ("%s: the 95%% lower bound of recall@%d at the bound %s=%d is %.3f, below the target %.2f. Rebuild with %s "
            "(allow a rebuild and declare it in pgvector_indexes), or raise the bound." % (
                name, k, guc, value, st["lower"], target,
                "larger m / ef_construction (for example m=32, ef_construction=128)" if method == "hnsw"
                else "lists recomputed on the current rows, or method hnsw"))


# ---------------------------------------------------------------- tuning


def tune(conn_params, indexes, recall_target=0.95, k=10, sample_size=100, max_sample_size=800, min_rows=1000,
         scope="database", role=None, max_ef_search=400, max_probes=None, remeasure_share=0.1,
         iterative_scan=None, max_scan_tuples=None, check_mode=False, query_sample=None, sample_min_queries=100,
         heldout_margin=HELD_OUT_MARGIN, drift_queries=100, sample_retention_days=None):
    """Set hnsw.ef_search / ivfflat.probes at database or role level to the smallest value whose 95% lower bound
    reaches ``recall_target``; with ``iterative_scan``, also the iterative-scan settings.

    Returns {changed, queries, settings: {guc: value}, indexes: [...], problems, recommendations, skipped}.
    """
    vr.require_numpy()
    if scope not in ("database", "role", "none"):
        raise vi.VectorIndexError("tuning scope must be database, role or none, got %r" % (scope,))
    if scope == "role" and not role:
        raise vi.VectorIndexError("tuning scope role needs the role name (pgvector_tuning_role)")
    if iterative_scan is not None and iterative_scan not in ITERATIVE_SCAN:
        raise vi.VectorIndexError("iterative_scan must be one of %s, got %r" % (", ".join(ITERATIVE_SCAN), iterative_scan))
    conn = vi.connect(conn_params, application_name="pgvector_tune")
    result = {"changed": False, "queries": [], "settings": {}, "indexes": [], "problems": [], "recommendations": [],
              "skipped": [], "warnings": []}
    try:
        cur = conn.cursor()
        version = vext.extension_info(cur)["installed"]
        if iterative_scan not in (None, "off") and not vext.supports_iterative_scan(version):
            raise vi.VectorIndexError(
                "iterative_scan %s needs pgvector %s or later, the database has %s: set pgvector_iterative_scan: off, or "
                "update pgvector (pgvector_update_extension)" % (iterative_scan, vext.ITERATIVE_SCAN_SINCE, version))
        if not vext.supports_iterative_scan(version):
            iterative_scan = None  # the settings do not exist before 0.8.0
        needed, comments, methods = {}, [], set()
        found = []
        for decl in indexes:
            d = vi.normalize(decl)
            ts = vi.table_state(cur, d)
            idx = vi.read_index(cur, d["schema"], d["name"]) if ts["exists"] else None
            found.append((d, ts, idx))
            if idx is not None and idx["valid"]:
                methods.add(idx["method"])
        managed = iterative_settings(methods, iterative_scan, max_scan_tuples)
        app_role = role if scope == "role" else None
        for d, ts, idx in found:
            entry = {"name": d["name"], "table": vi.qualified(d), "rows": ts["rows"]}
            result["indexes"].append(entry)
            if idx is None or not idx["valid"]:
                entry["status"] = "skipped"
                entry["detail"] = "skipped: index %s %s" % (d["name"], "is INVALID" if idx else "does not exist (yet)")
                result["skipped"].append(entry["detail"])
                continue
            if ts["rows"] < max(min_rows, k + 1):
                entry["status"] = "skipped"
                entry["detail"] = ("skipped: fewer than %d rows (%d) in %s, too few to measure recall; the server "
                                   "defaults stay" % (max(min_rows, k + 1), ts["rows"], vi.qualified(d)))
                result["skipped"].append(entry["detail"])
                continue
            method = idx["method"]
            guc = guc_for(method)
            lists = vi.actual_params(idx).get("lists")
            bound = max_ef_search if method == "hnsw" else (max_probes or lists)
            d["resolved_method"] = method
            d["metric"] = vi.OPCLASS_METRIC.get(idx["opclass"].replace("halfvec_", "vector_"), d["metric"])
            meta = idx["meta"]
            stored = meta.get("recall") or {}
            now = measured_state(cur, d, idx)
            setting = current_setting_at(cur, scope, guc, role) if scope != "none" else None
            extra = app_extra(cur, method, app_role, managed) if vext.supports_iterative_scan(version) else {}
            source, qs = query_source(cur, d, query_sample, sample_min_queries, sample_retention_days)
            expect = {"guc": guc, "k": k, "filter": d["filter"], "extra": extra, "target": recall_target,
                      "source": source, "margin": None if source == "sample" else heldout_margin,
                      "sample_queries": (qs or {}).get("queries", 0), "sample_min_queries": sample_min_queries}
            reason = why_remeasure(stored, now, expect, remeasure_share)
            if reason is None and scope != "none" and (setting is None or not setting.isdigit() or int(setting) < int(stored["value"])):
                reason = "%s is %s where the measurement chose %s" % (guc, setting or "not set", stored["value"])
            drift = None
            if reason is None and source == "sample":
                # Query drift: enough queries sampled since the last look, measured at the stored setting.  The cheap
                # check (the count) runs on every run; the measurement only when the count says so.
                checked = int(stored.get("sample_checked_id") or stored.get("sample_newest_id") or 0)
                fresh = vs.count_since(cur, query_sample["schema"], query_sample["table"], d, checked, sample_retention_days)
                if fresh >= drift_queries:
                    vr.begin_snapshot(cur)
                    try:
                        recent = vs.read(cur, query_sample["schema"], query_sample["table"], d, sample_size,
                                         sample_retention_days)
                        look = vr.AppQueries(cur, d, recent, k, sample_size, sample_size)
                        dst = look.measure(dict(extra, **{guc: int(stored["value"])}))
                    finally:
                        vr.end_snapshot(cur)
                    drift = {"recall": dst["recall"], "lower": dst["lower"], "upper": dst["upper"],
                             "queries": dst["queries"], "newest_at": recent["newest_at"], "oldest_at": recent["oldest_at"],
                             "checked_at": _now()}
                    if dst["upper"] < recall_target:
                        reason = ("query drift: the %d newest sampled queries (searched %s to %s) find recall@%d %.3f "
                                  "(95%% upper bound %.3f) at %s=%s, below the target %.2f" % (
                                      dst["queries"], recent["oldest_at"], recent["newest_at"], k,
                                      dst["recall"], dst["upper"], guc, stored["value"], recall_target))
            if reason is None:
                entry.update(status="kept", value=stored["value"], recall=stored["recall"], lower=stored["lower"],
                             upper=stored["upper"], queries=stored["queries"], measured_at=stored.get("measured_at"),
                             queries_from=stored.get("source"))
                entry["detail"] = _measure_line(d["name"], k, stored, guc, stored["value"],
                                                ", measured %s at %d rows; %.1f%% of rows changed since (re-measured beyond %.1f%%)" % (
                                                    stored.get("measured_at"), stored.get("rows", 0),
                                                    100 * changed_share(stored, now), 100 * remeasure_share))
                entry["detail"] += _sample_filtered_line(dict(stored, k=k))
                if drift is not None:
                    entry["drift"] = drift
                    entry["detail"] += ("; the %d newest sampled queries (searched %s to %s) find %.3f (95%% lower bound "
                                        "%.3f) at the stored setting: no query drift" % (
                                            drift["queries"], drift["oldest_at"], drift["newest_at"], drift["recall"],
                                            drift["lower"]))
                    comments.append((d, dict(meta, recall=dict(stored, drift=drift, sample_checked_id=qs["newest_id"]))))
                if stored.get("filtered"):
                    entry["filtered"] = stored["filtered"]
                    entry["detail"] += "; " + _filtered_line(stored["filtered"])
                needed[guc] = max(needed.get(guc, 0), int(stored["value"]))
                continue
            # Held-out rows overstate the recall of unseen queries: their figure must reach the target plus the margin.
            judged = recall_target if source == "sample" else min(1.0, recall_target + heldout_margin)
            vr.begin_snapshot(cur)
            try:
                sample = measurement_sample(cur, d, ts["rows"], k, source, query_sample, sample_size, max_sample_size,
                                            sample_retention_days)
                value, st, stats, rounds, reached = settle(sample, guc, candidates(method, lists, bound), bound,
                                                           judged, extra)
                used = vr.index_used(cur, d, sample.vecs[0]) if sample.n else None
                exact_ms = vr.exact_latency_ms(cur, d, sample.vecs, k)
                filtered = measure_filtered((cur, ts["rows"]), d, dict(extra, **{guc: value}), k) if d["filter"] else None
            finally:
                vr.end_snapshot(cur)
            if used is not None and used != d["name"]:
                msg = ("the planner searches %s with index %s, not %s: with two vector indexes of the same operator class on "
                       "one column the recall of one cannot be measured; drop the one the application does not need"
                       % (vi.qualified(d), used, d["name"]))
                entry.update(status="skipped", detail="skipped: " + msg)
                result["skipped"].append(entry["detail"])
                result["problems"].append(msg)
                continue
            fig = labelled(st, sample, source, heldout_margin, sample_min_queries)
            curve = [[v, stats[v]["recall"], stats[v]["lower"], stats[v]["median_ms"]] for v in sorted(stats)]
            entry.update(status="measured", value=value, recall=fig["recall"], lower=fig["lower"], upper=fig["upper"],
                         queries=fig["queries"], median_ms=st["median_ms"], exact_median_ms=exact_ms, curve=curve,
                         rounds=rounds, reason=reason, truth_seconds=sample.truth_stats["seconds"],
                         truth_passes=sample.truth_stats["passes"], queries_from=source, judged_target=judged,
                         held_out=fig.get("held_out"), sample_filtered=fig.get("sample_filtered"))
            entry["detail"] = _measure_line(d["name"], k, fig, guc, value, ", %.1f ms median (exact %.1f ms), %d rows; "
                                            "measured because %s; tried %s%s" % (
                                                st["median_ms"] or 0, exact_ms or 0, ts["rows"], reason,
                                                ", ".join("%d -> %.3f (>= %.3f)" % (c[0], c[1], c[2]) for c in curve),
                                                "" if source == "sample" else " (held-out figures, judged against %.2f)"
                                                % judged))
            entry["detail"] += _sample_filtered_line(dict(fig, k=k))
            if filtered:
                entry["filtered"] = filtered
                entry["detail"] += "; " + _filtered_line(filtered)
            rec = None if reached else bound_warning(d["name"], k, guc, value, fig, recall_target, method)
            if rec:
                result["recommendations"].append(rec)
                result["warnings"].append(rec)
            needed[guc] = max(needed.get(guc, 0), value)
            state = {"guc": guc, "value": value, "k": k, "target": recall_target, "filter": d["filter"], "extra": extra,
                     "recall": fig["recall"], "lower": fig["lower"], "upper": fig["upper"], "queries": fig["queries"],
                     "median_ms": st["median_ms"], "exact_median_ms": exact_ms, "rows": ts["rows"],
                     "counters": now["counters"], "filenode": now["filenode"], "filtered": filtered,
                     "source": source, "margin": fig["margin"], "held_out": fig.get("held_out"),
                     "sample_min_queries": sample_min_queries, "sample_filtered": fig.get("sample_filtered"),
                     "sample_newest_at": fig.get("sample_newest_at"), "sample_oldest_at": fig.get("sample_oldest_at"),
                     "sample_newest_id": (qs or {}).get("newest_id", 0), "measured_at": _now()}
            comments.append((d, dict(meta, recall=state, tuned_rows=ts["rows"], **{guc: value})))
        result["settings"] = dict(needed, **managed)
        # The GUCs the role or database stores; a measurement above already used their new values.
        if scope != "none":
            for guc, value in sorted(result["settings"].items()):
                stored = current_setting_at(cur, scope, guc, role)
                if stored is None or str(stored) != str(value):
                    stmt = _set_sql(cur, scope, guc, value, role)
                    result["queries"].append(stmt)
                    result.setdefault("diff", {"before": "", "after": ""})
                    result["diff"]["before"] += "%s = %s\n" % (guc, stored if stored is not None else "(server default)")
                    result["diff"]["after"] += "%s = %s\n" % (guc, value)
                    if not check_mode:
                        cur.execute(stmt)
        for d, meta in comments:
            # The settings were applied first: the state records them, so the next run finds them unchanged.
            stmt = vi.pgsql.SQL("COMMENT ON INDEX {} IS %s").format(vi.pgsql.Identifier(d["schema"], d["name"]))
            result["queries"].append(vi.pgsql.SQL("COMMENT ON INDEX {} IS '(measurement state)'").format(
                vi.pgsql.Identifier(d["schema"], d["name"])).as_string(cur))
            if not check_mode:
                cur.execute(stmt, (vi.meta_comment(meta),))
        result["changed"] = bool(result["queries"])
        return result
    except pg.psycopg2.Error as e:
        raise vi.VectorIndexError("tuning query-time defaults failed: %s" % pg.error_text(e), result=result,
                                  sqlstate=getattr(e, "pgcode", None))
    finally:
        conn.close()


# ---------------------------------------------------------------- the recall check


def recall_check(conn_params, indexes, k=10, sample_size=100, max_sample_size=800, min_rows=1000, threshold=0.9,
                 settings=None, role=None, remeasure_share=0.1, query_sample=None, sample_min_queries=100,
                 heldout_margin=HELD_OUT_MARGIN, sample_retention_days=None):
    """Read-only recall@k of each declared index with the settings the app gets (its role's or the database's).

    Reports the stored measurement (the tuner's) when it still holds (see ``why_remeasure``), else measures
    afresh (held-out queries, growing the sample while ``threshold`` lies inside the interval).  An index passes
    when the 95% lower bound reaches ``threshold`` (and so does its filtered recall, when a filter is declared).

    Returns {ok, checks: [{name, table, status: pass|fail|skipped, recall, lower, upper, source, ...}], summary}.
    """
    vr.require_numpy()
    conn = vi.connect(conn_params, application_name="pgvector_recall_check")
    checks = []
    try:
        cur = conn.cursor()
        cur.execute("SET default_transaction_read_only = on")
        version = vext.extension_info(cur)["installed"]
        version_warnings = vext.assess(version)["warnings"] if version else []
        found = []
        for decl in indexes:
            d = vi.normalize(decl)
            ts = vi.table_state(cur, d)
            idx = vi.read_index(cur, d["schema"], d["name"]) if ts["exists"] else None
            found.append((d, ts, idx))
        for d, ts, idx in found:
            c = {"name": d["name"], "table": vi.qualified(d), "k": k, "threshold": threshold, "rows": ts["rows"]}
            checks.append(c)
            if not ts["exists"]:
                c.update(status="skipped", detail="skipped: table %s does not exist" % vi.qualified(d))
                continue
            if idx is None:
                c.update(status="fail", detail="index %s does not exist" % d["name"],
                         cause="the index was never built or was dropped", fix="run the pgvector role (indexes phase)")
                continue
            if not idx["valid"]:
                c.update(status="fail", detail="index %s is INVALID" % d["name"],
                         cause="an interrupted CREATE INDEX CONCURRENTLY", fix="run the pgvector role: it drops and rebuilds it")
                continue
            if ts["rows"] < max(min_rows, k + 1):
                c.update(status="skipped", detail="skipped: fewer than %d rows (%d)" % (max(min_rows, k + 1), ts["rows"]))
                continue
            d["resolved_method"] = idx["method"]
            d["metric"] = vi.OPCLASS_METRIC.get(idx["opclass"].replace("halfvec_", "vector_"), d["metric"])
            guc = guc_for(idx["method"])
            value = (settings or {}).get(guc) or app_setting(cur, guc, role)
            extra = app_extra(cur, idx["method"], role, dict((g, v) for g, v in (settings or {}).items() if g != guc))
            stored = idx["meta"].get("recall") or {}
            now = measured_state(cur, d, idx)
            qsource, qs = query_source(cur, d, query_sample, sample_min_queries, sample_retention_days)
            expect = {"guc": guc, "value": int(value), "k": k, "filter": d["filter"], "extra": extra, "source": qsource,
                      "margin": None if qsource == "sample" else heldout_margin,
                      "sample_queries": (qs or {}).get("queries", 0), "sample_min_queries": sample_min_queries}
            reason = why_remeasure(stored, now, expect, remeasure_share)
            c.update(setting={guc: int(value)}, method=idx["method"], queries_from=qsource)
            if reason is None:
                st, filtered = stored, stored.get("filtered")
                c.update(source="stored", measured_at=stored.get("measured_at"), changed_share=round(changed_share(stored, now), 4))
                how = ", measured %s at %d rows (%.1f%% changed since)" % (stored.get("measured_at"), stored.get("rows", 0),
                                                                            100 * changed_share(stored, now))
            else:
                vr.begin_snapshot(cur)
                try:
                    sample = measurement_sample(cur, d, ts["rows"], k, qsource, query_sample, sample_size,
                                                max_sample_size, sample_retention_days)
                    run = dict(extra, **{guc: value})
                    judged = threshold if qsource == "sample" else threshold + heldout_margin
                    st = sample.measure(run)
                    while st["upper"] >= judged > st["lower"] and sample.n < sample.cap:
                        sample.grow(sample.n * 2)
                        st = sample.measure(run)
                    st = labelled(st, sample, qsource, heldout_margin, sample_min_queries)
                    used = vr.index_used(cur, d, sample.vecs[0])
                    st["exact_median_ms"] = vr.exact_latency_ms(cur, d, sample.vecs, k)
                    filtered = measure_filtered((cur, ts["rows"]), d, run, k) if d["filter"] else None
                finally:
                    vr.end_snapshot(cur)
                if used is not None and used != d["name"]:
                    c.update(status="fail", detail="the planner searches %s with index %s, not %s" % (vi.qualified(d), used, d["name"]),
                             cause="two vector indexes compete", fix="drop the undeclared one")
                    continue
                c.update(source="measured", reason=reason)
                how = ", %.1f ms median (exact %.1f ms); measured now: %s" % (st["median_ms"] or 0, st["exact_median_ms"] or 0, reason)
            c.update(recall=st["recall"], lower=st["lower"], upper=st["upper"], queries=st["queries"],
                     median_ms=st.get("median_ms"), exact_median_ms=st.get("exact_median_ms"))
            c["detail"] = _measure_line(d["name"], k, st, guc, value, how) + _sample_filtered_line(dict(st, k=k))
            c["app_query"] = vi.app_query(d, k)
            c.update(sample_filtered=st.get("sample_filtered"), held_out=st.get("held_out"),
                     sample_newest_at=st.get("sample_newest_at"), sample_oldest_at=st.get("sample_oldest_at"))
            if (st.get("sample_filtered") or {}).get("lower", 1.0) < threshold:
                ok_filtered_sample = False
            else:
                ok_filtered_sample = True
            ok = st["lower"] >= threshold and ok_filtered_sample
            if filtered:
                c["filtered"] = filtered
                c["detail"] += "; " + _filtered_line(filtered)
                if filtered["lower"] < threshold:
                    ok = False
                    c.update(cause="filtered queries through the index find too few matching rows (hnsw.iterative_scan %s)"
                             % extra.get("hnsw.iterative_scan", extra.get("ivfflat.iterative_scan", "off")),
                             fix="set pgvector_iterative_scan (strict_order or relaxed_order, pgvector 0.8.0+), raise "
                                 "pgvector_max_scan_tuples, or add a btree / partial index for the filter")
            if ok:
                c["status"] = "pass"
            else:
                c["status"] = "fail"
                if "cause" not in c:
                    c.update(_low_recall_cause(idx, ts["rows"], guc, value))
                c["detail"] += " (95%% lower bound below %.2f)" % threshold
    finally:
        conn.close()
    for c in checks:
        if c["status"] == "fail" and c.get("fix") and "fix:" not in c["detail"]:
            c["detail"] += "; likely cause: %s; fix: %s" % (c.get("cause", "unknown"), c["fix"])
    ok = all(c["status"] != "fail" for c in checks)
    return {"ok": ok, "checks": checks, "version_warnings": version_warnings,
            "summary": "; ".join(c["detail"] for c in checks) or "no vector indexes declared"}


def _low_recall_cause(idx, rows, guc, value):
    if idx["method"] == "ivfflat":
        built = idx["meta"].get("built_rows")
        lists = vi.actual_params(idx)["lists"]
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


# ---------------------------------------------------------------- recall on live traffic (health)


def sample_recall(cur, decl, query_sample, k=10, queries=200, target=0.95, threshold=0.9, role=None, max_ef_search=400,
                  retention_days=None, min_queries=30):
    """Recall@k of the index on the ``queries`` newest sampled queries, at the settings a new app session gets; when
    its lower bound is under ``threshold``, the values above the app's are measured on the same queries, ascending,
    until one's lower bound reaches ``target`` (``better``).  Bounded cost: one pass over the table per distinct filter
    and at most ``queries`` index searches per value.  Runs inside the caller's (read-only) transaction.

    Returns None when there is nothing to measure (no sample table, no valid index), else {name, table, queries,
    newest_at, oldest_at, guc, value, recall, lower, upper, filtered, better: [value, stats] or None, skipped}.
    """
    d = vi.normalize(decl)
    ts = vi.table_state(cur, d)
    idx = vi.read_index(cur, d["schema"], d["name"]) if ts["exists"] else None
    if not query_sample or idx is None or not idx["valid"] or not vs.exists(cur, query_sample["schema"], query_sample["table"]):
        return None
    d["resolved_method"] = idx["method"]
    d["metric"] = vi.OPCLASS_METRIC.get(idx["opclass"].replace("halfvec_", "vector_"), d["metric"])
    guc = guc_for(idx["method"])
    value = int(app_setting(cur, guc, role))
    extra = app_extra(cur, idx["method"], role, {})
    rd = vs.read(cur, query_sample["schema"], query_sample["table"], d, queries, retention_days)
    out = {"name": d["name"], "table": vi.qualified(d), "queries": len(rd["ids"]), "newest_at": rd["newest_at"],
           "oldest_at": rd["oldest_at"], "guc": guc, "value": value, "better": None, "min_queries": min_queries,
           "skipped": rd["skipped"], "k": k}
    if len(rd["ids"]) < min_queries:
        return out
    s = vr.AppQueries(cur, d, rd, k, queries, queries)
    st = s.measure(dict(extra, **{guc: value}))
    out.update(recall=st["recall"], lower=st["lower"], upper=st["upper"], filtered=st["filtered"])
    if st["lower"] < threshold:
        bound = max_ef_search if idx["method"] == "hnsw" else vi.actual_params(idx).get("lists")
        for v in candidates(idx["method"], vi.actual_params(idx).get("lists"), bound):
            if v <= value:
                continue
            vst = s.measure(dict(extra, **{guc: v}))
            if vst["lower"] >= target:
                out["better"] = [v, {"recall": vst["recall"], "lower": vst["lower"]}]
                break
    return out
