#!/usr/bin/env python3
"""Benchmark the pgvector tuner: does the recall it promises hold on queries it has never seen?

Generates reproducible 1536-dim datasets (numpy, fixed seeds; each cluster spans a low-dimensional
subspace, as text embeddings do, plus a little isotropic noise):

  small_clusters  many small clusters (rows / 10 of them, ~10 rows each)
  power_law       400 clusters whose sizes follow a power law (Zipf, s = 1.1), spreads mixed
                  (log-normal per cluster, 0.15 to 1.0)
  noisy           32 clusters plus 20% background noise: points in no cluster, spread over a shared
                  48-dim subspace (embeddings of unrelated text still share structure)
  isotropic       32 clusters plus 20% isotropic noise in all 1536 dims (distances concentrate: the
                  worst case, not a model of text; only with --dataset isotropic)

The queries are drawn from the same distribution and are never rows of the table (generated
after the rows, from the same model). Per dataset, side by side:

  * the tuner (vector_tune.tune, as the role runs it: hnsw m=16 ef_construction=64, target
    recall@10 0.95): the ef_search it chose, its estimate and 95% lower bound, tuning seconds;
  * held-out recall@10 of the fresh queries through a new session (it gets the stored
    ALTER DATABASE setting, as the application does), with its own bootstrap bound;
  * median latency through the index vs exact search (index scans off), and the ratio;
  * ground truth for the fresh queries: one binary COPY pass + numpy (vector_recall.exact_topk)
    vs one exact SQL scan per query, seconds each.

Then tuning seconds vs rows (768 dims, small_clusters; the median of 3 fresh runs): 20,000 rows, 100,000 rows of the
same distribution (its 2,000 clusters), and 100,000 rows with the clusters grown with the rows (10,000), and with
``--site`` the no-op ``site.yml`` seconds vs rows in the local environment's embeddings table
(0 and --site-rows rows), with the tuning and recall-check task times from profile_tasks, next
to what main's engine (8d9de37, loaded from git) spends on the same table in process.

Then the recall the app gets (``--sample-only`` for it alone, ``--no-sample`` to skip it): per query distribution
(small clusters, many smaller ones, power law, and two shifted ones: short queries and another mixture of the same
clusters), the setting the tuner stores from held-out rows less their margin (no sampled queries) and from the app's
sampled queries, each against the recall of fresh queries at that setting, with held-out rows' bias beside.

Connection: ``$NDIS_LOCAL_STACK_DIR/stack.json`` (default /tmp/ndis-local-stack). Each dataset gets
a scratch database, dropped afterwards. Targets are printed, never enforced.

Usage: python bench/bench_vector.py [--rows 20000] [--queries 200] [--quick] [--dataset NAME]
                                    [--no-scaling] [--scaling-only] [--baseline REV] [--site] [--site-rows 30000]
       (--baseline REV: the scaling table also runs git REV's tuner on each index, just before the current one)
       (--quick = 4000 rows, 100 queries, no scaling run; --scaling-only = only tuning time vs rows)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "collections"))

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402

from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi  # noqa: E402
from ansible_collections.ndis.dbops.plugins.module_utils import vector_recall as vr  # noqa: E402
from ansible_collections.ndis.dbops.plugins.module_utils import vector_sample as vs  # noqa: E402
from ansible_collections.ndis.dbops.plugins.module_utils import vector_tune as vt  # noqa: E402

K = 10
TARGET = 0.95
DATASETS = ("small_clusters", "power_law", "noisy")
ALL_DATASETS = DATASETS + ("isotropic",)


def connection_info() -> dict:
    stack_dir = Path(os.environ.get("NDIS_LOCAL_STACK_DIR", "/tmp/ndis-local-stack"))
    pg = json.loads((stack_dir / "stack.json").read_text())["pg"]
    password = Path(pg["password_file"]).read_text().strip() if pg.get("password_file") else ""
    return {"host": pg["host"], "port": int(pg["port"]), "user": pg["user"], "password": password,
            "source": str(stack_dir / "stack.json"), "dir": str(stack_dir)}


# ------------------------------------------------------------------ data


class Model:
    """A mixture: cluster centres, a low-dimensional basis per cluster, per-cluster spread and weight,
    and a share of background noise. ``draw(n, seed)`` samples n points from it."""

    def __init__(self, kind: str, rows: int, dims: int, seed: int):
        rng = np.random.default_rng(seed)
        self.kind, self.dims, self.intrinsic = kind, dims, 24
        if kind == "small_clusters":
            clusters = max(rows // 10, 2)
            self.weights = np.full(clusters, 1.0 / clusters)
            self.spread = np.full(clusters, 0.35)
            self.noise_share = 0.0
        elif kind == "power_law":
            clusters = 400
            w = 1.0 / np.arange(1, clusters + 1) ** 1.1
            self.weights = w / w.sum()
            self.spread = np.clip(rng.lognormal(np.log(0.4), 0.5, clusters), 0.15, 1.0)
            self.noise_share = 0.0
        elif kind in ("noisy", "isotropic"):
            clusters = 32
            self.weights = np.full(clusters, 1.0 / clusters)
            self.spread = np.full(clusters, 0.5)
            self.noise_share = 0.2
        else:
            raise SystemExit(f"unknown dataset {kind}")
        self.centers = rng.normal(0, 1, (clusters, dims)).astype(np.float32)
        nb = min(clusters, 64)  # bases are shared round-robin: memory stays small with thousands of clusters
        self.basis = (rng.normal(0, 1, (nb, self.intrinsic, dims)) / np.sqrt(self.intrinsic)).astype(np.float32)
        self.noise_basis = None if kind == "isotropic" else (rng.normal(0, 1, (48, dims)) / np.sqrt(48)).astype(np.float32)

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        label = rng.choice(len(self.weights), n, p=self.weights)
        noise = rng.random(n) < self.noise_share
        out = np.empty((n, self.dims), dtype=np.float32)
        for start in range(0, n, 2000):
            sl = slice(start, min(start + 2000, n))
            lab = label[sl]
            z = rng.normal(0, 1, (len(lab), self.intrinsic)).astype(np.float32)
            local = np.einsum("ni,nid->nd", z, self.basis[lab % self.basis.shape[0]])
            block = self.centers[lab] + self.spread[lab, None] * local
            block += 0.05 * rng.normal(0, 1, (len(lab), self.dims)).astype(np.float32)
            bg = noise[sl]
            if bg.any():  # background: no cluster, about the norm of a clustered point
                nbg = int(bg.sum())
                if self.noise_basis is None:
                    g = rng.normal(0, 1, (nbg, self.dims)).astype(np.float32)
                else:
                    g = rng.normal(0, 1, (nbg, 48)).astype(np.float32) @ self.noise_basis
                    g += 0.05 * rng.normal(0, 1, (nbg, self.dims)).astype(np.float32)
                block[bg] = g * (np.linalg.norm(block[~bg], axis=1).mean() if (~bg).any() else 40.0) / np.sqrt(self.dims)
            out[sl] = block
        return out


def copy_binary(conn, table: str, data: np.ndarray) -> float:
    dims = data.shape[1]
    buf = BytesIO()
    buf.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
    head = struct.pack("!h", 2)
    vec_head = struct.pack("!ihh", 4 + 4 * dims, dims, 0)
    be = data.astype(">f4")
    for i in range(len(data)):
        buf.write(head + struct.pack("!iq", 8, i) + vec_head + be[i].tobytes())
    buf.write(struct.pack("!h", -1))
    buf.seek(0)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} (id, v) FROM STDIN WITH (FORMAT binary)", buf)
    return time.perf_counter() - t0


def numpy_truth(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    norm = data / np.linalg.norm(data, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = qn @ norm.T
    return np.argsort(-sims, axis=1)[:, :K]


# ------------------------------------------------------------------ measurements


def scratch(info: dict, prefix: str):
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    base = dict(host=info["host"], port=info["port"], user=info["user"], password=info["password"])
    admin = psycopg2.connect(dbname="postgres", **base)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    dsn = " ".join(f"{k}='{v}'" for k, v in dict(base, dbname=name).items())
    return name, dsn, admin


def load_table(dsn: str, data: np.ndarray) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, v vector(%d) NOT NULL)" % data.shape[1])
    copy_binary(conn, "items", data)
    cur.execute("VACUUM ANALYZE items")
    conn.close()


def build(dsn: str, decl: dict) -> float:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    plan = vi.plan_index(conn.cursor(), decl)
    settings = vi.build_settings(plan, max_memory="1GB", parallel_workers=0)
    t0 = time.perf_counter()
    vi.apply_plan(conn, plan, settings)
    conn.close()
    return time.perf_counter() - t0


def app_search(dsn: str, queries: np.ndarray, exact: bool = False, limit: int | None = None):
    """(ids per query, ms per query) through a new session with the database's stored defaults."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    ids, times = [], []
    try:
        with conn.cursor() as cur:
            if exact:
                cur.execute("SET enable_indexscan = off")
                cur.execute("SET enable_bitmapscan = off")
            for q in queries[:limit]:
                lit = vr.literal(q)
                t0 = time.perf_counter()
                cur.execute("SELECT id FROM items ORDER BY v <=> %s::vector LIMIT %s", (lit, K))
                ids.append([r[0] for r in cur.fetchall()])
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
    return ids, times


def run_dataset(info: dict, kind: str, rows: int, nq: int) -> dict:
    name, dsn, admin = scratch(info, f"bench_vec_{kind}")
    out = {"dataset": kind}
    try:
        model = Model(kind, rows, 1536, seed=11)
        data = model.draw(rows, seed=1)
        queries = model.draw(nq, seed=2)  # fresh draws: never rows of the table
        load_table(dsn, data)
        decl = {"table": "items", "column": "v", "metric": "cosine", "method": "auto"}
        out["build_s"] = build(dsn, decl)
        t0 = time.perf_counter()
        tuned = vt.tune({"dsn": dsn}, [decl], recall_target=TARGET, k=K, scope="database")
        out["tune_s"] = time.perf_counter() - t0
        entry = tuned["indexes"][0]
        out.update(ef=entry["value"], est=entry["recall"], lower=entry["lower"], tuner_queries=entry["queries"],
                   rounds=entry["rounds"], curve=entry["curve"], truth_s=entry["truth_seconds"])
        want = numpy_truth(data, queries)
        got, times = app_search(dsn, queries)
        per = [len(set(g) & set(int(x) for x in w)) / K for g, w in zip(got, want)]
        est, lo, hi = vr.bootstrap_bounds(per)
        out.update(held_out=est, held_out_lower=lo, index_ms=statistics.median(times))
        _, exact_times = app_search(dsn, queries, exact=True, limit=50)
        out["exact_ms"] = statistics.median(exact_times)
        # ground truth: one pass for all fresh queries vs one exact scan per query
        conn = psycopg2.connect(dsn)
        cur = conn.cursor()
        d = vi.normalize(decl)
        vi.table_state(cur, d)
        keys = np.full(len(queries), -1, dtype=np.int64)
        _, st = vr.exact_topk(cur, d, keys, queries, K)
        conn.close()
        out["one_pass_s"] = st["seconds"]
        t0 = time.perf_counter()
        app_search(dsn, queries, exact=True)
        out["per_query_scans_s"] = time.perf_counter() - t0
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return out


def baseline_tuner(rev: str):
    """vector_tune / vector_recall as they were at git ``rev``, loaded side by side with the current ones."""
    mods = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-vec-"))
    for name in ("vector_recall", "vector_tune"):
        src = subprocess.run(["git", "show", f"{rev}:collections/ansible_collections/ndis/dbops/plugins/module_utils/{name}.py"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        path = tmp / f"{name}_baseline.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"{name}_baseline", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    mods[1].vr = mods[0]
    return mods[1]


def tuning_scaling(info: dict, rows: int, dims: int, baseline=None, model_rows: int | None = None) -> dict:
    """Tuning seconds on ``rows`` drawn from small_clusters as modelled for ``model_rows`` (its cluster count is
    model_rows / 10): with model_rows fixed, more rows of one distribution; with model_rows = rows, more clusters too."""
    name, dsn, admin = scratch(info, "bench_vec_scale")
    try:
        model = Model("small_clusters", model_rows or rows, dims, seed=21)
        load_table(dsn, model.draw(rows, seed=3))
        decl = {"table": "items", "column": "v", "metric": "cosine", "method": "auto"}
        build_s = build(dsn, decl)
        base = None
        if baseline is not None:  # on the same index, just before the current tuner (check mode: nothing stored)
            t0 = time.perf_counter()
            b = baseline.tune({"dsn": dsn}, [decl], recall_target=TARGET, k=K, scope="database", check_mode=True)["indexes"][0]
            base = {"tune_s": time.perf_counter() - t0, "ef": b["value"], "est": b["recall"], "lower": b["lower"],
                    "queries": b["queries"], "truth_s": b["truth_seconds"], "rounds": b["rounds"], "load": os.getloadavg()[0]}
        runs = []  # two check-mode runs (nothing stored: each measures afresh), then the real one: the median of 3
        for check in (True, True, False):
            t0 = time.perf_counter()
            tuned = vt.tune({"dsn": dsn}, [decl], recall_target=TARGET, k=K, scope="database", check_mode=check)
            runs.append(time.perf_counter() - t0)
        tune_s = statistics.median(runs)
        t0 = time.perf_counter()
        again = vt.tune({"dsn": dsn}, [decl], recall_target=TARGET, k=K, scope="database")
        noop_s = time.perf_counter() - t0
        e = tuned["indexes"][0]
        return {"rows": rows, "dims": dims, "build_s": build_s, "tune_s": tune_s, "runs": runs, "noop_s": noop_s, "ef": e["value"],
                "est": e["recall"], "lower": e["lower"], "queries": e["queries"], "truth_s": e["truth_seconds"],
                "rounds": e["rounds"], "kept": again["indexes"][0]["status"], "load": os.getloadavg()[0], "baseline": base}
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def filtered(info: dict, rows: int, share: float, dims: int) -> list[dict]:
    """Filtered recall (``WHERE src = 'rare'``, ``share`` of the rows) with each iterative-scan mode, at the tuned
    ef_search: the recall check's filtered measurement (200 held-out queries, the planner's own plan)."""
    name, dsn, admin = scratch(info, "bench_vec_filter")
    try:
        model = Model("power_law", rows, dims, seed=41)
        load_table(dsn, model.draw(rows, seed=5))
        execute = psycopg2.connect(dsn)
        execute.autocommit = True
        every = int(round(1 / share))
        execute.cursor().execute("ALTER TABLE items ADD COLUMN src text NOT NULL DEFAULT 'common'")
        execute.cursor().execute("UPDATE items SET src = 'rare' WHERE id %% %d = 0" % every)
        execute.cursor().execute("VACUUM ANALYZE items")
        execute.close()
        decl = {"table": "items", "column": "v", "metric": "cosine", "method": "auto", "filter": "src = 'rare'"}
        build(dsn, decl)
        out = []
        for mode in vt.ITERATIVE_SCAN:
            r = vt.tune({"dsn": dsn}, [decl], recall_target=TARGET, k=K, scope="database", iterative_scan=mode)
            f = r["indexes"][0]["filtered"]
            out.append({"mode": mode, "ef": r["indexes"][0]["value"], **f})
        return out
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# ------------------------------------------------------------------ no-op site.yml


def run_site(info: dict) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), NDIS_LOCAL_STACK_DIR=info["dir"],
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="all")
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "site.yml", "-l", "local"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit("site.yml failed:\n" + proc.stdout[-3000:])
    tasks = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(.+?) -+ (\d+\.\d+)s$", line.strip())
        if m:
            tasks[m.group(1).strip()] = tasks.get(m.group(1).strip(), 0.0) + float(m.group(2))
    pick = {"tuning": sum(v for k, v in tasks.items() if "tuning | Set ef_search" in k),
            "recall": sum(v for k, v in tasks.items() if "recall | Measure recall" in k)}
    return dt, pick


def main_engine():
    """vector_index.py as it was on main (8d9de37), loaded from git, to time its tuner and recall check in process
    (with the pg_connection.py it imported then, since replaced by postgres.py)."""
    from ansible_collections.ndis.dbops.plugins import module_utils as mu

    tmp = Path(tempfile.mkdtemp(prefix="bench-vec-"))
    mods = {}
    for name in ("pg_connection", "vector_index"):
        src = subprocess.run(["git", "show", f"8d9de37:collections/ansible_collections/ndis/dbops/plugins/module_utils/{name}.py"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        path = tmp / f"{name}_main.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"{name}_main", path)
        mods[name] = importlib.util.module_from_spec(spec)
        if name == "pg_connection":  # what the old vector_index imports, under the name it imports
            spec.loader.exec_module(mods[name])
            sys.modules[mu.__name__ + ".pg_connection"] = mods[name]
            mu.pg_connection = mods[name]
    try:
        mods["vector_index"].__spec__.loader.exec_module(mods["vector_index"])
    finally:
        sys.modules.pop(mu.__name__ + ".pg_connection", None)
        del mu.pg_connection
    return mods["vector_index"]


def site_noop(info: dict, rows: int) -> list[dict]:
    base = dict(host=info["host"], port=info["port"], user=info["user"], password=info["password"])
    out = []
    dsn = " ".join(f"{k}='{v}'" for k, v in dict(base, dbname="ndis_chatbot").items())
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.Error:
        run_site(info)  # the first deployment
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM embeddings")
    if cur.fetchone()[0]:
        cur.execute("TRUNCATE embeddings")
        run_site(info)
    dt, pick = run_site(info)
    out.append({"rows": 0, "noop_s": dt, **pick})
    model = Model("small_clusters", rows, 1536, seed=31)
    data = model.draw(rows, seed=4)
    buf = BytesIO()
    for i, v in enumerate(data):
        buf.write(("doc%d\t0\t%s\n" % (i, vr.literal(v))).encode())
    buf.seek(0)
    cur.copy_expert("COPY embeddings (doc_id, chunk_idx, embedding) FROM STDIN", buf)
    cur.execute("ANALYZE embeddings")
    t0 = time.perf_counter()
    _, first = run_site(info)
    first_s = time.perf_counter() - t0
    dt, pick = run_site(info)
    decl = [{"table": "embeddings", "column": "embedding"}]
    old = main_engine()
    t0 = time.perf_counter()
    old.tune({"dsn": dsn}, decl, sample_size=50)
    old_tune = time.perf_counter() - t0
    t0 = time.perf_counter()
    old.recall_check({"dsn": dsn}, decl, sample_size=50)
    old_check = time.perf_counter() - t0
    out.append({"rows": rows, "noop_s": dt, **pick, "first_s": first_s, "first_tuning": first["tuning"],
                "main_tune_s": old_tune, "main_check_s": old_check})
    cur.execute("TRUNCATE embeddings")  # the next site.yml run finds an empty table again
    conn.close()
    return out


# ------------------------------------------------------------------ report


def datasets(info: dict, args) -> None:
    print(f"\n{'dataset':<15} {'ef':>4} {'tuner est':>9} {'lower':>6} {'n':>4} {'held-out':>8} {'(lower)':>7} "
          f"{'|diff|':>6} {'idx ms':>7} {'exact ms':>8} {'speedup':>7} {'tune s':>6} {'truth 1-pass s':>14} {'per-query scans s':>17}",
          flush=True)
    results = []
    for kind in args.dataset or DATASETS:
        r = run_dataset(info, kind, args.rows, args.queries)
        results.append(r)
        print(f"{kind:<15} {r['ef']:>4} {r['est']:>9.3f} {r['lower']:>6.3f} {r['tuner_queries']:>4} {r['held_out']:>8.3f} "
              f"{r['held_out_lower']:>7.3f} {abs(r['est'] - r['held_out']):>6.3f} {r['index_ms']:>7.2f} {r['exact_ms']:>8.1f} "
              f"{r['exact_ms'] / r['index_ms']:>6.1f}x {r['tune_s']:>6.1f} {r['one_pass_s']:>14.2f} {r['per_query_scans_s']:>17.2f}",
              flush=True)
    for r in results:
        print(f"  {r['dataset']}: curve " + ", ".join(f"{v}:{rc:.3f}(>={lo:.3f})" for v, rc, lo, _ in r["curve"])
              + f"; {r['rounds']} round(s); tuner's ground truth {r['truth_s']:.2f}s")
    print("targets: held-out >= 0.95 on every dataset: %s; estimate within 0.03 of held-out: %s; index >= 10x faster "
          "than exact: %s" % (met(all(r["held_out"] >= 0.95 for r in results)),
                              met(all(abs(r["est"] - r["held_out"]) <= 0.03 for r in results)),
                              met(all(r["exact_ms"] / r["index_ms"] >= 10 for r in results))))


# The query distributions of the sample table (--sample): (name, table model, rows per cluster, query shift)
SAMPLE_CASES = (
    ("small_clusters", "small_clusters", 10, None),
    ("many_small (~7)", "small_clusters", 7, None),
    ("power_law", "power_law", None, None),
    ("short queries", "small_clusters", 7, "short"),
    ("other mixture", "small_clusters", 7, "mixture"),
)


def query_model(model: Model, shift):
    """The app's queries: the rows' own distribution, or shifted - ``short``: a query near its cluster's centre with
    more noise off the cluster's subspace (a short question is a blurred version of its passage); ``mixture``: the
    same clusters, a different mixture (a tenth of them carry all the traffic)."""
    if shift is None:
        return model.draw
    if shift == "mixture":
        rng = np.random.default_rng(5)
        w = np.zeros(len(model.weights))
        w[rng.choice(len(w), max(len(w) // 10, 1), replace=False)] = 1.0
        q = Model.__new__(Model)
        q.__dict__.update(model.__dict__)
        q.weights = w / w.sum()
        return q.draw

    def short(n, seed):
        x = model.draw(n, seed)
        rng = np.random.default_rng(seed + 1000)
        return (x + 0.25 * rng.normal(0, 1, x.shape).astype(np.float32) * np.linalg.norm(x, axis=1, keepdims=True)
                / np.sqrt(x.shape[1])).astype(np.float32)
    return short


def fresh_at(dsn: str, data: np.ndarray, queries: np.ndarray):
    """Recall@10 of fresh queries through a new session (the stored setting): estimate and 95% bounds."""
    want = numpy_truth(data, queries)
    got, _ = app_search(dsn, queries)
    per = [len(set(g) & set(int(x) for x in w)) / K for g, w in zip(got, want)]
    return vr.bootstrap_bounds(per)


def sample_case(info: dict, label: str, kind: str, per_cluster, shift, rows: int, dims: int, nq: int, ns: int) -> dict:
    """Held-out fallback vs the app's sample vs fresh queries at each stored setting, on one distribution."""
    name, dsn, admin = scratch(info, "bench_sample")
    out = {"case": label}
    try:
        model = Model(kind, rows * 10 // per_cluster if per_cluster else rows, dims, seed=11)
        data = model.draw(rows, seed=1)
        draw = query_model(model, shift)
        load_table(dsn, data)
        decl = {"table": "items", "column": "v", "metric": "cosine", "method": "auto"}
        build(dsn, decl)
        vs.ensure({"dsn": dsn})
        qs = {"schema": vs.DEFAULT_SCHEMA, "table": vs.DEFAULT_TABLE}
        # 1. the fallback: no sampled queries, held-out rows less the margin
        t0 = time.perf_counter()
        h = vt.tune({"dsn": dsn}, [decl], recall_target=TARGET, k=K, query_sample=qs)["indexes"][0]
        out.update(h_s=time.perf_counter() - t0, h_ef=h["value"], h_raw=h["held_out"]["recall"], h_raw_lower=h["held_out"]["lower"],
                   h_est=h["recall"], h_lower=h["lower"], h_n=h["queries"])
        out["h_fresh"] = fresh_at(dsn, data, draw(nq, seed=21))
        # 2. the app's sample: ns of its queries recorded, then tuned on them
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            for q in draw(ns, seed=31):
                cur.execute("INSERT INTO query_sample.vector_queries (index_name, embedding) VALUES (%s, %s::vector)",
                            ("items_v_hnsw_cosine", vr.literal(q)))
        conn.close()
        t0 = time.perf_counter()
        sm = vt.tune({"dsn": dsn}, [decl], recall_target=TARGET, k=K, query_sample=qs)["indexes"][0]
        out.update(s_s=time.perf_counter() - t0, s_ef=sm["value"], s_est=sm["recall"], s_lower=sm["lower"], s_n=sm["queries"],
                   s_from=sm["queries_from"])
        out["s_fresh"] = fresh_at(dsn, data, draw(nq, seed=41))
        # 3. held-out rows at the sample's setting, the tuner's way (400 rows): their bias at the same setting
        conn = psycopg2.connect(dsn)
        cur = conn.cursor()
        d = vi.normalize(decl)
        vi.table_state(cur, d)
        d["resolved_method"] = "hnsw"
        st = vr.Sample(cur, d, rows, K, 400, 400).measure({"hnsw.ef_search": sm["value"]})
        # and all ns sampled queries at it (the tuner stops at the queries its decision needed: 100 here)
        rd = vs.read(cur, vs.DEFAULT_SCHEMA, vs.DEFAULT_TABLE, d, ns)
        whole = vr.AppQueries(cur, d, rd, K, ns, ns).measure({"hnsw.ef_search": sm["value"]})
        conn.close()
        out.update(h_at_s=st["recall"], s_all=whole["recall"], s_all_lower=whole["lower"], s_all_upper=whole["upper"])
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return out


def sample_table(info: dict, args) -> None:
    rows, dims, nq, ns = args.sample_rows, args.sample_dims, args.queries * 2, args.sample_queries
    print(f"\nrecall the app gets: {rows} rows x {dims} dims, hnsw m=16 ef_construction=64, target {TARGET}; "
          f"fresh = {nq} new queries of the app's distribution through a new session at the stored setting (95% bounds); "
          f"held-out margin {vt.HELD_OUT_MARGIN}; {ns} sampled queries", flush=True)
    print(f"{'distribution':<17} | {'fallback ef':>11} {'held-out raw':>12} {'promised (lower)':>16} {'fresh (lower-upper)':>19} "
          f"{'raw - fresh':>11} | {'sample ef':>9} {'sample est (lower)':>18} {'fresh (lower-upper)':>19} {'est - fresh':>11} "
          f"{'all sampled':>15} {'- fresh':>7} {'held-out at it':>14} {'bias':>6} | {'tune s':>9}", flush=True)
    results = []
    for label, kind, per_cluster, shift in SAMPLE_CASES:
        r = sample_case(info, label, kind, per_cluster, shift, rows, dims, nq, ns)
        results.append(r)
        hf, sf = r["h_fresh"], r["s_fresh"]
        print(f"{label:<17} | {r['h_ef']:>11} {r['h_raw']:>12.3f} {r['h_est']:>8.3f} ({r['h_lower']:.3f}) "
              f"{hf[0]:>7.3f} ({hf[1]:.3f}-{hf[2]:.3f}) {r['h_raw'] - hf[0]:>+11.3f} | {r['s_ef']:>9} "
              f"{r['s_est']:>10.3f} ({r['s_lower']:.3f}) {sf[0]:>7.3f} ({sf[1]:.3f}-{sf[2]:.3f}) {r['s_est'] - sf[0]:>+11.3f} "
              f"{r['s_all']:>15.3f} {r['s_all'] - sf[0]:>+7.3f} {r['h_at_s']:>14.3f} {r['h_at_s'] - sf[0]:>+6.3f} | "
              f"{r['h_s']:>4.1f}/{r['s_s']:<4.1f}", flush=True)
    print("targets: sample estimate within 0.01 of fresh on every distribution: %s (the tuner's, on the queries its "
          "decision needed), %s (all the sampled queries); fresh >= %.2f at the sample's setting: "
          "%s; at the fallback's setting: %s; the fallback never promises more than fresh queries get: %s" % (
              met(all(abs(r["s_est"] - r["s_fresh"][0]) <= 0.01 for r in results)),
              met(all(abs(r["s_all"] - r["s_fresh"][0]) <= 0.01 for r in results)), TARGET,
              met(all(r["s_fresh"][0] >= TARGET for r in results)), met(all(r["h_fresh"][0] >= TARGET for r in results)),
              met(all(r["h_est"] <= r["h_fresh"][0] for r in results))))


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="4000 rows, 100 queries, no scaling or filtered run")
    ap.add_argument("--dataset", choices=ALL_DATASETS, action="append")
    ap.add_argument("--no-datasets", action="store_true", help="skip the per-distribution table")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--scaling-only", action="store_true", help="only the tuning-time-vs-rows table (20k and 100k x 768)")
    ap.add_argument("--no-filtered", action="store_true")
    ap.add_argument("--baseline", metavar="REV", help="also run the tuner of git REV on each scaling index, just before the current one")
    ap.add_argument("--filter-share", type=float, default=0.1)
    ap.add_argument("--filter-dims", type=int, default=128,
                    help="dims of the filtered table (at 1536 the planner scans a 20k table for a 10%% filter: all exact)")
    ap.add_argument("--site", action="store_true", help="also time no-op site.yml runs vs rows (local environment)")
    ap.add_argument("--site-rows", type=int, default=30000)
    ap.add_argument("--no-sample", action="store_true", help="skip the held-out vs sampled vs fresh queries table")
    ap.add_argument("--sample-only", action="store_true", help="only that table")
    ap.add_argument("--sample-rows", type=int, default=20000)
    ap.add_argument("--sample-dims", type=int, default=1536)
    ap.add_argument("--sample-queries", type=int, default=400, help="queries recorded in the sample table")
    args = ap.parse_args()
    args.sample = not args.no_sample
    if args.quick:
        args.rows, args.queries, args.no_scaling, args.no_filtered, args.sample = 4000, 100, True, True, False
    if args.scaling_only:
        args.no_datasets, args.no_filtered, args.no_scaling, args.site, args.sample = True, True, False, False, False
    if args.sample_only:
        args.no_datasets, args.no_filtered, args.no_scaling, args.site, args.sample = True, True, True, False, True
    info = connection_info()
    print(f"pgvector tuner bench: {args.rows} rows x 1536 dims, {args.queries} fresh queries, recall@{K}, cosine, "
          f"target {TARGET}; stack {info['source']}; load average %.1f %.1f %.1f" % os.getloadavg(), flush=True)
    if not args.no_datasets:
        datasets(info, args)
    if not args.no_filtered:
        print(f"\nfiltered search, {args.filter_share:.0%} of {args.rows} rows x {args.filter_dims} dims match (power_law): "
              "iterative scan modes", flush=True)
        print(f"{'iterative_scan':<15} {'ef':>4} {'recall':>7} {'lower':>6} {'got k rows':>10} {'median ms':>9} {'index used':>10}")
        for f in filtered(info, args.rows, args.filter_share, args.filter_dims):
            print(f"{f['mode']:<15} {f['ef']:>4} {f['recall']:>7.3f} {f['lower']:>6.3f} {f['full_k_share']:>10.0%} "
                  f"{f['median_ms']:>9.2f} {str(f['index_used']):>10}", flush=True)
    if not args.no_scaling:
        baseline = baseline_tuner(args.baseline) if args.baseline else None
        print(f"\n{'tuning vs rows':<15} {'dims':>5} {'tuner':>8} {'load':>5} {'build s':>8} {'tune s':>7} {'truth s':>7} "
              f"{'ef':>4} {'est':>6} {'lower':>6} {'n':>4} {'rounds':>6} {'re-run s':>8}   (tune s: the median of 3 fresh runs)", flush=True)
        scale = {}
        # 20k, then 100k of the same distribution (2,000 clusters: 5x the rows, the same data), then 100k with the
        # cluster count grown with the rows (10,000 clusters of ~10: harder data, which needs a higher ef_search)
        for label, rows, model_rows in (("20k", 20000, 20000), ("100k same", 100000, 20000), ("100k grown", 100000, 100000)):
            s = tuning_scaling(info, rows, 768, baseline, model_rows)
            scale[label] = s
            b = s["baseline"]
            head = f"{rows:<6} {model_rows // 10:>5}cl"
            if b:
                print(f"{head:<15} {s['dims']:>5} {args.baseline[:8]:>8} {b['load']:>5.1f} {s['build_s']:>8.1f} {b['tune_s']:>7.1f} "
                      f"{b['truth_s']:>7.2f} {b['ef']:>4} {b['est']:>6.3f} {b['lower']:>6.3f} {b['queries']:>4} {b['rounds']:>6}",
                      flush=True)
            print(f"{head:<15} {s['dims']:>5} {'current':>8} {s['load']:>5.1f} {s['build_s']:>8.1f} {s['tune_s']:>7.1f} "
                  f"{s['truth_s']:>7.2f} {s['ef']:>4} {s['est']:>6.3f} {s['lower']:>6.3f} {s['queries']:>4} {s['rounds']:>6} "
                  f"{s['noop_s']:>8.2f} ({s['kept']})   runs " + " / ".join("%.2f" % r for r in s["runs"]), flush=True)
            if b:
                print(f"{'':<15} current / {args.baseline[:8]}: {s['tune_s'] / b['tune_s']:.2f}x the tuning time", flush=True)
        small, same, grown = scale["20k"], scale["100k same"], scale["100k grown"]
        print("targets: tuning <= 60 s at 100k rows: %s (%.1f s, %.1f s); no worse than linear in rows, the same "
              "distribution: %s (%.1fx the time for 5x the rows); with the clusters grown too: %.1fx (ef_search %s -> %s)"
              % (met(max(same["tune_s"], grown["tune_s"]) <= 60), same["tune_s"], grown["tune_s"],
                 met(same["tune_s"] / same["rows"] <= small["tune_s"] / small["rows"] * 1.1), same["tune_s"] / small["tune_s"],
                 grown["tune_s"] / small["tune_s"], small["ef"], grown["ef"]))
    if args.sample:
        sample_table(info, args)
    if args.site:
        print(f"\n{'no-op site.yml':<15} {'total s':>8} {'tuning s':>8} {'recall s':>8}   main's engine on the same table (in process)",
              flush=True)
        for s in site_noop(info, args.site_rows):
            extra = (f"   tuner {s['main_tune_s']:.1f}s + recall check {s['main_check_s']:.1f}s; the run that measured: "
                     f"{s['first_s']:.1f}s (tuning {s['first_tuning']:.1f}s)") if "main_tune_s" in s else ""
            print(f"{s['rows']:<15} {s['noop_s']:>8.1f} {s['tuning']:>8.1f} {s['recall']:>8.1f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
