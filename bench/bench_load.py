#!/usr/bin/env python3
"""Benchmark the first load of a corpus: the project's load path (vector_load.load: the declared HNSW index dropped,
binary COPY in batches, one build, ANALYZE) against

  (a) in place  COPY into the indexed table (the baseline migration's state: every row pays an HNSW insert);
  (b) floor     COPY into the bare table, then a bare CREATE INDEX with the same parameters (m=16,
                ef_construction=64) and the memory and parallel workers the role gives the load path's build.

Each run gets a scratch database with the baseline migration's ``embeddings`` table (db/migrations/0001), loaded from
the same binary COPY file of (doc_id, chunk_idx, embedding) rows (numpy, fixed seed: 400 clusters in a 64-dim
subspace plus a little noise in all dims, unit length), sent from this client. Printed: seconds per step, rows per
second, the load path's ratio to the floor (target: within 1.2x) and (a)'s ratio to the load path; then the app's
search latency on the loaded table (``ORDER BY embedding <=> $1 LIMIT 10`` from a new session, as the app runs it)
with the index and without it (what the app gets while a load has the index dropped: exact scans).

Connection: ``$NDIS_LOCAL_STACK_DIR/stack.json`` (default /tmp/ndis-local-stack). Targets are printed, never enforced.

Usage: python bench/bench_load.py [--rows 20000] [--dims 1536] [--batch-rows 5000] [--in-place-rows N] [--no-in-place]
                                  [--quick] [--tune]
       (--in-place-rows: run (a) at a smaller size, its rows per second then stand for the full size;
        --quick = 4000 rows; --tune: the load path also tunes and checks recall, timed apart)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "collections"))

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402

from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi  # noqa: E402
from ansible_collections.ndis.dbops.plugins.module_utils import vector_load as vl  # noqa: E402

DECL = {"table": "embeddings", "column": "embedding", "metric": "cosine"}
COLUMNS = ["doc_id", "chunk_idx", "embedding"]
MIGRATION = (REPO / "db" / "migrations" / "0001_embeddings.sql").read_text()
PARALLEL_WORKERS = 2  # pgvector_max_parallel_maintenance_workers
MEMORY_MAX = "1GB"  # pgvector_maintenance_work_mem_max


def connection_info() -> dict:
    stack_dir = Path(os.environ.get("NDIS_LOCAL_STACK_DIR", "/tmp/ndis-local-stack"))
    pg = json.loads((stack_dir / "stack.json").read_text())["pg"]
    password = Path(pg["password_file"]).read_text().strip() if pg.get("password_file") else ""
    return {"host": pg["host"], "port": int(pg["port"]), "user": pg["user"], "password": password,
            "source": str(stack_dir / "stack.json")}


def write_file(path: str, rows: int, dims: int, seed: int = 11) -> np.ndarray:
    """A binary COPY file of (doc_id text, chunk_idx int, embedding vector) rows; returns 200 fresh queries."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((64, dims)).astype(np.float32)
    centers = rng.standard_normal((400, 64)).astype(np.float32)
    vec_head = struct.pack("!hh", dims, 0)
    with open(path, "wb") as f:
        f.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
        for start in range(0, rows, 10000):
            n = min(10000, rows - start)
            x = (centers[rng.integers(0, 400, n)] + 0.35 * rng.standard_normal((n, 64)).astype(np.float32)) @ basis
            x += 0.05 * rng.standard_normal((n, dims)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            be = x.astype(">f4")
            for i in range(n):
                doc = ("doc-%07d" % ((start + i) // 8)).encode()
                f.write(struct.pack("!hi", 3, len(doc)) + doc + struct.pack("!ii", 4, (start + i) % 8)
                        + struct.pack("!i", 4 + 4 * dims) + vec_head + be[i].tobytes())
        f.write(struct.pack("!h", -1))
    q = (centers[rng.integers(0, 400, 200)] + 0.35 * rng.standard_normal((200, 64)).astype(np.float32)) @ basis
    return q / np.linalg.norm(q, axis=1, keepdims=True)


class Scratch:
    def __init__(self, info: dict, prefix: str):
        self.name = f"{prefix}_{uuid.uuid4().hex[:6]}"
        base = dict(host=info["host"], port=info["port"], user=info["user"], password=info["password"])
        self.admin = psycopg2.connect(dbname="postgres", **base)
        self.admin.autocommit = True
        self.admin.cursor().execute(f'CREATE DATABASE "{self.name}"')
        self.dsn = " ".join(f"{k}='{v}'" for k, v in dict(base, dbname=self.name).items())
        conn = self.connect()
        conn.cursor().execute("CREATE EXTENSION vector")
        conn.cursor().execute(MIGRATION)
        conn.close()

    def connect(self):
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        return conn

    def drop(self):
        self.admin.cursor().execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


def copy_file(conn, path: str) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        conn.cursor().copy_expert("COPY embeddings (doc_id, chunk_idx, embedding) FROM STDIN WITH (FORMAT binary)", f)
    return time.perf_counter() - t0


def build_settings(conn, rows: int) -> list:
    plan = vi.plan_index(conn.cursor(), dict(DECL))
    plan["rows"] = rows
    return vi.build_settings(plan, max_memory=MEMORY_MAX, parallel_workers=PARALLEL_WORKERS)


def run_in_place(info, path, rows) -> dict:
    db = Scratch(info, "bench_load_a")
    try:
        conn = db.connect()
        copy_s = copy_file(conn, path)
        conn.close()
        return {"copy_s": copy_s, "build_s": 0.0, "total_s": copy_s, "rows": rows}
    finally:
        db.drop()


def run_floor(info, path, rows) -> dict:
    db = Scratch(info, "bench_load_b")
    try:
        conn = db.connect()
        cur = conn.cursor()
        settings = build_settings(conn, rows)
        cur.execute("DROP INDEX embeddings_embedding_hnsw_cosine")
        copy_s = copy_file(conn, path)
        for k, v in settings:
            cur.execute("SELECT set_config(%s, %s, false)", (k, str(v)))
        t0 = time.perf_counter()
        cur.execute("CREATE INDEX embeddings_embedding_hnsw_cosine ON embeddings USING hnsw (embedding vector_cosine_ops)"
                    " WITH (m = 16, ef_construction = 64)")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cur.execute("ANALYZE embeddings")
        analyze_s = time.perf_counter() - t0
        conn.close()
        return {"copy_s": copy_s, "build_s": build_s, "analyze_s": analyze_s, "total_s": copy_s + build_s + analyze_s,
                "settings": dict(settings)}
    finally:
        db.drop()


def app_latency(dsn, queries, exact: bool) -> float:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    if exact:
        cur.execute("SET enable_indexscan = off")  # the plan the app gets while the index is dropped
    times = []
    for q in queries:
        lit = "[" + ",".join("%.6f" % x for x in q) + "]"
        t0 = time.perf_counter()
        cur.execute("SELECT id FROM embeddings ORDER BY embedding <=> %s::vector LIMIT 10", (lit,))
        cur.fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    cur.execute("EXPLAIN SELECT id FROM embeddings ORDER BY embedding <=> %s::vector LIMIT 10", (lit,))
    plan = " ".join(r[0] for r in cur.fetchall())
    conn.close()
    return statistics.median(times[5:] if len(times) > 10 else times), ("Index Scan" in plan)


def run_load_path(info, path, rows, batch_rows, queries, tune) -> dict:
    db = Scratch(info, "bench_load_c")
    try:
        t0 = time.perf_counter()
        r = vl.load({"dsn": db.dsn}, path, "embeddings", [dict(DECL)], columns=COLUMNS, batch_rows=batch_rows,
                    build=dict(maintenance_work_mem_max=MEMORY_MAX, parallel_workers=PARALLEL_WORKERS),
                    tune=None, check=None)
        total = time.perf_counter() - t0
        out = {"copy_s": r["copy_seconds"], "build_s": r["build_seconds"], "total_s": total,
               "settings": r["indexes"][0].get("settings"), "batches": r["batches"]}
        if tune:
            from ansible_collections.ndis.dbops.plugins.module_utils import vector_tune as vt
            t0 = time.perf_counter()
            vt.tune({"dsn": db.dsn}, [dict(DECL)])
            vt.recall_check({"dsn": db.dsn}, [dict(DECL)])
            out["tune_s"] = time.perf_counter() - t0
        out["index_ms"], used = app_latency(db.dsn, queries[:60], exact=False)
        out["exact_ms"], used_exact = app_latency(db.dsn, queries[:20], exact=True)
        out["index_used"], out["exact_used_index"] = used, used_exact
        return out
    finally:
        db.drop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dims", type=int, default=1536)
    ap.add_argument("--batch-rows", type=int, default=5000)
    ap.add_argument("--in-place-rows", type=int, help="run (a) at this many rows (default --rows)")
    ap.add_argument("--no-in-place", action="store_true", help="skip (a)")
    ap.add_argument("--quick", action="store_true", help="4000 rows")
    ap.add_argument("--tune", action="store_true", help="also time tuning and the recall check after the load path")
    args = ap.parse_args()
    if args.quick:
        args.rows = 4000
    info = connection_info()
    print(f"first-load bench: {args.rows} rows x {args.dims} dims, HNSW m=16 ef_construction=64, cosine; batches of "
          f"{args.batch_rows}; stack {info['source']}; load average %.1f %.1f %.1f" % os.getloadavg(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        path = os.path.join(tmp, "rows.copy")
        t0 = time.perf_counter()
        queries = write_file(path, args.rows, args.dims)
        print(f"file: {os.path.getsize(path) / 1e6:.0f} MB binary COPY, written in {time.perf_counter() - t0:.1f} s", flush=True)
        results = {}
        results["floor"] = run_floor(info, path, args.rows)
        print("(b) floor done, load average %.1f" % os.getloadavg()[0], flush=True)
        results["load"] = run_load_path(info, path, args.rows, args.batch_rows, queries, args.tune)
        print("load path done, load average %.1f" % os.getloadavg()[0], flush=True)
        if not args.no_in_place:
            a_rows = args.in_place_rows or args.rows
            a_path = path
            if a_rows != args.rows:
                a_path = os.path.join(tmp, "rows_a.copy")
                write_file(a_path, a_rows, args.dims)
            a = run_in_place(info, a_path, a_rows)
            a["rows_per_s"] = a_rows / a["total_s"]
            a["total_s_at_rows"] = args.rows / a["rows_per_s"]
            results["in_place"] = a
            print("(a) in place done (%d rows), load average %.1f" % (a_rows, os.getloadavg()[0]), flush=True)
    floor, load = results["floor"], results["load"]
    print(f"\nbuild settings: load path {load['settings']}, floor {floor['settings']}")
    print(f"\n{'run':<34} {'copy s':>8} {'build s':>8} {'total s':>8} {'rows/s':>8} {'vs floor':>9} {'(a) / this':>10}")
    rows = args.rows
    lines = []
    if "in_place" in results:
        a = results["in_place"]
        label = "(a) COPY into the indexed table" + ("" if a["rows"] == rows else f" ({a['rows']} rows)")
        lines.append((label, a["copy_s"], 0.0, a["total_s_at_rows"], a["rows_per_s"]))
    lines.append(("(b) floor: COPY + CREATE INDEX", floor["copy_s"], floor["build_s"], floor["total_s"], rows / floor["total_s"]))
    lines.append(("load path (vector_load.load)", load["copy_s"], load["build_s"], load["total_s"], rows / load["total_s"]))
    a_total = results["in_place"]["total_s_at_rows"] if "in_place" in results else None
    for label, c, b, t, rps in lines:
        vs = t / floor["total_s"]
        a_ratio = ("%.1fx" % (a_total / t)) if a_total else ""
        print(f"{label:<34} {c:>8.1f} {b:>8.1f} {t:>8.1f} {rps:>8.0f} {vs:>8.2f}x {a_ratio:>10}", flush=True)
    ratio = load["total_s"] / floor["total_s"]
    print(f"\ntarget: load path within 1.2x of the floor: {ratio:.2f}x, {'met' if ratio <= 1.2 else 'NOT met'}")
    if "in_place" in results and results["in_place"]["rows"] != rows:
        print(f"(a)'s total at {rows} rows is its measured rows/s at {results['in_place']['rows']} rows carried over")
    if "tune_s" in load:
        print(f"tuning + recall check after the load path: {load['tune_s']:.1f} s")
    print(f"app search (ORDER BY embedding <=> $1 LIMIT 10, median of a new session's queries) on {rows} rows: "
          f"with the index {load['index_ms']:.2f} ms (index used: {load['index_used']}), without it (exact scan, as during a "
          f"load) {load['exact_ms']:.1f} ms: {load['exact_ms'] / load['index_ms']:.0f}x", flush=True)
    print("load average at the end %.1f %.1f %.1f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
