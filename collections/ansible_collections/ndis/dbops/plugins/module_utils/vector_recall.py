# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Recall measurement: the one home that tuning (vector_tune.tune), the recall check
(vector_tune.recall_check) and the restore test's nearest-neighbour check (dbops/dump.py) share.

How a measurement is made, and why:

* **The app's queries** (``AppQueries``), sampled as it searches, when there are enough: never rows of the table,
  each measured with its own filter.  Otherwise:
* **Queries are held out.**  A query is a stored row, sampled reproducibly
  (``TABLESAMPLE BERNOULLI ... REPEATABLE``, then a seeded shuffle), and that row is excluded
  from both the exact answer and the index's answer: the query is never answered by itself.
* **Ground truth in one pass.**  The exact top-k of every query comes from one binary ``COPY``
  of the table (``ctid`` and the vector, 20 + 4 * dims bytes a row), parsed in batches of
  ``batch_rows`` rows and scored against all queries at once with one numpy matrix product per
  batch; only the running top-k per query is kept, so memory is bounded by the batch, not the
  table.  A few hundred sequential scans (one per query) would cost a few hundred passes.
* **The index's answer** is what the application's query returns: ``ORDER BY <expr> <op> $1
  LIMIT k`` with the settings given (the index forced for an unfiltered measurement; for a
  declared filter, the planner's own choice, as the application gets it).  The first
  ``LATENCY_QUERIES`` of a sample run one statement each, timed (the median latency); the
  rest of an unfiltered sample run ``BATCH_QUERIES`` to a statement, the same search in a
  ``LATERAL`` subquery per query: one round trip per batch instead of per query.  A returned row
  counts as a hit when it is in the exact top-k, or ties with its k-th distance (duplicates).
* **Uncertainty.**  Per-query recall values are independent draws (queries are sampled
  uniformly from the rows), so the 95% lower confidence bound of their mean comes from a
  percentile bootstrap over queries (``BOOTSTRAP_RESAMPLES`` resamples, fixed seed:
  reproducible).  ``upper`` is the matching 95% upper bound, used to decide when more queries
  are needed.
* **One snapshot.**  With ``own_transaction`` the sample, the COPY and the index queries run in
  one ``REPEATABLE READ READ ONLY`` transaction, so writes landing meanwhile cannot make the
  exact and the approximate answers disagree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import statistics
import struct
import time

from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi

try:
    import numpy as np

    HAS_NUMPY = True
    NUMPY_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without numpy
    np = None
    HAS_NUMPY = False
    NUMPY_IMPORT_ERROR = exc

BOOTSTRAP_RESAMPLES = 2000
BATCH_QUERIES = 100  # index searches per statement (one round trip), beyond the timed ones
LATENCY_QUERIES = 20  # the first queries of a sample, timed one statement each for the median latency
CONFIDENCE = 0.95
SEED = 42
TID = re.compile(r"^\((\d+),(\d+)\)$")


def require_numpy():
    if not HAS_NUMPY:
        raise vi.VectorIndexError("the Python library numpy is required to measure recall (pip install numpy): %s"
                                  % NUMPY_IMPORT_ERROR)


def tid_key(text):
    m = TID.match(text)
    return int(m.group(1)) * 65536 + int(m.group(2))


# ---------------------------------------------------------------- binary COPY


class _CopyBatches(object):
    """File-like target of ``copy_expert``: parses ``COPY (SELECT ctid, v::vector ...) TO STDOUT (FORMAT binary)``
    rows of ``dims`` float4 and hands them to ``sink(keys, vectors)`` ``batch_rows`` at a time."""

    def __init__(self, dims, sink, batch_rows):
        self.dims = dims
        self.rec = 2 + 4 + 6 + 4 + 4 + 4 * dims
        self.dtype = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("blk", ">u4"), ("off", ">u2"), ("l2", ">i4"),
                               ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (dims,))])
        self.sink = sink
        self.batch_bytes = self.rec * batch_rows
        self.parts, self.size, self.header_done, self.rows = [], 0, False, 0

    def write(self, data):
        self.parts.append(bytes(data))
        self.size += len(data)
        if self.size >= self.batch_bytes + 64:
            self._drain(final=False)

    def _drain(self, final):
        buf = b"".join(self.parts)
        if not self.header_done:
            if len(buf) < 19:
                self.parts, self.size = [buf], len(buf)
                return
            ext = struct.unpack("!i", buf[15:19])[0]
            buf = buf[19 + ext:]
            self.header_done = True
        n = len(buf) // self.rec  # what is left at the end is the 2-byte trailer (-1)
        if n:
            arr = np.frombuffer(buf, dtype=self.dtype, count=n)
            if (arr["l2"] != 4 + 4 * self.dims).any() or (arr["dim"] != self.dims).any():
                raise vi.VectorIndexError("a row holds a vector that is not %d-dimensional: measure a column with a "
                                          "fixed number of dimensions (vector(N))" % self.dims)
            keys = arr["blk"].astype(np.int64) * 65536 + arr["off"].astype(np.int64)
            self.sink(keys, arr["v"].astype(np.float32))
            self.rows += n
        rest = buf[n * self.rec:]
        self.parts, self.size = [rest], len(rest)

    def close(self):
        self._drain(final=True)


def copy_vectors(cur, d, sink, where_sql=None, sample_sql=None, batch_rows=4096):
    """Stream (keys, float32 vectors) of the declared column through ``sink``; returns rows read."""
    require_numpy()
    col = vi.pgsql.Identifier(d["column"])
    where = vi.pgsql.SQL(" WHERE {} IS NOT NULL").format(col)
    if where_sql:
        where = where + vi.pgsql.SQL(" AND (" + where_sql + ")")
    query = vi.pgsql.SQL("COPY (SELECT ctid, {}::vector FROM {}{}{}) TO STDOUT (FORMAT binary)").format(
        col, vi.pgsql.Identifier(d["schema"], d["table"]), vi.pgsql.SQL(sample_sql or ""), where)
    target = _CopyBatches(int(d["dims"]), sink, batch_rows)
    cur.copy_expert(query, target)
    target.close()
    return target.rows


# ---------------------------------------------------------------- queries and ground truth


def sample_queries(cur, d, rows, n, seed=SEED):
    """Up to ``n`` stored rows as held-out queries: (keys int64[n], vectors float32[n, dims]), reproducible."""
    require_numpy()
    got_k, got_v = [], []

    def sink(keys, vecs):
        got_k.append(keys)
        got_v.append(vecs)

    if rows <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, int(d["dims"])), dtype=np.float32)
    pct = min(100.0, 100.0 * n * 2.0 / rows + 0.5)
    sample_sql = " TABLESAMPLE BERNOULLI (%r) REPEATABLE (%d)" % (float(pct), int(seed)) if pct < 100 else ""
    copy_vectors(cur, d, sink, sample_sql=sample_sql)
    keys = np.concatenate(got_k) if got_k else np.zeros(0, dtype=np.int64)
    vecs = np.concatenate(got_v) if got_v else np.zeros((0, int(d["dims"])), dtype=np.float32)
    order = np.random.default_rng(seed).permutation(len(keys))[:n]
    return keys[order], vecs[order]


def _scores(metric, q, x):
    """(queries x rows) scores, higher is nearer: cosine (normalised dot; ``q`` is normalised already), inner
    product (dot), l2 (minus squared distance, |q|^2 dropped)."""
    if metric == "cosine":
        xn = np.linalg.norm(x, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (q @ x.T) / xn[None, :]
    elif metric == "inner_product":
        s = q @ x.T
    else:
        s = 2.0 * (q @ x.T) - np.einsum("ij,ij->i", x, x)[None, :]
    s[~np.isfinite(s)] = -np.inf  # zero vectors: pgvector's distance is NaN, sorted last
    return s


def exact_topk(cur, d, qkeys, qvecs, k, filter_sql=None, batch_rows=4096):
    """Exact top-k (ctid keys, best first) of each query in one pass over the table, each query's own row excluded.

    Per batch of rows: one matrix product (queries x rows, so each query's scores are contiguous), the batch's own
    top-k per query (``argpartition`` along the row), merged with the running top-k (k + k candidates per query).
    Returns (list of key lists, stats {rows, seconds, passes: 1}).
    """
    require_numpy()
    t0 = time.perf_counter()
    nq = len(qkeys)
    q = np.ascontiguousarray(qvecs, dtype=np.float32)
    if d["metric"] == "cosine":
        with np.errstate(invalid="ignore", divide="ignore"):
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
        q[~np.isfinite(q)] = 0.0
    state = {"s": np.full((nq, 0), -np.inf, dtype=np.float32), "k": np.zeros((nq, 0), dtype=np.int64)}
    order = np.argsort(qkeys)
    sorted_keys = qkeys[order]
    rows_of = np.arange(nq)[:, None]

    def sink(keys, vecs):
        if not nq:
            return
        s = _scores(d["metric"], q, vecs)
        pos = np.searchsorted(sorted_keys, keys)
        pos[pos >= len(sorted_keys)] = 0
        mine = np.nonzero(sorted_keys[pos] == keys)[0]
        s[order[pos[mine]], mine] = -np.inf  # a query's own row is never its answer
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s = s[rows_of, part]
            kk = keys[part]
        else:
            kk = np.broadcast_to(keys[None, :], s.shape)
        all_s = np.concatenate([state["s"], s], axis=1)
        all_k = np.concatenate([state["k"], kk], axis=1)
        if all_s.shape[1] > k:
            part = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
            all_s, all_k = all_s[rows_of, part], all_k[rows_of, part]
        state["s"], state["k"] = all_s, all_k

    rows = copy_vectors(cur, d, sink, where_sql=filter_sql, batch_rows=batch_rows)
    s, kk = state["s"], state["k"]
    out = []
    for j in range(nq):
        o = np.argsort(-s[j], kind="stable")
        out.append([int(kk[j, i]) for i in o if np.isfinite(s[j, i])])
    return out, {"rows": rows, "seconds": round(time.perf_counter() - t0, 3), "passes": 1}


# ---------------------------------------------------------------- the index's answers


def literal(vec):
    return "[" + ",".join("%.9g" % x for x in vec) + "]"


def _knn_sql(d, filter_sql=None):
    expr, cast = vi.search_expr(d)
    op = vi.METRICS[d["metric"]][1]
    where = vi.pgsql.SQL(" WHERE (" + filter_sql + ")") if filter_sql else vi.pgsql.SQL("")
    return vi.pgsql.SQL("SELECT ctid::text, {} " + op + " %(q)s::" + cast + " FROM {}{} ORDER BY {} " + op
                        + " %(q)s::" + cast + " LIMIT %(n)s").format(
        expr, vi.pgsql.Identifier(d["schema"], d["table"]), where, expr)


def set_local(cur, settings):
    for name, value in sorted((settings or {}).items()):
        cur.execute("SELECT set_config(%s, %s, true)", (name, str(value)))


def index_used(cur, d, qvec, filter_sql=None):
    """Name of the index the planner uses for the application's query (None: no index)."""
    cur.execute(vi.pgsql.SQL("EXPLAIN (FORMAT JSON) ") + _knn_sql(d, filter_sql), {"q": literal(qvec), "n": 10})
    stack = [cur.fetchone()[0]]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("Index Name") and node.get("Node Type") in ("Index Scan", "Index Only Scan"):
                return node["Index Name"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _knn_batch_sql(d):
    """One statement for a batch of queries: each element of the array ``%(qs)s`` searched with LIMIT ``%(n)s``
    through a LATERAL subquery (the same ORDER BY ... LIMIT, planned as an index scan per element)."""
    expr, cast = vi.search_expr(d)
    op = vi.METRICS[d["metric"]][1]
    return vi.pgsql.SQL("SELECT q.ndis_i, a.ctid::text, a.ndis_dist FROM unnest(%(qs)s::text[]) WITH ORDINALITY AS "
                        "q(ndis_q, ndis_i) CROSS JOIN LATERAL (SELECT ctid, {} " + op + " q.ndis_q::" + cast
                        + " AS ndis_dist FROM {} ORDER BY {} " + op + " q.ndis_q::" + cast + " LIMIT %(n)s) a").format(
        expr, vi.pgsql.Identifier(d["schema"], d["table"]), expr)


def index_answers(cur, d, qkeys, qvecs, k, filter_sql=None, timed=None, batch=BATCH_QUERIES, literals=None):
    """Each query's answer through the session's current settings: (key lists, distance lists, ms per timed query).

    The first ``timed`` queries (all of them when None, and always with a filter, whose plan the planner chooses per
    query) run one statement each, timed; the others run ``batch`` to a statement (``_knn_batch_sql``): the same
    index search, one round trip per batch.  ``literals``: the queries' text forms, when the caller keeps them.
    """
    sql = _knn_sql(d, filter_sql)
    n = len(qkeys)
    lits = literals if literals is not None else [literal(v) for v in qvecs]
    timed = n if (timed is None or filter_sql) else max(0, min(int(timed), n))
    rows_of, times = {}, []
    for i in range(timed):
        t0 = time.perf_counter()
        cur.execute(sql, {"q": lits[i], "n": k + 1})
        rows_of[i] = cur.fetchall()
        times.append((time.perf_counter() - t0) * 1000.0)
    if timed < n:
        bsql = _knn_batch_sql(d)
        for s in range(timed, n, batch):
            e = min(n, s + batch)
            cur.execute(bsql, {"qs": lits[s:e], "n": k + 1})
            got = {}
            for i, t, dist in cur.fetchall():
                got.setdefault(s + int(i) - 1, []).append((t, dist))
            for i in range(s, e):
                rows_of[i] = sorted(got.get(i, []), key=lambda r: (r[1] is None, r[1]))
    keys, dists = [], []
    for i in range(n):
        got = [(tid_key(t), dist) for t, dist in rows_of[i] if tid_key(t) != int(qkeys[i])][:k]
        keys.append([g[0] for g in got])
        dists.append([g[1] for g in got])
    return keys, dists, times


def _kth_distances(cur, d, pairs):
    """{i: distance from query vector to the row with ctid key} for pairs [(i, vector, key)], one statement."""
    if not pairs:
        return {}
    expr, cast = vi.search_expr(d)
    op = vi.METRICS[d["metric"]][1]
    cur.execute(vi.pgsql.SQL("SELECT q.ndis_i, {} " + op + " q.ndis_q::" + cast + " FROM unnest(%s::int[], %s::text[], "
                             "%s::tid[]) AS q(ndis_i, ndis_q, ndis_t) JOIN {} ON ctid = q.ndis_t").format(
        expr, vi.pgsql.Identifier(d["schema"], d["table"])),
        ([int(i) for i, _, _ in pairs], [literal(v) for _, v, _ in pairs],
         ["(%d,%d)" % (key // 65536, key % 65536) for _, _, key in pairs]))
    return dict((int(i), dist) for i, dist in cur.fetchall())


def per_query_recall(cur, d, qkeys, qvecs, truth, got, dists, k):
    """Recall of each query (hits / the exact answer's size) and whether it got as many rows as the exact answer.

    A returned row outside the exact top-k still counts when it is as near as the k-th exact neighbour (ties,
    duplicates): those distances come from one statement for all the queries with such rows.
    """
    recalls, full, ask = [], [], []
    for i, want in enumerate(truth):
        want = want[:k]
        if want and any(g not in set(want) for g in got[i]):
            ask.append((i, qvecs[i], want[-1]))
    kth_of = _kth_distances(cur, d, ask)
    for i, want in enumerate(truth):
        want = want[:k]
        if not want:
            recalls.append(1.0)
            full.append(True)
            continue
        wanted = set(want)
        hits = sum(1 for g in got[i] if g in wanted)
        misses = [dd for g, dd in zip(got[i], dists[i]) if g not in wanted]
        kth = kth_of.get(i)
        if misses and kth is not None:
            hits += sum(1 for dd in misses if dd is not None and dd <= kth + 1e-6 * max(1.0, abs(kth)))
        recalls.append(min(1.0, hits / float(len(want))))
        full.append(len(got[i]) >= len(want))
    return recalls, full


def bootstrap_bounds(values, seed=SEED, resamples=BOOTSTRAP_RESAMPLES, confidence=CONFIDENCE):
    """(mean, one-sided lower bound, one-sided upper bound) at ``confidence``, percentile bootstrap over queries."""
    require_numpy()
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return None, None, None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 200000 // max(len(v), 1))
    for s in range(0, resamples, step):
        m = min(step, resamples - s)
        means[s:s + m] = v[rng.integers(0, len(v), (m, len(v)))].mean(axis=1)
    return float(v.mean()), float(np.quantile(means, 1 - confidence)), float(np.quantile(means, confidence))


def summarise(recalls, full, times, seed=SEED):
    est, lo, hi = bootstrap_bounds(recalls, seed)
    return {"recall": round(est, 4), "lower": round(lo, 4), "upper": round(hi, 4), "queries": len(recalls),
            "full_k_share": round(sum(full) / float(len(full)), 4) if full else None,
            "median_ms": round(statistics.median(times), 3) if times else None}


def exact_latency_ms(cur, d, qvecs, k, n=3, filter_sql=None):
    """Median latency of the exact query (index scans off) over ``n`` queries."""
    set_local(cur, {"enable_indexscan": "off", "enable_bitmapscan": "off"})
    sql = _knn_sql(d, filter_sql)
    times = []
    for vec in qvecs[:n]:
        t0 = time.perf_counter()
        cur.execute(sql, {"q": literal(vec), "n": k})
        cur.fetchall()
        times.append((time.perf_counter() - t0) * 1000.0)
    set_local(cur, {"enable_indexscan": "on", "enable_bitmapscan": "on"})
    return round(statistics.median(times), 3) if times else None


class Sample(object):
    """Held-out queries with their exact answers, grown on demand (``grow``), and per-setting recall cached.

    Exact answers are computed only for queries that have none yet.  The first pass computes them for
    ``truth_ahead`` times the starting sample (up to the cap): a pass costs mostly its reading of the table (4 s for
    100,000 x 768 here) and each further query only its share of the matrix products (about 6 ms there), so a first
    growth within that margin needs no second pass.  A later pass computes them for the new queries only.
    """

    def __init__(self, cur, d, rows, k, start, cap, filter_sql=None, seed=SEED, batch_rows=4096, truth_ahead=3.0):
        self.cur, self.d, self.k, self.filter_sql, self.seed, self.batch_rows = cur, d, k, filter_sql, seed, batch_rows
        self.truth_ahead, self.start = truth_ahead, start
        self.keys, self.vecs = sample_queries(cur, d, rows, cap, seed)
        self.cap = len(self.keys)
        self.truth = []
        self.literals = []
        self.truth_stats = {"rows": 0, "seconds": 0.0, "passes": 0, "queries": 0}
        self.cache = {}
        self.n = 0
        self.grow(min(start, self.cap))

    def grow(self, n):
        """Use the first ``n`` queries; exact answers are computed for the queries that have none (one pass)."""
        n = min(n, self.cap)
        if n <= self.n:
            return False
        if n > len(self.truth):
            upto = min(self.cap, max(n, int(self.start * self.truth_ahead) if not self.truth else n))
            have = len(self.truth)
            t, st = exact_topk(self.cur, self.d, self.keys[have:upto], self.vecs[have:upto], self.k, self.filter_sql,
                               self.batch_rows)
            self.truth.extend(t)
            self.truth_stats = {"rows": st["rows"], "seconds": round(self.truth_stats["seconds"] + st["seconds"], 3),
                                "passes": self.truth_stats["passes"] + 1, "queries": len(self.truth)}
        if n > len(self.literals):
            self.literals.extend(literal(v) for v in self.vecs[len(self.literals):n])
        self.n = n
        return True

    def measure(self, settings, force_index=True, label=None, upto=None):
        """Recall of the first ``n`` queries (or of the first ``upto``, when fewer) with ``settings`` (GUC: value) set
        locally: summarise().  Queries measured before with the same settings are not asked again."""
        key = label if label is not None else tuple(sorted((settings or {}).items())) + (force_index,)
        have = self.cache.setdefault(key, {"recalls": [], "full": [], "times": []})
        done = len(have["recalls"])
        n = self.n if upto is None else max(0, min(int(upto), self.n))
        if done < n:
            set_local(self.cur, dict(settings or {}, enable_seqscan="off" if force_index else "on"))
            ks, vs = self.keys[done:n], self.vecs[done:n]
            got, dists, times = index_answers(self.cur, self.d, ks, vs, self.k, self.filter_sql,
                                              timed=max(0, LATENCY_QUERIES - done), literals=self.literals[done:n])
            r, f = per_query_recall(self.cur, self.d, ks, vs, self.truth[done:n], got, dists, self.k)
            have["recalls"].extend(r)
            have["full"].extend(f)
            have["times"].extend(times)
            set_local(self.cur, {"enable_seqscan": "on"})
        return summarise(have["recalls"][:n], have["full"][:n], have["times"][:n], self.seed)


class AppQueries(object):
    """The application's sampled queries (module_utils/vector_sample.py) as a measurement sample: the same interface
    as ``Sample`` (``grow``, ``measure``, ``n``, ``cap``, ``vecs``, ``truth_stats``), so tuning and the recall check
    run the same sequential test on them.

    A sampled query is not a row of the table, so nothing is excluded from its answers: its recall is the app's.
    Each query is measured with its own filter: the exact answer from a pass over the rows that match it, the index's
    answer from the app's query with that ``WHERE`` (the planner's own plan, as the app gets it; unfiltered queries
    run with the index forced, as in ``Sample``).  One pass over the table per distinct filter among the queries
    that need exact answers.  ``read``: what ``vector_sample.read`` returned (the newest queries, shuffled).
    """

    def __init__(self, cur, d, read, k, start, cap, batch_rows=4096, truth_ahead=3.0, seed=SEED):
        self.cur, self.d, self.k, self.batch_rows, self.truth_ahead, self.seed = cur, d, k, batch_rows, truth_ahead, seed
        self.start = start
        self.vecs = read["vecs"][:cap]
        self.filters = read["filters"][:cap]
        self.keys = np.full(len(self.vecs), -1, dtype=np.int64)  # no row of the table is a query
        self.cap = len(self.vecs)
        self.truth, self.literals, self.cache, self.n = [], [], {}, 0
        self.truth_stats = {"rows": 0, "seconds": 0.0, "passes": 0, "queries": 0}
        self.grow(min(start, self.cap))

    def grow(self, n):
        n = min(n, self.cap)
        if n <= self.n:
            return False
        if n > len(self.truth):
            have = len(self.truth)
            upto = min(self.cap, max(n, int(self.start * self.truth_ahead) if not self.truth else n))
            got = [None] * (upto - have)
            groups = {}
            for i in range(have, upto):
                groups.setdefault(self.filters[i], []).append(i)
            seconds, rows = 0.0, 0
            for fsql, idx in sorted(groups.items(), key=lambda kv: kv[0] or ""):
                t, st = exact_topk(self.cur, self.d, self.keys[idx], self.vecs[idx], self.k, fsql, self.batch_rows)
                for i, ans in zip(idx, t):
                    got[i - have] = ans
                seconds += st["seconds"]
                rows = max(rows, st["rows"])
                self.truth_stats["passes"] += 1
            self.truth.extend(got)
            self.truth_stats.update(rows=rows, seconds=round(self.truth_stats["seconds"] + seconds, 3),
                                    queries=len(self.truth))
        if n > len(self.literals):
            self.literals.extend(literal(v) for v in self.vecs[len(self.literals):n])
        self.n = n
        return True

    def measure(self, settings, force_index=True, label=None, upto=None):
        """Recall of the first ``n`` queries with ``settings``, each with its own filter: summarise(), plus
        ``filtered`` (the same figures over the filtered queries alone, or None when there are none)."""
        key = label if label is not None else tuple(sorted((settings or {}).items())) + (force_index,)
        have = self.cache.setdefault(key, {"recalls": {}, "full": {}, "times": []})
        n = self.n if upto is None else max(0, min(int(upto), self.n))
        todo = [i for i in range(n) if i not in have["recalls"]]
        if todo:
            groups = {}
            for i in todo:
                groups.setdefault(self.filters[i], []).append(i)
            for fsql, idx in sorted(groups.items(), key=lambda kv: kv[0] or ""):
                set_local(self.cur, dict(settings or {}, enable_seqscan="off" if force_index and not fsql else "on"))
                timed = max(0, LATENCY_QUERIES - len(have["times"])) if not fsql else None
                got, dists, times = index_answers(self.cur, self.d, self.keys[idx], self.vecs[idx], self.k, fsql,
                                                  timed=timed, literals=[self.literals[i] for i in idx])
                r, f = per_query_recall(self.cur, self.d, self.keys[idx], self.vecs[idx], [self.truth[i] for i in idx],
                                        got, dists, self.k)
                for i, ri, fi in zip(idx, r, f):
                    have["recalls"][i], have["full"][i] = ri, fi
                if not fsql:
                    have["times"].extend(times)
            set_local(self.cur, {"enable_seqscan": "on"})
        st = summarise([have["recalls"][i] for i in range(n)], [have["full"][i] for i in range(n)], have["times"],
                       self.seed)
        fi = [i for i in range(n) if self.filters[i]]
        st["filtered"] = None
        if fi:
            fst = summarise([have["recalls"][i] for i in fi], [have["full"][i] for i in fi], [], self.seed)
            fst.update(filters=len(set(self.filters[i] for i in fi)))
            st["filtered"] = fst
        return st


def begin_snapshot(cur):
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def end_snapshot(cur):
    cur.execute("ROLLBACK")


# ---------------------------------------------------------------- every vector index of a database (restore test)


def database_indexes(cur):
    """Every valid hnsw / ivfflat index of the database as a measurable declaration (expression halfvec ones too),
    or with ``unsupported`` naming why it cannot be measured (an operator class without a numpy metric)."""
    cur.execute(
        "SELECT n.nspname, t.relname, i.relname, am.amname, a.attname, opc.opcname, pg_get_indexdef(i.oid, 1, true)"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = i.relam"
        " JOIN pg_opclass opc ON opc.oid = x.indclass[0]"
        " LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
        " WHERE am.amname IN ('hnsw', 'ivfflat') AND x.indisvalid ORDER BY 1, 2, 3")
    out = []
    for schema, table, name, method, column, opclass, key in cur.fetchall():
        entry = {"schema": schema, "table": table, "name": name, "method": method, "opclass": opclass}
        expression = column is None
        if expression:
            m = vi.HALFVEC_EXPR.match(key or "")
            if not m:
                out.append(dict(entry, column=key, unsupported="expression %s is not a halfvec cast of a column" % key))
                continue
            column = m.group(1)
        metric = vi.OPCLASS_METRIC.get(opclass.replace("halfvec_", "vector_", 1))
        if metric is None:
            out.append(dict(entry, column=column, unsupported="operator class %s is not measured (cosine, l2 and inner "
                                                               "product are)" % opclass))
            continue
        d = vi.normalize({"schema": schema, "table": table, "column": column, "name": name, "metric": metric,
                          "method": method, "type": "halfvec" if expression else "auto"})
        d["resolved_method"] = method
        vi.table_state(cur, d)
        d["name"] = name
        out.append(dict(entry, column=column, decl=d))
    return out


def check_indexes(cur, samples=10, k=10, min_recall=0.8, settings=None):
    """Held-out recall@k through every vector index of the database, inside the caller's transaction.

    ``settings`` default to a wide search (hnsw.ef_search 100, ivfflat.probes 10): this checks that an index
    works (a restored one, say), not the application's recall/latency trade-off.  Returns (notes, problems).
    """
    settings = settings or {"hnsw.ef_search": 100, "ivfflat.probes": 10}
    notes, problems = [], []
    for ix in database_indexes(cur):
        label = "%s.%s (%s, %s)" % (ix["schema"], ix["name"], ix["method"], ix["opclass"])
        if ix.get("unsupported"):
            notes.append("%s: not measured: %s" % (label, ix["unsupported"]))
            continue
        d = ix["decl"]
        rows = vi._one(cur, vi.pgsql.SQL("SELECT count(*) FROM {}").format(vi.pgsql.Identifier(d["schema"], d["table"])))
        if rows <= k:
            notes.append("%s: %d rows, too few to measure recall@%d: check skipped" % (label, rows, k))
            continue
        sample = Sample(cur, d, rows, k, samples, samples)
        st = sample.measure(settings)
        full = int(round((st["full_k_share"] or 0) * st["queries"]))
        line = "%s: recall@%d %.3f (95%% lower bound %.3f) on %d held-out queries, %d/%d got %d rows" % (
            label, k, st["recall"], st["lower"], st["queries"], full, st["queries"], k)
        (notes if st["recall"] >= min_recall else problems).append(line)
    return notes, problems
