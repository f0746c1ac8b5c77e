"""Logical dumps of the app database to S3, and the restore test that proves they restore.

Usage::

    dbops-dump dump         --bucket B [--prefix P] [--kms-key-id K] [--database DB] [options]
    dbops-dump restore-test --bucket B [--prefix P] [--database DB] [--key KEY] [options]
    dbops-dump latest       --bucket B [--prefix P] [--database DB]
    (or python -m dbops.dump ...)

``dump`` runs ``pg_dump --format=custom`` of the database and streams its output to
S3 (SSE-KMS, multipart; nothing is written to local disk) under a dated key::

    <prefix><database>/YYYY/MM/DD/<database>-YYYYMMDDTHHMMSSZ.dump
    <prefix><database>/YYYY/MM/DD/<database>-YYYYMMDDTHHMMSSZ.manifest.json

The manifest (written after the dump, SSE-KMS too) records size, sha256, the row count
of every table, the vector indexes, and the pgvector, server and pg_dump versions.  The
row counts are taken in the very snapshot pg_dump dumps (``pg_export_snapshot`` +
``pg_dump --snapshot``), so they are exact, not approximate.

``restore-test`` fetches the newest manifest (or ``--key``), downloads its dump to a 0600
temporary file while hashing it, compares size and sha256 with the manifest, creates a
scratch database, creates the vector extension first, runs ``pg_restore``, compares every
table's row count with the manifest, measures held-out recall@10 through every vector index
(halfvec expression indexes too; the collection's shared recall measurement), drops the
scratch database (always) and prints PASS or FAIL with what differed.

Connection: libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSWORD
or PGPASSFILE), --password-secret-id ID for an RDS-managed master password (Secrets Manager),
or --password-ssm-parameter NAME to read the password from an SSM
SecureString at run time.  The password is never put on a command line and never printed:
pg_dump/pg_restore get it through their environment only.  AWS: boto3's own chain
(AWS_REGION, AWS_ENDPOINT_URL, profile, instance role).

Output: a JSON document on stdout (``--json``, the default when stdout is not a terminal)
or readable lines.  Exit codes: 0 success/PASS, 1 FAIL (restore test found a difference),
2 error (bad arguments, no dump found, a command failed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_ERROR = 2

MANIFEST_SUFFIX = ".manifest.json"
DUMP_SUFFIX = ".dump"
MANIFEST_VERSION = 1
CHUNK = 8 * 1024 * 1024
NN_SAMPLES = 10
NN_K = 10
NN_MIN_RECALL = 0.8  # recall@K a restored index must reach at a wide search (HNSW/IVFFlat are approximate)


class DumpError(Exception):
    """Something failed; the message says what, where and what to do next."""


def log(msg: str) -> None:
    print(f"dbops-dump: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# connection and tools
# --------------------------------------------------------------------------
@dataclass
class Target:
    """Where the database is; the password stays in ``env`` (PGPASSWORD), nothing else."""

    database: str
    bindir: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def tool(self, name: str) -> str:
        if self.bindir:
            path = Path(self.bindir) / name
            if not os.access(path, os.X_OK):
                raise DumpError(f"{path} is not an executable; check --bindir (the PostgreSQL 16 bin directory)")
            return str(path)
        found = shutil.which(name)
        if not found:
            raise DumpError(f"{name} not found on PATH; install the PostgreSQL 16 client or pass --bindir")
        return found

    def child_env(self, database: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env["PGDATABASE"] = database or self.database
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        return env

    def connect(self, database: str | None = None):
        import psycopg2

        env = self.child_env(database)
        keys = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user", "PGPASSWORD": "password",
                "PGPASSFILE": "passfile", "PGSSLMODE": "sslmode", "PGCONNECT_TIMEOUT": "connect_timeout"}
        params = {kw: env[var] for var, kw in keys.items() if env.get(var)}
        params["dbname"] = database or self.database
        try:
            return psycopg2.connect(**params)
        except psycopg2.OperationalError as exc:
            where = f"{params.get('host', '(socket)')}:{params.get('port', 5432)}/{params['dbname']}"
            raise DumpError(f"cannot connect to {where} as {params.get('user', '(default)')}: "
                            f"{str(exc).strip()}; check PGHOST/PGPORT/PGUSER and the password source") from None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def tool_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split()[-1] if out.returncode == 0 and out.stdout.strip() else "unknown"


def password_from_ssm(name: str) -> str:
    import boto3

    try:
        return boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except Exception as exc:  # botocore's error classes are generated; report any of them plainly
        raise DumpError(f"cannot read the password from SSM parameter {name}: {exc}") from None


def password_from_secret(secret_id: str) -> str:
    """The password in a Secrets Manager secret of RDS's shape ({"username": ..., "password": ...}),
    as RDS keeps a managed master password (the secret named in MasterUserSecret)."""
    import boto3

    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        return json.loads(value)["password"]
    except Exception as exc:  # botocore's error classes are generated; report any of them plainly
        raise DumpError(f"cannot read the password from Secrets Manager secret {secret_id}: "
                        f"{type(exc).__name__}") from None


# --------------------------------------------------------------------------
# catalog
# --------------------------------------------------------------------------
TABLES_SQL = """
SELECT n.nspname, c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.deptype = 'e')
 ORDER BY 1, 2
"""

VECTOR_INDEXES_SQL = """
SELECT n.nspname, t.relname, i.relname, am.amname, a.attname, opc.opcname
  FROM pg_index x
  JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_am am ON am.oid = i.relam
  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
  JOIN pg_opclass opc ON opc.oid = x.indclass[0]
 WHERE am.amname IN ('hnsw', 'ivfflat') AND x.indisvalid
 ORDER BY 1, 2, 3
"""


# The app's query sample (the pgvector role's sample phase, module_utils/vector_sample.py, which comments its table so):
# sampled query vectors are personal data with a retention of their own (days), shorter than a dump's, so a dump
# carries the table but not its rows.
SAMPLE_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND obj_description(c.oid, 'pg_class') LIKE 'ndis.dbops: a sample of the application''s query vectors%'
 ORDER BY 1, 2
"""


def sample_tables(cur) -> list[tuple[str, str]]:
    cur.execute(SAMPLE_TABLES_SQL)
    return [tuple(r) for r in cur.fetchall()]


def table_counts(cur, without_rows=()) -> dict[str, int]:
    """Rows of every table; the tables in ``without_rows`` (schema, table), whose rows are not dumped, count 0."""
    cur.execute(TABLES_SQL)
    counts = {}
    for schema, table in cur.fetchall():
        if (schema, table) in set(without_rows):
            counts[f"{schema}.{table}"] = 0
            continue
        cur.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}")
        counts[f"{schema}.{table}"] = cur.fetchone()[0]
    return counts


def vector_indexes(cur) -> list[dict[str, str]]:
    cur.execute(VECTOR_INDEXES_SQL)
    return [dict(zip(("schema", "table", "index", "method", "column", "opclass"), row)) for row in cur.fetchall()]


def server_facts(cur) -> dict[str, Any]:
    cur.execute("SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')")
    server, vector = cur.fetchone()
    return {"server_version": server, "pgvector_version": vector}


# --------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------
def s3_client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def dump_key(prefix: str, database: str, when: dt.datetime) -> str:
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return f"{normalize_prefix(prefix)}{database}/{when:%Y/%m/%d}/{database}-{stamp}{DUMP_SUFFIX}"


def manifest_key(key: str) -> str:
    return key[: -len(DUMP_SUFFIX)] + MANIFEST_SUFFIX if key.endswith(DUMP_SUFFIX) else key + MANIFEST_SUFFIX


def sse_args(kms_key_id: str | None) -> dict[str, str]:
    args = {"ServerSideEncryption": "aws:kms"}
    if kms_key_id:
        args["SSEKMSKeyId"] = kms_key_id
    return args


class HashingReader:
    """File-like wrapper over a pipe: counts and hashes every byte read from it."""

    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n is not None and n >= 0 else CHUNK)
        if data:
            self.sha256.update(data)
            self.size += len(data)
        return data

    def readable(self) -> bool:
        return True


def latest_manifest(s3, bucket: str, prefix: str, database: str) -> str:
    """Key of the newest manifest under <prefix><database>/ (keys sort by their UTC timestamp)."""
    base = f"{normalize_prefix(prefix)}{database}/"
    newest = None
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(MANIFEST_SUFFIX) and (newest is None or obj["Key"] > newest):
                    newest = obj["Key"]
    except Exception as exc:
        raise DumpError(f"cannot list s3://{bucket}/{base}: {exc}") from None
    if newest is None:
        raise DumpError(f"no dump manifest under s3://{bucket}/{base}; run a dump first (playbooks/backup_now.yml)")
    return newest


# --------------------------------------------------------------------------
# dump
# --------------------------------------------------------------------------
def run_dump(target: Target, bucket: str, prefix: str = "", kms_key_id: str | None = None,
             compress: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Dump target.database to S3 and write its manifest; return the manifest."""
    pg_dump = target.tool("pg_dump")
    when = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    key = dump_key(prefix, target.database, when)
    s3 = s3_client()
    started = time.monotonic()

    conn = target.connect()
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            # One snapshot for the counts and for pg_dump: the manifest describes exactly this dump.
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            facts = server_facts(cur)
            cmd = [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-password"]
            without_rows = sample_tables(cur)
            for schema, table in without_rows:
                quoted = ".".join('"%s"' % part.replace('"', '""') for part in (schema, table))
                cmd.append(f"--exclude-table-data={quoted}")
            if compress:
                cmd.append(f"--compress={compress}")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=target.child_env(), stdin=subprocess.DEVNULL)
            stderr_chunks: list[bytes] = []
            drain = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
            drain.start()
            counts = table_counts(cur, without_rows)
            indexes = vector_indexes(cur)
            reader = HashingReader(proc.stdout)
            upload_error = None
            try:
                s3.upload_fileobj(reader, bucket, key, ExtraArgs={**sse_args(kms_key_id),
                                                                  "ContentType": "application/octet-stream"})
            except Exception as exc:  # report after pg_dump has been reaped
                upload_error = exc
                proc.kill()
            rc = proc.wait()
            drain.join()
        conn.rollback()
    finally:
        conn.close()
    err = b"".join(stderr_chunks).decode(errors="replace").strip()
    if rc != 0:
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=key)
        raise DumpError(f"pg_dump of {target.database} failed (exit {rc}): {err or 'no message'}")
    if upload_error is not None:
        raise DumpError(f"upload to s3://{bucket}/{key} failed: {upload_error}")

    seconds = time.monotonic() - started
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "database": target.database,
        "created_at": when.isoformat().replace("+00:00", "Z"),
        "bucket": bucket,
        "key": key,
        "format": "custom",
        "size": reader.size,
        "sha256": reader.sha256.hexdigest(),
        "tables": counts,
        "rows_not_dumped": [f"{schema}.{table}" for schema, table in without_rows],
        "vector_indexes": indexes,
        "server_version": facts["server_version"],
        "pgvector_version": facts["pgvector_version"],
        "pg_dump_version": tool_version(pg_dump),
        "kms_key_id": kms_key_id,
        "seconds": round(seconds, 3),
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    try:
        s3.put_object(Bucket=bucket, Key=manifest_key(key), Body=body, ContentType="application/json",
                      **sse_args(kms_key_id))
    except Exception as exc:
        raise DumpError(f"writing the manifest s3://{bucket}/{manifest_key(key)} failed: {exc}") from None
    manifest["manifest_key"] = manifest_key(key)
    return manifest


# --------------------------------------------------------------------------
# restore test
# --------------------------------------------------------------------------
@contextlib.contextmanager
def scratch_database(target: Target, name: str, keep: bool = False) -> Iterator[str]:
    admin_db = target.env.get("DBOPS_MAINTENANCE_DB") or os.environ.get("DBOPS_MAINTENANCE_DB") or "postgres"
    conn = target.connect(admin_db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        conn.close()
    try:
        yield name
    finally:
        if not keep:
            conn = target.connect(admin_db)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            finally:
                conn.close()


def download_verified(s3, bucket: str, manifest: dict[str, Any], path: Path) -> list[str]:
    """Download the dump to path, hashing it; return the differences from the manifest."""
    sha = hashlib.sha256()
    size = 0
    try:
        body = s3.get_object(Bucket=bucket, Key=manifest["key"])["Body"]
        with open(path, "wb") as fh:
            for chunk in iter(lambda: body.read(CHUNK), b""):
                sha.update(chunk)
                size += len(chunk)
                fh.write(chunk)
    except Exception as exc:
        raise DumpError(f"cannot download s3://{bucket}/{manifest['key']}: {exc}") from None
    problems = []
    if size != manifest["size"]:
        problems.append(f"size: manifest {manifest['size']} bytes, downloaded {size} bytes")
    if sha.hexdigest() != manifest["sha256"]:
        problems.append(f"sha256: manifest {manifest['sha256']}, downloaded {sha.hexdigest()}")
    return problems


def nearest_neighbour_checks(cur, indexes: list[dict[str, str]] | None = None) -> tuple[list[str], list[str]]:
    """Held-out recall@K through every vector index of the restored database (the collection's shared recall
    measurement, module_utils/vector_recall.py): NN_SAMPLES stored rows as queries, each excluded from its own
    answers, the exact answers from one pass over the table. Returns (notes, problems).
    ``indexes`` is unused (kept for callers): the measurement reads the catalog itself, expression indexes included."""
    return recall_module().check_indexes(cur, samples=NN_SAMPLES, k=NN_K, min_recall=NN_MIN_RECALL)


def recall_module():
    """module_utils/vector_recall.py of the in-repo collection."""
    here = str(Path(__file__).resolve().parent.parent / "collections")
    if here not in sys.path:
        sys.path.insert(0, here)
    from ansible_collections.ndis.dbops.plugins.module_utils import vector_recall

    return vector_recall


def run_restore_test(target: Target, bucket: str, prefix: str = "", key: str | None = None,
                     scratch_name: str | None = None, keep: bool = False, jobs: int = 1,
                     progress: Any = None, progress_interval: float = 5.0) -> dict[str, Any]:
    """Fetch, verify and restore a dump into a scratch database; return the report.

    ``progress`` (module_utils/progress.py's ProgressFile, see :func:`load_progress`) gets a
    line per phase, and one every ``progress_interval`` seconds while pg_restore runs.
    """
    s3 = s3_client()
    mkey = manifest_key(key) if key and not key.endswith(MANIFEST_SUFFIX) else key
    mkey = mkey or latest_manifest(s3, bucket, prefix, target.database)
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=mkey)["Body"].read())
    except Exception as exc:
        raise DumpError(f"cannot read the manifest s3://{bucket}/{mkey}: {exc}") from None
    scratch = scratch_name or f"restore_test_{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}_{uuid.uuid4().hex[:6]}"
    report: dict[str, Any] = {"manifest_key": mkey, "key": manifest["key"], "database": manifest["database"],
                              "scratch_database": scratch, "created_at": manifest.get("created_at"),
                              "size": manifest["size"], "sha256": manifest["sha256"],
                              "checks": [], "problems": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dbops-restore-") as tmp:
        os.chmod(tmp, 0o700)
        path = Path(tmp) / "dump"
        what = f"restore test {manifest['key'].rsplit('/', 1)[-1]}"
        if progress:
            progress.line(what, "downloading", 0, manifest["size"])
        problems = download_verified(s3, bucket, manifest, path)
        if progress:
            progress.line(what, "downloaded, sha256 checked", manifest["size"], manifest["size"])
        report["download_seconds"] = round(time.monotonic() - started, 3)
        if problems:
            report["problems"] += ["checksum: " + p for p in problems]
            report["result"] = "FAIL"
            report["checks"].append("checksum: dump differs from its manifest; not restored")
            return report
        report["checks"].append(f"checksum: sha256 and size ({manifest['size']} bytes) match the manifest")
        restore_started = time.monotonic()
        with scratch_database(target, scratch, keep=keep):
            conn = target.connect(scratch)
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    # pgvector first: the dump's tables need the type before their data arrives.
                    if manifest.get("pgvector_version"):
                        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                cmd = [target.tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                       "--no-password", f"--jobs={jobs}", "--dbname", scratch, str(path)]
                if progress:
                    ticker = progress_module().Ticker(progress, what, restore_poll(conn, manifest), progress_interval)
                else:
                    ticker = contextlib.nullcontext()
                with ticker:
                    res = subprocess.run(cmd, capture_output=True, text=True, env=target.child_env(scratch),
                                         stdin=subprocess.DEVNULL, check=False)
                if progress:
                    progress.line(what, "restored, checking row counts and nearest neighbours")
                report["restore_seconds"] = round(time.monotonic() - restore_started, 3)
                if res.returncode != 0:
                    report["problems"].append(f"pg_restore exit {res.returncode}: {res.stderr.strip()[-2000:]}")
                else:
                    report["checks"].append("pg_restore: completed without errors")
                    conn.autocommit = False
                    with conn.cursor() as cur:
                        counts = table_counts(cur)
                        expected = manifest["tables"]
                        for table in sorted(set(expected) | set(counts)):
                            if table not in counts:
                                report["problems"].append(f"rows: {table} missing after restore "
                                                          f"(manifest {expected[table]})")
                            elif table not in expected:
                                report["problems"].append(f"rows: {table} not in the manifest ({counts[table]})")
                            elif counts[table] != expected[table]:
                                report["problems"].append(f"rows: {table} manifest {expected[table]}, "
                                                          f"restored {counts[table]}")
                        if not any(p.startswith("rows:") for p in report["problems"]):
                            report["checks"].append(f"rows: {len(counts)} tables, counts identical to the manifest "
                                                    f"({sum(counts.values())} rows)")
                        report["tables"] = counts
                        notes, nn_problems = nearest_neighbour_checks(cur)
                        report["checks"] += ["nearest neighbours: " + n for n in notes]
                        report["problems"] += ["nearest neighbours: " + p for p in nn_problems]
                        if not notes and not nn_problems:
                            report["checks"].append("nearest neighbours: no vector index, check skipped")
                        facts = server_facts(cur)
                        report["pgvector_version"] = facts["pgvector_version"]
                    conn.rollback()
            finally:
                conn.close()
        report["scratch_dropped"] = not keep
    report["seconds"] = round(time.monotonic() - started, 3)
    report["result"] = "FAIL" if report["problems"] else "PASS"
    if progress:
        progress.line(what, "done: " + report["result"])
    return report


def restore_poll(conn: Any, manifest: dict[str, Any]) -> Any:
    """A progress Ticker's poll() while pg_restore runs: the table being copied (rows done of the
    manifest's count) or the index being built, from the server's progress views."""
    rows = manifest.get("tables", {})

    def poll() -> tuple[str, Any, Any]:
        with conn.cursor() as cur:
            cur.execute("""SELECT 'copying ' || c.relnamespace::regnamespace || '.' || c.relname, p.tuples_processed
                             FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid
                            WHERE p.datname = current_database()
                           UNION ALL
                           SELECT 'building index ' || coalesce(i.relname, '?') || ' (' || p.phase || ')', p.tuples_done
                             FROM pg_stat_progress_create_index p LEFT JOIN pg_class i ON i.oid = p.index_relid
                            WHERE p.datname = current_database()
                            LIMIT 1""")
            row = cur.fetchone()
        if row is None:
            return ("restoring (pg_restore)", None, None)
        phase, done = row
        table = phase[len("copying "):] if phase.startswith("copying ") else None
        return (phase, done, rows.get(table) if table else None)

    return poll


def progress_module() -> Any:
    """module_utils/progress.py of the collection (loaded by path, like the policy validator)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "collections/ansible_collections/ndis/dbops/plugins/module_utils/progress.py"
    spec = importlib.util.spec_from_file_location("_ndis_progress", path)
    if spec is None or spec.loader is None or not path.exists():
        raise DumpError(f"progress lines need {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESTORE_RECORD = "restore-test.json"


def record_restore_test(bucket: str, prefix: str, database: str, report: dict[str, Any],
                        kms_key_id: str | None = None) -> str:
    """Keep the last restore test's report next to the dumps, where health.yml reads it."""
    key = f"{normalize_prefix(prefix)}{database}/{RESTORE_RECORD}"
    body = {k: report.get(k) for k in ("result", "key", "scratch_database", "checks", "problems", "seconds")}
    body["tested_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    s3_client().put_object(Bucket=bucket, Key=key, Body=json.dumps(body, sort_keys=True).encode(),
                           ContentType="application/json", **sse_args(kms_key_id))
    return key


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def load_policy_dumps(path: str) -> dict[str, Any]:
    """logical_dumps section of a validated policy (the collection's validator, loaded by path)."""
    import importlib.util

    here = Path(__file__).resolve().parent.parent
    mod_path = here / "collections/ansible_collections/ndis/dbops/plugins/module_utils/backup_policy.py"
    spec = importlib.util.spec_from_file_location("_ndis_backup_policy", mod_path)
    if spec is None or spec.loader is None or not mod_path.exists():
        raise DumpError(f"policy validator not found at {mod_path}; pass --bucket/--prefix/--kms-key-id instead")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.load_policy(path)["logical_dumps"]
    except module.PolicyError as exc:
        raise DumpError(f"backup policy {path} is invalid:\n{exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbops-dump", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("dump", "dump the database to S3 with a manifest"),
                        ("restore-test", "restore the newest (or --key) dump into a scratch database and check it"),
                        ("latest", "print the newest manifest key")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--policy", help="backup.rules.json: bucket, prefix and KMS key from logical_dumps")
        p.add_argument("--bucket", help="S3 bucket (overrides the policy)")
        p.add_argument("--prefix", help="key prefix (overrides the policy)")
        p.add_argument("--database", default=os.environ.get("PGDATABASE"), help="database (default $PGDATABASE)")
        p.add_argument("--bindir", default=os.environ.get("DBOPS_PG_BINDIR", ""),
                       help="directory of pg_dump/pg_restore 16 (default: PATH)")
        p.add_argument("--password-ssm-parameter", help="read the password from this SSM SecureString")
        p.add_argument("--password-secret-id",
                       help="read the password from this Secrets Manager secret (an RDS-managed master password)")
        p.add_argument("--json", action="store_true", default=None, help="print JSON (default when not a tty)")
        if name == "dump":
            p.add_argument("--kms-key-id", help="KMS key for SSE-KMS (overrides the policy; default aws/s3)")
            p.add_argument("--compress", help="pg_dump --compress value (default: pg_dump's)")
        if name == "restore-test":
            p.add_argument("--key", help="dump or manifest key (default: the newest)")
            p.add_argument("--scratch-db", help="scratch database name (default restore_test_<time>_<random>)")
            p.add_argument("--keep", action="store_true", help="keep the scratch database (for inspection)")
            p.add_argument("--jobs", type=int, default=1, help="pg_restore --jobs")
            p.add_argument("--progress-file", help="append a progress line per phase and poll to this file")
            p.add_argument("--progress-interval", type=float, default=5.0, help="seconds between progress lines")
    return parser


def print_report(command: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    if command == "dump":
        print(f"dumped {result['database']} to s3://{result['bucket']}/{result['key']}")
        print(f"  {result['size']} bytes, sha256 {result['sha256']}, {len(result['tables'])} tables, "
              f"{result['seconds']} s; manifest {result['manifest_key']}")
    elif command == "restore-test":
        print(f"RESTORE TEST {result['result']}: {result['key']} -> {result['scratch_database']}")
        for line in result["checks"]:
            print(f"  ok    {line}")
        for line in result["problems"]:
            print(f"  FAIL  {line}")
    else:
        print(result["manifest_key"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    as_json = args.json if args.json is not None else not sys.stdout.isatty()
    try:
        dumps = load_policy_dumps(args.policy) if args.policy else {}
        bucket = args.bucket or dumps.get("s3_bucket")
        prefix = args.prefix if args.prefix is not None else dumps.get("s3_prefix", "")
        if not bucket:
            raise DumpError("no bucket: pass --bucket or --policy")
        if not args.database:
            raise DumpError("no database: pass --database or set PGDATABASE")
        env = {}
        if args.password_ssm_parameter:
            env["PGPASSWORD"] = password_from_ssm(args.password_ssm_parameter)
        elif args.password_secret_id:
            env["PGPASSWORD"] = password_from_secret(args.password_secret_id)
        target = Target(database=args.database, bindir=args.bindir, env=env)
        if args.command == "dump":
            kms = args.kms_key_id or dumps.get("kms_key_id")
            result = run_dump(target, bucket, prefix, kms, compress=args.compress)
        elif args.command == "restore-test":
            progress = None
            if args.progress_file or sys.stderr.isatty():
                progress = progress_module().ProgressFile(args.progress_file or None,
                                                          also=log if sys.stderr.isatty() else None)
            result = run_restore_test(target, bucket, prefix, key=args.key, scratch_name=args.scratch_db,
                                      keep=args.keep, jobs=args.jobs, progress=progress,
                                      progress_interval=args.progress_interval)
            record_restore_test(bucket, prefix, args.database, result, dumps.get("kms_key_id"))
        else:
            result = {"manifest_key": latest_manifest(s3_client(), bucket, prefix, args.database)}
    except DumpError as exc:
        log(str(exc))
        return EXIT_ERROR
    print_report(args.command, result, as_json)
    if args.command == "restore-test" and result["result"] != "PASS":
        log("restore test FAILED: " + "; ".join(result["problems"]))
        return EXIT_FAIL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
