"""Recall that holds on unseen data, the version floor, halfvec and filtered queries
(module_utils/vector_recall.py, vector_tune.py, vector_extension.py) against the real embedded
PostgreSQL + pgvector 0.8.5.

Datasets are small (CI-sized) numpy mixtures; the 20,000 x 1536 figures are in bench/bench_vector.py.
"""

from __future__ import annotations

import struct
import time
from io import BytesIO

import numpy as np
import psycopg2
import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import vector_extension as vext
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_recall as vr
from ansible_collections.ndis.dbops.plugins.module_utils import vector_tune as vt
from conftest import execute
from dbops import dump

K = 10


class Mixture:
    """Small clusters in low-dimensional subspaces plus isotropic noise; ``draw`` gives fresh points."""

    def __init__(self, dims, clusters, seed=5, spread=0.5, intrinsic=8):
        rng = np.random.default_rng(seed)
        self.dims, self.intrinsic, self.spread = dims, intrinsic, spread
        self.centers = rng.normal(0, 1, (clusters, dims)).astype(np.float32)
        self.basis = (rng.normal(0, 1, (clusters, intrinsic, dims)) / np.sqrt(intrinsic)).astype(np.float32)

    def draw(self, n, seed):
        rng = np.random.default_rng(seed)
        lab = rng.integers(0, len(self.centers), n)
        z = rng.normal(0, 1, (n, self.intrinsic)).astype(np.float32)
        x = self.centers[lab] + self.spread * np.einsum("ni,nid->nd", z, self.basis[lab])
        return (x + 0.05 * rng.normal(0, 1, x.shape)).astype(np.float32)


def copy_rows(dsn, table, data, start=0, src=None):
    """Binary COPY of (id, v[, src]) rows; the session's statistics are flushed before it closes."""
    dims = data.shape[1]
    buf = BytesIO()
    buf.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
    be = data.astype(">f4")
    for i in range(len(data)):
        buf.write(struct.pack("!h", 3 if src is not None else 2) + struct.pack("!iq", 8, start + i)
                  + struct.pack("!ihh", 4 + 4 * dims, dims, 0) + be[i].tobytes())
        if src is not None:
            s = src[i].encode()
            buf.write(struct.pack("!i", len(s)) + s)
    buf.write(struct.pack("!h", -1))
    buf.seek(0)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cols = "(id, v, src)" if src is not None else "(id, v)"
        cur.copy_expert(f"COPY {table} {cols} FROM STDIN WITH (FORMAT binary)", buf)
        cur.execute(f"ANALYZE {table}")
        cur.execute("SELECT pg_stat_force_next_flush()")
    conn.close()


def counters(dsn, table):
    return execute(dsn, "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_all_tables WHERE relid = %s::regclass",
                   params=(table,))[0][0]


def wait_for_counters(dsn, table, at_least):
    for _ in range(50):
        if counters(dsn, table) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError("statistics counters of %s never reached %d" % (table, at_least))


def fresh_recall(dsn, data, queries, sql="SELECT id FROM items ORDER BY v <=> %s::vector LIMIT 10", cast=None):
    """Held-out recall@10 of fresh queries (never rows) through a new session: numpy truth, the app's settings."""
    norm = data / np.linalg.norm(data, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    want = np.argsort(-(qn @ norm.T), axis=1)[:, :K]
    conn = psycopg2.connect(dsn)
    per = []
    with conn.cursor() as cur:
        for q, w in zip(queries, want):
            cur.execute(sql, (vr.literal(q),))
            per.append(len({r[0] for r in cur.fetchall()} & {int(x) for x in w}) / K)
    conn.close()
    return float(np.mean(per))


@pytest.fixture
def db(scratch_db):
    dsn = scratch_db["dsn"]
    execute(dsn, "CREATE EXTENSION vector")
    return {"dsn": dsn, "conn": {"dsn": dsn}, "name": scratch_db["name"]}


# ------------------------------------------------------------------ the search over ef_search


class CurveSample:
    """A stand-in for vector_recall.Sample with a known mean recall per ef_search, spread as real per-query recall@10
    is (most queries find all 10, a few find about half): query i at value v is hard with probability
    2 (1 - curve[v]), then Binomial(10, 0.5) / 10, else 1.0, from its own seed, so a query asked again answers the
    same.  Records every measurement as (value, queries)."""

    def __init__(self, curve, start=100, cap=800):
        self.curve, self.n, self.cap, self.calls = curve, start, cap, []

    def grow(self, n):
        n = min(n, self.cap)
        if n <= self.n:
            return False
        self.n = n
        return True

    def measure(self, settings):
        v = settings["hnsw.ef_search"]
        self.calls.append((v, self.n))
        per = []
        for i in range(self.n):
            rng = np.random.default_rng(1000 * v + i)
            per.append(rng.binomial(K, 0.5) / K if rng.random() < 2 * (1 - self.curve[v]) else 1.0)
        return vr.summarise(per, [True] * self.n, [1.0] * self.n)


@pytest.mark.parametrize("curve,expect", [
    ({40: 0.995, 64: 0.997, 100: 0.998, 160: 0.999, 250: 1.0, 400: 1.0}, 40),   # the first step is certified
    ({40: 0.90, 64: 0.93, 100: 0.985, 160: 0.99, 250: 0.995, 400: 0.997}, 100),  # clear below, clear at 100
    ({40: 0.90, 64: 0.955, 100: 0.967, 160: 0.99, 250: 0.995, 400: 0.997}, (100, 160)),  # 64 in the zone; 100 near
    ({40: 0.60, 64: 0.70, 100: 0.80, 160: 0.85, 250: 0.88, 400: 0.90}, None),    # unreachable: every step, no growth
])
def test_choose_is_ascending_and_never_searches_above_the_answer(curve, expect):
    sample = CurveSample(curve)
    value, stats, rounds = vt.choose(sample, "hnsw.ef_search", sorted(curve), 0.95, {})
    steps = sorted(curve)
    if expect is None:
        assert value is None and [v for v, _ in sample.calls] == steps and sample.n == 100 and rounds == 1
        return
    assert value in (expect if isinstance(expect, tuple) else (expect,))
    assert stats[value]["lower"] >= 0.95, stats[value]
    asked = [v for v, _ in sample.calls]
    assert max(asked) == value, sample.calls  # nothing above the answer was searched
    assert asked == sorted(asked)
    assert all(stats[v]["lower"] < 0.95 for v in steps if v < value)  # every step below failed, none was skipped
    assert all(vt.settled_below(stats[v], 0.95) or stats[v]["queries"] >= sample.cap for v in steps if v < value)
    assert sample.n <= sample.cap and rounds == 1 + sum(1 for a, b in zip(sample.calls, sample.calls[1:]) if b[1] > a[1])


def test_choose_grows_the_sample_only_for_a_step_that_clears_the_indifference_zone():
    # 0.968 at 100 queries: estimate above target + 0.01, bound below the target: worth certifying, so it grows
    sample = CurveSample({40: 0.968, 64: 0.999})
    first = sample.measure({"hnsw.ef_search": 40})
    sample.calls.clear()
    assert first["lower"] < 0.95 <= first["recall"] - vt.INDIFFERENCE, first
    value, stats, rounds = vt.choose(sample, "hnsw.ef_search", [40, 64], 0.95, {})
    assert sample.n > 100 and rounds >= 2 and sample.calls[0] == (40, 100)
    assert value == 40 or stats[40]["recall"] < 0.95 + vt.INDIFFERENCE or stats[40]["queries"] == sample.cap
    # 0.955: inside the zone, settled on the first 100 queries: the next step is stored, the sample never grows
    sample = CurveSample({40: 0.955, 64: 0.999})
    value, stats, rounds = vt.choose(sample, "hnsw.ef_search", [40, 64], 0.95, {})
    assert (value, sample.n, rounds, sample.calls) == (64, 100, 1, [(40, 100), (64, 100)])


class FixedSample(CurveSample):
    """Per-query recall fixed by position, the same at every value: the first ``start`` queries (the ones the steps
    are judged on) and the rest of the sample can differ, as a small sample and the whole one do."""

    def __init__(self, per_query, start=100):
        super().__init__({}, start=start, cap=len(per_query))
        self.per_query = per_query

    def measure(self, settings):
        self.calls.append((settings["hnsw.ef_search"], self.n))
        n = self.n
        return vr.summarise(self.per_query[:n], [True] * n, [1.0] * n)


def test_bound_certified_on_the_whole_sample_reaches_the_target_without_a_warning():
    # 100 queries at 0.955 (inside the indifference zone: ruled out without growing), the whole 800 at 0.975
    per = [1.0] * 91 + [0.5] * 9 + [1.0] * 680 + [0.5] * 20
    sample = FixedSample(per)
    value, st, stats, rounds, reached = vt.settle(sample, "hnsw.ef_search", [40, 64], 64, 0.95, {})
    assert stats[64]["queries"] == 100 and stats[64]["lower"] < 0.95 <= stats[64]["recall"] < 0.95 + vt.INDIFFERENCE
    assert (value, st["queries"], rounds) == (64, 800, 2) and st["lower"] >= 0.95, st
    assert reached is True
    assert vt.bound_warning("i", 10, "hnsw.ef_search", value, st, 0.95, "hnsw") is None


def test_bound_below_the_target_on_the_whole_sample_warns_with_the_figure_it_measured():
    per = [1.0] * 91 + [0.5] * 9 + [1.0] * 560 + [0.5] * 140  # the whole 800 at 0.90
    sample = FixedSample(per)
    value, st, stats, rounds, reached = vt.settle(sample, "hnsw.ef_search", [40, 64], 64, 0.95, {})
    assert (value, st["queries"], reached) == (64, 800, False) and st["lower"] < 0.95
    warning = vt.bound_warning("items_v_hnsw_cosine", 10, "hnsw.ef_search", value, st, 0.95, "hnsw")
    assert warning.startswith("items_v_hnsw_cosine: the 95%% lower bound of recall@10 at the bound hnsw.ef_search=64 is "
                              "%.3f, below the target 0.95. Rebuild with larger m / ef_construction" % st["lower"]), warning


# ------------------------------------------------------------------ version floor


@pytest.mark.parametrize("version,serial,blocked", [
    ("0.8.5", False, False), ("0.8.2", False, False), ("0.5.1", False, False),
    ("0.6.0", True, False), ("0.7.4", True, False), ("0.8.0", True, False), ("0.8.1", True, False),
    ("0.3.0", False, True), ("0.2.7", False, True), ("0.4.3", False, True),
])
def test_version_floor_table(version, serial, blocked):
    a = vext.assess(version)
    assert a["serial_builds"] is serial and bool(a["blocked"]) is blocked, a
    assert vext.parallel_workers_for(version, 2) == (0 if serial else 2)
    if version == "0.8.5":
        assert a["warnings"] == [] and a["defects"] == []
    if serial:
        line = next(w for w in a["warnings"] if "CVE-2026-3172" in w)
        assert "fixed in 0.8.2" in line and "max_parallel_maintenance_workers = 0" in line
        assert "ALTER EXTENSION vector UPDATE" in line and "pgvector_update_extension" in line


def test_parallel_build_guard_warning_and_extension_update(db):
    execute(db["dsn"], "CREATE TABLE items (id bigint PRIMARY KEY, v vector(8) NOT NULL)",
            "INSERT INTO items SELECT i, array_fill(i::real, ARRAY[8])::vector FROM generate_series(1, 50) i",
            # the catalog records 0.8.1 as the installed SQL-level version (the loaded library stays 0.8.5)
            "UPDATE pg_extension SET extversion = '0.8.1' WHERE extname = 'vector'")
    decl = [{"table": "items", "column": "v"}]
    r = vi.ensure_indexes(db["conn"], decl, parallel_workers=2)
    assert "SET max_parallel_maintenance_workers = 0" in r["queries"], r["queries"]
    assert any("CVE-2026-3172" in w for w in r["warnings"])
    check = vt.recall_check(db["conn"], decl)
    assert any("CVE-2026-3172" in w and "ALTER EXTENSION vector UPDATE" in w for w in check["version_warnings"])
    plan = vi.ensure_indexes(db["conn"], decl, update_extension=True, check_mode=True)
    assert plan["queries"] == ["ALTER EXTENSION vector UPDATE"]
    assert execute(db["dsn"], "SELECT extversion FROM pg_extension WHERE extname = 'vector'") == [("0.8.1",)]
    r = vi.ensure_indexes(db["conn"], decl, update_extension=True)
    assert r["queries"] == ["ALTER EXTENSION vector UPDATE"] and r["warnings"] == []
    assert execute(db["dsn"], "SELECT extversion FROM pg_extension WHERE extname = 'vector'") == [("0.8.5",)]
    assert vt.recall_check(db["conn"], decl)["version_warnings"] == []


# ------------------------------------------------------------------ the measurement itself


def test_one_pass_ground_truth_equals_exact_sql(db):
    mix = Mixture(32, 40)
    data = mix.draw(1500, seed=1)
    execute(db["dsn"], "CREATE TABLE items (id bigint PRIMARY KEY, v vector(32) NOT NULL)")
    copy_rows(db["dsn"], "items", data)
    for metric, op in (("cosine", "<=>"), ("l2", "<->"), ("inner_product", "<#>")):
        d = vi.normalize({"table": "items", "column": "v", "metric": metric})
        conn = psycopg2.connect(db["dsn"])
        cur = conn.cursor()
        rows = vi.table_state(cur, d)["rows"]
        keys, vecs = vr.sample_queries(cur, d, rows, 20)
        truth, stats = vr.exact_topk(cur, d, keys, vecs, K, batch_rows=256)  # several batches
        assert stats == {"rows": 1500, "seconds": stats["seconds"], "passes": 1}
        for key, vec, want in zip(keys, vecs, truth):
            cur.execute("SELECT ctid::text FROM items WHERE ctid <> %s::tid ORDER BY v " + op + " %s::vector LIMIT 10",
                        ("(%d,%d)" % (key // 65536, key % 65536), vr.literal(vec)))
            exact = [vr.tid_key(r[0]) for r in cur.fetchall()]
            assert int(key) not in want and len(set(want) & set(exact)) >= 9, metric  # float ties at most
        conn.close()
    lo = vr.bootstrap_bounds([1.0] * 50 + [0.5] * 50)
    assert lo[0] == 0.75 and 0.70 < lo[1] < 0.75 < lo[2] < 0.80


def held_out_rows_recall(dsn, data, ids, sql="SELECT id FROM items WHERE id <> %s ORDER BY v <=> %s::vector LIMIT 10"):
    """Recall@10 of rows ``ids`` of the table asked as queries with themselves excluded (the tuner's estimator, written
    again here), through a new session with the app's settings: the per-query recalls."""
    norm = data / np.linalg.norm(data, axis=1, keepdims=True)
    conn = psycopg2.connect(dsn)
    per = []
    with conn.cursor() as cur:
        for i in ids:
            scores = norm @ norm[i]
            scores[i] = -np.inf
            want = {int(x) for x in np.argsort(-scores)[:K]}
            cur.execute(sql, (int(i), vr.literal(data[i])))
            per.append(len({r[0] for r in cur.fetchall()} & want) / K)
    conn.close()
    return np.array(per)


def sigma(figure):
    """The standard error of a figure the tuner reports with its 95% bootstrap interval."""
    return (figure["upper"] - figure["lower"]) / (2 * 1.96)


def agrees(figure, per_query, n_sigma=3.5):
    """Two estimates of one recall agree within their combined sampling error (3.5 sigma: one run in 2,000 is
    outside by chance) and float ties (0.005)."""
    se = float(np.std(per_query, ddof=1) / np.sqrt(len(per_query)))
    margin = n_sigma * float(np.hypot(sigma(figure), se)) + 0.005
    return abs(figure["recall"] - float(np.mean(per_query))) <= margin, margin


# One broad Gaussian in 64 dimensions and a weak graph (m=8, ef_construction=16): every build measured here gave a
# recall@10 of 0.87-0.91 at ef_search 40 and 0.96-0.98 at 100, so ef_search 40 is certain to fail a 0.95 target
# (its 95% lower bound on 100 queries is under 0.90) and the steps above it decide.  Which step is stored depends on
# the build (pgvector draws each element's level at random): the tests assert what holds for any of them.
BROAD = dict(dims=64, clusters=1, spread=1.0, intrinsic=64)
WEAK = {"m": 8, "ef_construction": 16}


def test_held_out_estimate_is_reproduced_by_other_rows_and_is_not_re_measured(db):
    mix = Mixture(**BROAD)
    data = mix.draw(4000, seed=1)
    execute(db["dsn"], "CREATE TABLE items (id bigint PRIMARY KEY, v vector(64) NOT NULL)")
    copy_rows(db["dsn"], "items", data)
    decl = [dict({"table": "items", "column": "v"}, **WEAK)]
    vi.ensure_indexes(db["conn"], decl)
    r = vt.tune(db["conn"], decl, recall_target=0.95, sample_size=100, max_sample_size=400)
    e = r["indexes"][0]
    # no query sample: held-out rows, judged against the target plus their optimism margin; the stored value is
    # certified, and every step below it was measured and ruled out (40 always is, here)
    assert e["status"] == "measured" and e["lower"] >= 0.95 and r["warnings"] == [], e
    assert e["queries_from"] == "held_out" and e["held_out"]["lower"] >= e["judged_target"] == 0.95 + vt.HELD_OUT_MARGIN
    steps = [v for v in vt.EF_SEARCH_STEPS if v < e["value"]]
    assert 40 in steps and [c[0] for c in e["curve"]] == steps + [e["value"]], e["curve"]
    assert all(c[2] < e["judged_target"] for c in e["curve"][:-1]), e["curve"]
    assert e["truth_passes"] <= 2

    # 600 other rows of the table, asked through a new session as the app asks (the stored ef_search), agree with the
    # stored figure within the two samples' error: the figure is a property of the index, not of the tuner's sample
    others = np.random.default_rng(11).choice(len(data), 600, replace=False)
    rows_recall = held_out_rows_recall(db["dsn"], data, others)
    ok, margin = agrees(e["held_out"], rows_recall)
    assert ok, (e["detail"], float(rows_recall.mean()), margin)
    # queries that are not rows of the graph: the held-out rows run above them (measured on this data: 0.01-0.025
    # between ef_search 64 and 100, as a held-out row is still a node the search can walk through)
    fresh = fresh_recall(db["dsn"], data, mix.draw(1000, seed=9))
    raw = e["held_out"]["recall"]
    assert fresh <= raw + 0.02 and fresh >= raw - 0.06, (e["detail"], fresh)

    check = vt.recall_check(db["conn"], decl)["checks"][0]  # verify's check: the same estimate and bound
    assert check["status"] == "pass" and check["source"] == "stored", check
    assert (check["recall"], check["lower"], check["queries"]) == (e["recall"], e["lower"], e["queries"])

    t0 = time.perf_counter()
    again = vt.tune(db["conn"], decl, recall_target=0.95, sample_size=100, max_sample_size=400)
    assert not again["changed"] and again["indexes"][0]["status"] == "kept" and time.perf_counter() - t0 < 2

    before = counters(db["dsn"], "items")
    copy_rows(db["dsn"], "items", mix.draw(200, seed=2), start=10000)  # 5%: below the 10% re-measure share
    wait_for_counters(db["dsn"], "items", before + 200)
    assert vt.tune(db["conn"], decl, recall_target=0.95)["indexes"][0]["status"] == "kept"
    copy_rows(db["dsn"], "items", mix.draw(300, seed=3), start=20000)  # 12.5% in all
    wait_for_counters(db["dsn"], "items", before + 500)
    remeasured = vt.recall_check(db["conn"], decl)["checks"][0]
    assert remeasured["source"] == "measured" and "12.5% of the rows changed" in remeasured["reason"], remeasured
    r = vt.tune(db["conn"], decl, recall_target=0.95)
    assert r["indexes"][0]["status"] == "measured" and "12.5% of the rows changed" in r["indexes"][0]["reason"]
    meta = vi.read_index(psycopg2.connect(db["dsn"]).cursor(), "public", "items_v_hnsw_cosine")["meta"]
    assert meta["recall"]["rows"] == 4500 and meta["recall"]["value"] == r["indexes"][0]["value"]


def test_unreachable_target_reports_the_bound_measured_on_the_whole_sample(db):
    """No value reaches the target: the bound is stored, and its figure (the one verify reports and the warning
    names) is measured on every query of the sample, not on the few that sufficed to rule the smaller values out."""
    mix = Mixture(**BROAD)
    data = mix.draw(4000, seed=1)
    execute(db["dsn"], "CREATE TABLE items (id bigint PRIMARY KEY, v vector(64) NOT NULL)")
    copy_rows(db["dsn"], "items", data)
    decl = [{"table": "items", "column": "v", "m": 4, "ef_construction": 8}]
    vi.ensure_indexes(db["conn"], decl)
    # recall@10 at ef_search 40 on this graph is about 0.8: a 0.999 target is out of reach
    r = vt.tune(db["conn"], decl, recall_target=0.999, sample_size=100, max_sample_size=400, max_ef_search=40)
    e = r["indexes"][0]
    assert e["value"] == 40 and e["lower"] < 0.999 and e["queries"] == 400, e
    assert r["warnings"] == [vt.bound_warning(e["name"], K, "hnsw.ef_search", 40, e, 0.999, "hnsw")], r["warnings"]
    rows_recall = held_out_rows_recall(db["dsn"], data, np.random.default_rng(11).choice(len(data), 600, replace=False))
    ok, margin = agrees(e["held_out"], rows_recall)
    assert ok, (e["detail"], float(rows_recall.mean()), margin)


# ------------------------------------------------------------------ halfvec


def test_halfvec_expression_index_on_3072_dims_tuned_checked_and_restore_checked(db):
    mix = Mixture(3072, 60, spread=0.5)
    data = mix.draw(1200, seed=1)
    execute(db["dsn"], "CREATE TABLE items (id bigint PRIMARY KEY, v vector(3072) NOT NULL)")
    copy_rows(db["dsn"], "items", data)
    decl = [{"table": "items", "column": "v"}]  # more than 2000 dimensions: halfvec implied
    r = vi.ensure_indexes(db["conn"], decl)
    p = r["indexes"][0]
    assert p["name"] == "items_v_halfvec_hnsw_cosine" and p["storage"] == "halfvec_expr"
    assert "((v::halfvec(3072)) halfvec_cosine_ops)" in p["sql"].replace('"', ""), p["sql"]
    assert p["app_query"] == "SELECT ... FROM public.items ORDER BY v::halfvec(3072) <=> $1::halfvec(3072) LIMIT 10"
    assert not vi.ensure_indexes(db["conn"], decl)["changed"]
    assert not vi.ensure_indexes(db["conn"], [{"table": "items", "column": "v", "type": "halfvec"}])["changed"]
    app_sql = "SELECT id FROM items ORDER BY v::halfvec(3072) <=> %s::halfvec(3072) LIMIT 10"
    plan = execute(db["dsn"], "EXPLAIN " + app_sql, params=(vr.literal(data[0]),))
    assert "items_v_halfvec_hnsw_cosine" in "\n".join(x[0] for x in plan)
    t = vt.tune(db["conn"], decl, recall_target=0.95, sample_size=60, max_sample_size=120)
    e = t["indexes"][0]
    assert e["status"] == "measured" and e["lower"] >= 0.95, e
    held_out = fresh_recall(db["dsn"], data, mix.draw(60, seed=9), sql=app_sql)
    assert abs(e["held_out"]["recall"] - held_out) <= 0.03, (e["detail"], held_out)
    check = vt.recall_check(db["conn"], decl)["checks"][0]
    assert check["status"] == "pass" and "halfvec(3072)" in check["app_query"]
    conn = psycopg2.connect(db["dsn"])
    with conn.cursor() as cur:
        notes, problems = dump.nearest_neighbour_checks(cur)
    conn.close()
    assert problems == [] and len(notes) == 1 and "items_v_halfvec_hnsw_cosine (hnsw, halfvec_cosine_ops)" in notes[0]
    assert f"{dump.NN_SAMPLES}/{dump.NN_SAMPLES} got 10 rows" in notes[0], notes


# ------------------------------------------------------------------ filtered queries and iterative scans


def test_filtered_recall_and_iterative_scan(db):
    mix = Mixture(32, 100, spread=0.6)
    n = 6000
    data = mix.draw(n, seed=1)
    src = ["rare" if i % 10 == 0 else "common" for i in range(n)]  # 10%: too many for the planner to scan them all
    execute(db["dsn"], "CREATE TABLE items (id bigint PRIMARY KEY, v vector(32) NOT NULL, src text NOT NULL)")
    copy_rows(db["dsn"], "items", data, src=src)
    decl = [{"table": "items", "column": "v", "filter": "src = 'rare'"}]
    vi.ensure_indexes(db["conn"], decl)
    off = vt.tune(db["conn"], decl, iterative_scan="off", sample_size=100, max_sample_size=200)["indexes"][0]["filtered"]
    assert off["filter"] == "src = 'rare'" and off["index_used"], off
    assert off["full_k_share"] < 0.5 and off["recall"] < 0.8, off  # of the ef_search candidates, 10% match
    r = vt.tune(db["conn"], decl, iterative_scan="strict_order", max_scan_tuples=20000, sample_size=100, max_sample_size=200)
    assert r["settings"]["hnsw.iterative_scan"] == "strict_order" and r["settings"]["hnsw.max_scan_tuples"] == 20000
    assert any("SET hnsw.iterative_scan = 'strict_order'" in q for q in r["queries"])
    strict = r["indexes"][0]["filtered"]
    assert strict["full_k_share"] == 1.0 and strict["recall"] >= 0.9, strict
    conn = psycopg2.connect(db["dsn"])  # a new session gets the database setting
    with conn.cursor() as cur:
        cur.execute("SELECT '[1]'::vector")
        cur.execute("SHOW hnsw.iterative_scan")
        assert cur.fetchone()[0] == "strict_order"
    conn.close()
    check = vt.recall_check(db["conn"], decl)["checks"][0]
    assert check["source"] == "stored" and check["filtered"]["full_k_share"] == 1.0 and check["status"] == "pass"
    assert "filtered (src = 'rare')" in check["detail"]
    execute(db["dsn"], "ALTER DATABASE \"%s\" SET hnsw.iterative_scan = off" % db["name"])
    failed = vt.recall_check(db["conn"], decl)["checks"][0]  # the setting changed: measured again, and it fails
    assert failed["source"] == "measured" and failed["status"] == "fail", failed
    assert "iterative_scan" in failed["cause"] and "pgvector_iterative_scan" in failed["fix"]


def test_bad_filter_and_type_are_refused_before_anything_changes():
    with pytest.raises(vi.VectorIndexError) as ei:
        vi.normalize({"table": "t", "column": "v", "filter": "a = 1; DROP TABLE t"})
    assert "one SQL predicate" in ei.value.msg
    with pytest.raises(vi.VectorIndexError) as ei:
        vi.normalize({"table": "t", "column": "v", "type": "float8"})
    assert "auto, vector, halfvec" in ei.value.msg
