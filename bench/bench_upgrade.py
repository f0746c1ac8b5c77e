#!/usr/bin/env python3
"""The minor-upgrade rehearsal, measured: 16.11 + pgvector 0.8.1 -> 16.14 + pgvector 0.8.5.

On a stack of its own born on the 16.11 build (dbops.pg_builds), after `site.yml` and --rows rows
(1536 dimensions, a tenth deleted, VACUUM), one `site.yml` run declaring 16.14 upgrades it for
real while an app queries every 50 ms through the stored DATABASE_URL (TLS endpoint). Prints:

  * the app's outage: first failed query to the first good one after it, failed/total queries;
  * the upgrade run by step (from the task timestamps): before the upgrade (validate, plan),
    snapshot + engine upgrade + wait, the rest of provisioning, the database steps (rebuild per the
    rule, ALTER EXTENSION), the recall re-measurement, the rest, verify; and the total;
  * the index rebuild inside the upgrade against a bare `REINDEX INDEX CONCURRENTLY` of the same
    index afterwards (median of --reps), as a ratio.

    python bench/bench_upgrade.py [--rows 3000] [--reps 3]

State in $NDIS_BENCH_UPGRADE_DIR (default /tmp/ndis-bench-upgrade), ports
NDIS_BENCH_UPGRADE_PG_PORT / _MOTO_PORT / _TLS_PORT (default free ports); taken down afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DIR = Path(os.environ.get("NDIS_BENCH_UPGRADE_DIR", "/tmp/ndis-bench-upgrade"))
APP_QUERY = "SELECT id FROM embeddings ORDER BY embedding <=> (SELECT embedding FROM embeddings LIMIT 1) LIMIT 10"
UPGRADE = ["-e", '{"rds_instance_engine_version": "16.14", "rds_instance_allow_outage": true}']
STEPS = (  # label, the first task of the step (a prefix of its name); the first one after the previous step's
    # start that ran (the pgvector role's tasks are listed, skipped, in its extension phase too)
    ("validate, change plan", ""),
    ("snapshot + engine upgrade + wait", "rds_instance : upgrade | Remove the progress lines"),
    ("rest of provisioning", "rds_instance : upgrade | Keep the upgrade's result"),
    ("database play up to the rebuild", "postgres_db"),
    ("rebuild per the rule + ALTER EXTENSION", "pgvector : indexes | Rebuild per the rule"),
    ("rest of the index phase", "pgvector : indexes | Show what the update"),
    ("recall re-measured (tuning)", "pgvector : tuning | Set ef_search"),
    ("secrets, backups, monitoring", "ssm_secret"),
    ("verify", "Read the RDS instance"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack(*args: str) -> None:
    ports = [os.environ.get(f"NDIS_BENCH_UPGRADE_{p}_PORT") or str(free_port()) for p in ("PG", "MOTO", "TLS")]
    cmd = [sys.executable, "-m", "dbops.local_stack", *args, "--dir", str(DIR), "--pg-port", ports[0],
           "--moto-port", ports[1], "--tls-port", ports[2]]
    subprocess.run(cmd, cwd=ROOT, check=args[0] != "down", capture_output=True, text=True)


def site(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_", "PG"))}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NDIS_LOCAL_STACK_DIR=str(DIR), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "site.yml", "-l", "local", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("site run failed:\n" + proc.stdout[-4000:])
    return proc.stdout


def task_starts(output: str) -> list[tuple[str, float, bool]]:
    """(task name, seconds since the run started, whether it ran) of every task, from profile_tasks' timestamps."""
    out = []
    for line in output.splitlines():
        if line.startswith("TASK ["):
            out.append([line[6:].split("]")[0], None, False])
        elif out and out[-1][1] is None and re.search(r"\+0000 \(.*\)\s+(\d+):(\d+):(\d+\.\d+)", line):
            h, m, s = re.search(r"\)\s+(\d+):(\d+):(\d+\.\d+)", line).groups()
            out[-1][1] = int(h) * 3600 + int(m) * 60 + float(s)
        elif out and line.startswith(("ok:", "changed:")):
            out[-1][2] = True
    return [tuple(t) for t in out if t[1] is not None]


def by_step(output: str) -> list[tuple[str, float]]:
    starts = task_starts(output)
    h, m, sec = re.findall(r"\)\s+(\d+):(\d+):(\d+\.\d+)", output)[-1]
    total = int(h) * 3600 + int(m) * 60 + float(sec)
    marks = []
    for label, prefix in STEPS:
        hit = next((t for n, t, ran in starts if n.startswith(prefix) and ran and (not marks or t >= marks[-1][1])), None)
        if hit is not None:
            marks.append((label, hit))
    marks.append(("end", total))
    return [(marks[i][0], marks[i + 1][1] - marks[i][1]) for i in range(len(marks) - 1)] + [("total", total)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    stack("down")
    stack("start", "--pg-version", "16.11")
    try:
        data = json.loads((DIR / "stack.json").read_text())
        pw = Path(data["pg"]["password_file"]).read_text().strip()
        dsn = dict(host=data["pg"]["host"], port=data["pg"]["port"], user=data["pg"]["user"], password=pw,
                   dbname="ndis_chatbot")
        site()
        conn = psycopg2.connect(**dsn)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("INSERT INTO embeddings (doc_id, chunk_idx, embedding) SELECT 'doc' || (i %% 40), i, (SELECT "
                    "array_agg(random()::real) FROM generate_series(1, 1536) WHERE i > 0)::vector "
                    "FROM generate_series(1, %s) i", (args.rows,))
        cur.execute("DELETE FROM embeddings WHERE chunk_idx % 10 = 0")
        cur.execute("VACUUM embeddings")
        aws = data["aws"]
        ssm = boto3.client("ssm", endpoint_url=aws["endpoint_url"], region_name=aws["region"],
                           aws_access_key_id=aws["access_key_id"], aws_secret_access_key=aws["secret_access_key"])
        url = ssm.get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]["Value"]
        log, stop = [], threading.Event()

        def app() -> None:
            c = None
            while not stop.is_set():
                t = time.monotonic()
                try:
                    if c is None:
                        c = psycopg2.connect(url, connect_timeout=2)
                        c.autocommit = True
                    with c.cursor() as q:
                        q.execute(APP_QUERY)
                        q.fetchall()
                    log.append((t, time.monotonic(), True))
                except psycopg2.Error:
                    log.append((t, time.monotonic(), False))
                    if c is not None:
                        c.close()
                    c = None
                time.sleep(0.05)

        thread = threading.Thread(target=app, daemon=True)
        thread.start()
        time.sleep(1)
        conn.close()
        out = site(*UPGRADE)
        (DIR.parent / (DIR.name + "-upgrade-run.log")).write_text(out)  # the run's output, kept for a look
        stop.set()
        thread.join(5)
        failed = [t for t, _, ok in log if not ok]
        # from the start of the first failed query to the end of the first good one after the last failure
        outage = (next(end for t, end, ok in log if ok and t > failed[-1]) - failed[0]) if failed else 0.0
        rebuild = float(re.search(r"embeddings_embedding_hnsw_cosine: done, ([\d.]+) s", out).group(1)) - float(
            re.search(r"embeddings_embedding_hnsw_cosine: running REINDEX[^,]*, ([\d.]+) s", out).group(1))
        conn = psycopg2.connect(**dsn)  # the server restarted: a new session
        conn.autocommit = True
        cur = conn.cursor()
        bare = []
        for _ in range(args.reps):
            t = time.perf_counter()
            cur.execute("REINDEX INDEX CONCURRENTLY embeddings_embedding_hnsw_cosine")
            bare.append(time.perf_counter() - t)
        cur.execute("SELECT count(*), (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
                    " current_setting('server_version') FROM embeddings")
        rows, ext, server = cur.fetchone()
        conn.close()
        print(f"minor upgrade 16.11/0.8.1 -> {server}/{ext}, {rows} rows x 1536, load {os.getloadavg()[0]:.1f}")
        print(f"app outage (first failed query to the end of the first good one): {outage:.2f} s, "
              f"{len(failed)} of {len(log)} queries failed; the app reconnected with the stored URL")
        print(f"{'step':44} {'seconds':>8}")
        for label, seconds in by_step(out):
            print(f"{label:44} {seconds:8.1f}")
        med = statistics.median(bare)
        print(f"index rebuild in the upgrade {rebuild:.2f} s; bare REINDEX INDEX CONCURRENTLY median of "
              f"{args.reps} {med:.2f} s; ratio {rebuild / med:.2f}x")
    finally:
        stack("down")


if __name__ == "__main__":
    main()
