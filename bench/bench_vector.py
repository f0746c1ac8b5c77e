#!/usr/bin/env python3
"""Benchmark pgvector index choices: the runbook's step 5 against what the pgvector role does.

Generates reproducible clustered 1536-dim datasets (numpy, fixed seeds; low intrinsic dimension
per cluster, as text embeddings have):

  easy   few large clusters (8)
  hard   thousands of small clusters (rows / 10)

and, for each, side by side:

  (a) runbook as written   ivfflat lists=100 created on the empty table, then the rows loaded;
                           searched at the default ivfflat.probes=1
  (b) runbook, after load  the same index built on the loaded table (default maintenance_work_mem
                           64MB first; if that fails, the failure is printed and it is retried with
                           the size the role would use); probes=1
  (c) the role's choice    ndis.dbops.pgvector_index (auto = hnsw m=16 ef_construction=64, memory
                           sized to the build), then ndis.dbops.pgvector_tune to recall@10 0.95
                           (its chosen ef_search is what is measured)
  (d) exact                sequential scan, index scans disabled

Columns: build time (CREATE INDEX; for (a) the extra time the load took because of the index),
peak memory = VmHWM (peak resident set) of the backend that ran the build, read from
/proc/<pid>/status right after it (shared buffers it touched count; parallel workers do not:
builds run with max_parallel_maintenance_workers=0 so the one backend does all the work),
recall@10 over held-out stored vectors used as queries (themselves excluded; exact truth computed
with numpy), median query latency through psycopg2.

Connection: ``$NDIS_LOCAL_STACK_DIR/stack.json`` (default /tmp/ndis-local-stack; pg.host,
pg.port, pg.user, pg.password_file). Each dataset gets a scratch database, dropped afterwards.
Targets are printed, never enforced: the exit status is 0 unless the bench itself breaks.

Usage: python bench/bench_vector.py [--rows 20000] [--queries 100] [--quick] [--dataset easy|hard]
       (--rows 100000 for the large run; --quick = 4000 rows, 40 queries)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import time
import uuid
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "collections"))

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402

from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi  # noqa: E402

DIMS = 1536
K = 10


def connection_info() -> dict:
    stack_dir = Path(os.environ.get("NDIS_LOCAL_STACK_DIR", "/tmp/ndis-local-stack"))
    pg = json.loads((stack_dir / "stack.json").read_text())["pg"]
    password = Path(pg["password_file"]).read_text().strip() if pg.get("password_file") else ""
    return {"host": pg["host"], "port": int(pg["port"]), "user": pg["user"], "password": password,
            "source": str(stack_dir / "stack.json")}


def dataset(kind: str, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clusters = 8 if kind == "easy" else max(rows // 10, 2)
    intrinsic = 24
    centers = rng.normal(0, 1, (clusters, DIMS)).astype(np.float32)
    basis = rng.normal(0, 1, (clusters if clusters <= 64 else 64, intrinsic, DIMS)).astype(np.float32) / np.sqrt(intrinsic)
    label = rng.integers(0, clusters, rows)
    z = rng.normal(0, 1, (rows, intrinsic)).astype(np.float32)
    spread = 0.6 if kind == "easy" else 0.35
    out = np.empty((rows, DIMS), dtype=np.float32)
    for start in range(0, rows, 2000):
        sl = slice(start, min(start + 2000, rows))
        lab = label[sl]
        local = np.einsum("ni,nid->nd", z[sl], basis[lab % basis.shape[0]])
        out[sl] = centers[lab] + spread * local + 0.05 * rng.normal(0, 1, (len(lab), DIMS)).astype(np.float32)
    return out


def copy_binary(conn, data: np.ndarray, start_id: int = 0) -> float:
    buf = BytesIO()
    buf.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
    head = struct.pack("!h", 2)
    vec_head = struct.pack("!hh", DIMS, 0)
    be = data.astype(">f4")
    for i in range(len(data)):
        buf.write(head + struct.pack("!iq", 8, start_id + i) + struct.pack("!i", 4 + 4 * DIMS) + vec_head + be[i].tobytes())
    buf.write(struct.pack("!h", -1))
    buf.seek(0)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.copy_expert("COPY items (id, v) FROM STDIN WITH (FORMAT binary)", buf)
    return time.perf_counter() - t0


def literal(v: np.ndarray) -> str:
    return "[" + ",".join("%.6g" % x for x in v) + "]"


def truth(data: np.ndarray, qidx: np.ndarray) -> list[list[int]]:
    norm = data / np.linalg.norm(data, axis=1, keepdims=True)
    out = []
    for q in qidx:
        sims = norm @ norm[q]
        sims[q] = -np.inf
        out.append(list(np.argpartition(-sims, K)[:K]))
    return out


def vmhwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def timed_build(dsn: str, sql: str, settings: dict) -> tuple[float, int | None, str | None]:
    """Run a build on a fresh backend: (seconds, peak RSS kB, error or None)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            for k, v in settings.items():
                cur.execute("SELECT set_config(%s, %s, false)", (k, str(v)))
            t0 = time.perf_counter()
            try:
                cur.execute(sql)
                err = None
            except psycopg2.Error as e:
                err = str(e).strip().split("\n")[0]
            return time.perf_counter() - t0, vmhwm_kb(pid), err
    finally:
        conn.close()


def search(dsn: str, data: np.ndarray, qidx, want, settings: dict, exact: bool = False) -> tuple[float, float]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    hits, times = 0, []
    try:
        with conn.cursor() as cur:
            for k, v in settings.items():
                cur.execute("SELECT set_config(%s, %s, false)", (k, str(v)))
            if exact:
                cur.execute("SET enable_indexscan = off")
                cur.execute("SET max_parallel_workers_per_gather = 0")
            for q, w in zip(qidx, want):
                lit = literal(data[q])
                t0 = time.perf_counter()
                cur.execute("SELECT id FROM items WHERE id <> %s ORDER BY v <=> %s::vector LIMIT %s", (int(q), lit, K))
                got = [r[0] for r in cur.fetchall()]
                times.append((time.perf_counter() - t0) * 1000)
                hits += len(set(got) & set(int(x) for x in w))
    finally:
        conn.close()
    return hits / float(K * len(qidx)), statistics.median(times)


def run_dataset(info: dict, kind: str, rows: int, nq: int) -> list[dict]:
    name = f"bench_vec_{kind}_{uuid.uuid4().hex[:6]}"
    base = dict(host=info["host"], port=info["port"], user=info["user"], password=info["password"])
    admin = psycopg2.connect(dbname="postgres", **base)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    dsn = " ".join(f"{k}='{v}'" for k, v in dict(base, dbname=name).items())
    results = []
    try:
        data = dataset(kind, rows, seed=1 if kind == "easy" else 2)
        rng = np.random.default_rng(99)
        qidx = rng.choice(rows, nq, replace=False)
        want = truth(data, qidx)
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION vector")
        cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, v vector(%d) NOT NULL)" % DIMS)
        one = {"max_parallel_maintenance_workers": 0}

        # (a) the runbook: index on the empty table, then load
        sec, mem, err = timed_build(dsn, "CREATE INDEX items_ivf ON items USING ivfflat (v vector_cosine_ops) WITH (lists = 100)", one)
        load_with = copy_binary(conn, data)
        cur.execute("ANALYZE items")
        r, ms = search(dsn, data, qidx, want, {"ivfflat.probes": 1})
        r10, _ = search(dsn, data, qidx, want, {"ivfflat.probes": 10})
        cur.execute("DROP INDEX items_ivf")
        cur.execute("TRUNCATE items")
        load_without = copy_binary(conn, data)
        cur.execute("ANALYZE items")
        results.append(dict(label="(a) runbook: ivfflat on empty table, probes=1", build=sec + max(0.0, load_with - load_without),
                            mem=mem, recall=r, ms=ms, note=f"probes=10: {r10:.3f}; load {load_with:.1f}s vs {load_without:.1f}s without index"))

        # (b) the runbook's index built after the load
        sql_b = "CREATE INDEX items_ivf ON items USING ivfflat (v vector_cosine_ops) WITH (lists = 100)"
        sec, mem, err = timed_build(dsn, sql_b, dict(one, maintenance_work_mem="64MB"))
        note = ""
        if err:
            note = f"64MB: FAILED ({err}); retried at the role's size"
            plan = {"decl": vi.normalize({"table": "items", "column": "v", "method": "ivfflat", "lists": 100}),
                    "params": {"lists": 100}, "rows": rows, "dims": DIMS}
            mwm = dict(vi.build_settings(plan, max_memory="4GB"))["maintenance_work_mem"]
            sec, mem, err = timed_build(dsn, sql_b, dict(one, maintenance_work_mem=mwm))
            note += f" {mwm}"
        r, ms = search(dsn, data, qidx, want, {"ivfflat.probes": 1})
        r10, _ = search(dsn, data, qidx, want, {"ivfflat.probes": 10})
        results.append(dict(label="(b) runbook index after load, probes=1", build=sec, mem=mem, recall=r, ms=ms,
                            note=(note + "; " if note else "") + f"probes=10: {r10:.3f}"))
        cur.execute("DROP INDEX items_ivf")

        # (c) the role: pgvector_index (auto -> hnsw, memory sized) + pgvector_tune (target 0.95)
        decl = [{"table": "items", "column": "v", "metric": "cosine", "method": "auto"}]
        plan_conn = psycopg2.connect(dsn)
        plan = vi.plan_index(plan_conn.cursor(), decl[0])
        plan_conn.close()
        settings = dict(vi.build_settings(plan, max_memory="1GB", parallel_workers=0))
        sec, mem, err = timed_build(dsn, plan["sql"], settings)
        if err:
            results.append(dict(label="(c) role: hnsw + tuned ef_search", build=sec, mem=mem, recall=0.0, ms=0.0, note="FAILED: " + err))
        else:
            t0 = time.perf_counter()
            tuned = vi.tune({"dsn": dsn}, decl, recall_target=0.95, k=K, sample_size=50, scope="database")
            tune_s = time.perf_counter() - t0
            ef = tuned["settings"].get("hnsw.ef_search", 40)
            r, ms = search(dsn, data, qidx, want, {"hnsw.ef_search": ef})
            r40, ms40 = search(dsn, data, qidx, want, {"hnsw.ef_search": 40})
            curve = tuned["indexes"][0].get("curve", [])
            results.append(dict(label=f"(c) role: hnsw m=16 efc=64, ef_search={ef}", build=sec, mem=mem, recall=r, ms=ms,
                                note=f"{settings['maintenance_work_mem']}; tuning {tune_s:.0f}s, curve "
                                     + ", ".join(f"{v}:{rc:.2f}" for v, rc, _ in curve)
                                     + f"; at ef_search=40: {r40:.3f} {ms40:.1f}ms"))

        # (d) exact
        r, ms = search(dsn, data, qidx, want, {}, exact=True)
        results.append(dict(label="(d) exact (seq scan)", build=None, mem=None, recall=r, ms=ms, note=""))
        conn.close()
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="4000 rows, 40 queries")
    ap.add_argument("--dataset", choices=["easy", "hard"], action="append")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.queries = 4000, 40
    info = connection_info()
    print(f"pgvector bench: {args.rows} rows x {DIMS} dims, {args.queries} queries, recall@{K}, cosine; stack {info['source']}")
    for kind in args.dataset or ["easy", "hard"]:
        t0 = time.perf_counter()
        res = run_dataset(info, kind, args.rows, args.queries)
        print(f"\n== {kind} dataset ({time.perf_counter() - t0:.0f}s)")
        print(f"{'method':<48} {'build s':>8} {'peak MB':>8} {'recall@10':>9} {'median ms':>9}  notes")
        exact_ms = res[-1]["ms"]
        for r in res:
            build = "-" if r["build"] is None else f"{r['build']:.1f}"
            mem = "-" if r["mem"] is None else f"{r['mem'] / 1024:.0f}"
            print(f"{r['label']:<48} {build:>8} {mem:>8} {r['recall']:>9.3f} {r['ms']:>9.1f}  {r['note']}")
        c = res[2]
        print(f"targets for (c): recall@10 >= 0.95: {'met' if c['recall'] >= 0.95 else 'MISSED'} ({c['recall']:.3f}); "
              f">= 2x faster than exact: {'met' if c['ms'] and exact_ms / c['ms'] >= 2 else 'MISSED'} "
              f"({exact_ms / c['ms']:.1f}x); build without memory failure: {'met' if 'FAILED' not in c['note'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
