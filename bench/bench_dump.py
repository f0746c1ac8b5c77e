"""Benchmark: dbops-dump's dump-to-S3 and restore against plain pg_dump -Fc > file / pg_restore.

A database with 20k x 1536-dim embeddings (HNSW index) on the local stack
($NDIS_LOCAL_STACK_DIR, default /tmp/ndis-local-stack; S3 is moto over HTTP). Uses the
stack's own pg_dump/pg_restore (pg.bindir). MB/s is the dump size over the wall time.
Prints a table; never exits non-zero on a missed target (issue target: within 1.3x of the floor).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402
import psycopg2  # noqa: E402

from dbops import dump  # noqa: E402

ROWS = int(os.environ.get("BENCH_DUMP_ROWS", "20000"))
DIMS = 1536
TARGET = 1.3


def main() -> int:
    stack_dir = Path(os.environ.get("NDIS_LOCAL_STACK_DIR", "/tmp/ndis-local-stack"))
    stack = json.loads((stack_dir / "stack.json").read_text())
    pg, aws = stack["pg"], stack["aws"]
    password = Path(pg["password_file"]).read_text().strip()
    env = {"PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGUSER": pg["user"], "PGPASSWORD": password,
           "PGSSLMODE": "disable"}
    os.environ.update({"AWS_ENDPOINT_URL": aws["endpoint_url"], "AWS_REGION": aws["region"],
                       "AWS_DEFAULT_REGION": aws["region"], "AWS_ACCESS_KEY_ID": aws["access_key_id"],
                       "AWS_SECRET_ACCESS_KEY": aws["secret_access_key"]})
    bindir = Path(pg["bindir"])
    db = f"bench_dump_{uuid.uuid4().hex[:8]}"
    bucket = f"bench-dump-{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=password, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws["region"]})
    target = dump.Target(database=db, bindir=str(bindir), env=env)
    try:
        t0 = time.monotonic()
        conn = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=password, dbname=db)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION vector")
            cur.execute(f"CREATE TABLE embeddings (id bigint PRIMARY KEY, doc_id text NOT NULL, embedding vector({DIMS}))")
            for start in range(0, ROWS, 2000):
                cur.execute(f"""INSERT INTO embeddings SELECT i, 'doc-' || i,
                                  (SELECT array_agg(random()::real)::vector FROM generate_series(1, {DIMS}) WHERE i > 0)
                                FROM generate_series({start + 1}, {min(start + 2000, ROWS)}) i""")
            cur.execute("SET maintenance_work_mem = '256MB'")
            cur.execute("CREATE INDEX ON embeddings USING hnsw (embedding vector_cosine_ops)")
            cur.execute("SELECT pg_database_size(current_database())")
            db_mb = cur.fetchone()[0] / 1e6
        conn.close()
        print(f"bench_dump: {ROWS} x {DIMS} embeddings with HNSW, database {db_mb:.0f} MB (built in "
              f"{time.monotonic() - t0:.0f} s)")

        child = {**os.environ, **env, "PGDATABASE": db}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "floor.dump"
            t = time.monotonic()
            with open(path, "wb") as fh:
                subprocess.run([str(bindir / "pg_dump"), "-Fc", "--no-password"], stdout=fh, env=child, check=True)
            floor_dump = time.monotonic() - t
            size_mb = path.stat().st_size / 1e6

            restore_db = f"{db}_floor"
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{restore_db}"')
            t = time.monotonic()
            subprocess.run([str(bindir / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                            "--no-password", "--dbname", restore_db, str(path)], env=child, check=True)
            floor_restore = time.monotonic() - t
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE "{restore_db}" WITH (FORCE)')

        t = time.monotonic()
        manifest = dump.run_dump(target, bucket, "bench/", now=dt.datetime.now(dt.UTC))
        tool_dump = time.monotonic() - t
        t = time.monotonic()
        report = dump.run_restore_test(target, bucket, "bench/")
        tool_restore = time.monotonic() - t
        tool_mb = manifest["size"] / 1e6

        rows = [
            ("dump", "pg_dump -Fc > file", floor_dump, size_mb, "dbops-dump dump -> S3 (moto)", tool_dump, tool_mb),
            ("restore", "pg_restore file", floor_restore, size_mb,
             "dbops-dump restore-test (get+sha256+restore+checks)", tool_restore, tool_mb),
        ]
        print(f"{'step':8} {'floor':22} {'s':>7} {'MB/s':>7}   {'tool':50} {'s':>7} {'MB/s':>7} {'ratio':>6}  target")
        for step, fname, fs, fmb, tname, ts, tmb in rows:
            ratio = ts / fs
            print(f"{step:8} {fname:22} {fs:7.2f} {fmb / fs:7.1f}   {tname:50} {ts:7.2f} {tmb / ts:7.1f} "
                  f"{ratio:6.2f}  {'ok' if ratio <= TARGET else 'MISSED'} (<= {TARGET}x)")
        print(f"dump size {tool_mb:.1f} MB (floor file {size_mb:.1f} MB); restore test {report['result']}; "
              f"restore-test breakdown: download+sha256 {report['download_seconds']:.2f} s, "
              f"pg_restore+checks {report.get('restore_seconds', 0):.2f} s")
        for line in report["checks"] + report["problems"]:
            print(f"  {line}")
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()
        objs = s3.list_object_versions(Bucket=bucket)
        for v in objs.get("Versions", []) + objs.get("DeleteMarkers", []):
            s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        s3.delete_bucket(Bucket=bucket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
