"""dbops.dump against the real embedded PostgreSQL 16 + pgvector and moto's S3/KMS over HTTP.

Round trip dump -> S3 -> restore with identical counts, a corrupted dump caught by its
checksum, a count mismatch reported by table, and an HNSW-indexed vector table that restores
and answers nearest-neighbour queries like the source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest

from conftest import make_dsn
from dbops import dump

BIN = Path(sys.executable).parent
ROWS = 300
DIMS = 16


@pytest.fixture()
def aws(aws_env, monkeypatch):
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    return aws_env


@pytest.fixture()
def bucket(boto3_client, aws):
    name = f"dump-test-{uuid.uuid4().hex[:10]}"
    boto3_client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": aws["AWS_REGION"]})
    key_id = boto3_client("kms").create_key(Description="dump tests")["KeyMetadata"]["KeyId"]
    return {"name": name, "kms_key_id": key_id}


@pytest.fixture()
def source(scratch_db, local_stack):
    """A database with a vector table (HNSW index), an empty table and a second schema."""
    with psycopg2.connect(scratch_db["dsn"]) as conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION vector")
        cur.execute(f"CREATE TABLE items (id int PRIMARY KEY, doc text NOT NULL, embedding vector({DIMS}) NOT NULL)")
        cur.execute(f"""INSERT INTO items SELECT i, 'doc ' || i,
                          (SELECT array_agg(random())::vector FROM generate_series(1, {DIMS}) WHERE i > 0)
                        FROM generate_series(1, {ROWS}) i""")
        cur.execute("CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops)")
        cur.execute("CREATE TABLE empty_one (x int)")
        cur.execute("CREATE SCHEMA audit")
        cur.execute("CREATE TABLE audit.events AS SELECT generate_series(1, 42) AS id")
    conn.close()
    pg = local_stack["pg"]
    env = {"PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGUSER": pg["user"],
           "PGPASSWORD": local_stack["admin_password"], "PGSSLMODE": "disable"}
    return {**scratch_db, "target": dump.Target(database=scratch_db["name"], bindir=pg["bindir"], env=env), "env": env}


def databases(pg_admin_dsn) -> set[str]:
    with psycopg2.connect(pg_admin_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        names = {r[0] for r in cur.fetchall()}
    conn.close()
    return names


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dbops-dump"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)


def test_round_trip_through_s3_keeps_every_count(source, bucket, boto3_client, local_stack, pg_admin_dsn):
    env = {**source["env"], "DBOPS_PG_BINDIR": local_stack["pg"]["bindir"]}
    loc = ["--bucket", bucket["name"], "--prefix", "logical", "--database", source["name"], "--json"]
    made = run_cli("dump", *loc, "--kms-key-id", bucket["kms_key_id"], env=env)
    assert made.returncode == 0, made.stderr
    assert local_stack["admin_password"] not in made.stdout + made.stderr
    manifest = json.loads(made.stdout)
    assert manifest["tables"] == {"public.items": ROWS, "public.empty_one": 0, "audit.events": 42}
    assert manifest["pgvector_version"] and manifest["server_version"].startswith("16.")
    assert manifest["key"].startswith(f"logical/{source['name']}/") and manifest["key"].endswith(".dump")

    s3 = boto3_client("s3")
    head = s3.head_object(Bucket=bucket["name"], Key=manifest["key"])
    assert head["ServerSideEncryption"] == "aws:kms" and bucket["kms_key_id"] in head["SSEKMSKeyId"]
    assert head["ContentLength"] == manifest["size"]
    stored = json.loads(s3.get_object(Bucket=bucket["name"], Key=manifest["manifest_key"])["Body"].read())
    assert stored["sha256"] == manifest["sha256"]

    before = databases(pg_admin_dsn)
    checked = run_cli("restore-test", *loc, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["result"] == "PASS", report["problems"]
    assert report["tables"] == manifest["tables"]
    assert any("hnsw" in c and f"{dump.NN_SAMPLES}/{dump.NN_SAMPLES}" in c for c in report["checks"])
    assert databases(pg_admin_dsn) == before, "the scratch database must be dropped"


def test_corrupted_dump_is_caught_by_the_checksum(source, bucket, boto3_client, pg_admin_dsn, capsys):
    manifest = dump.run_dump(source["target"], bucket["name"], "logical/")
    s3 = boto3_client("s3")
    data = bytearray(s3.get_object(Bucket=bucket["name"], Key=manifest["key"])["Body"].read())
    middle = len(data) // 2
    data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
    s3.put_object(Bucket=bucket["name"], Key=manifest["key"], Body=bytes(data))

    before = databases(pg_admin_dsn)
    report = dump.run_restore_test(source["target"], bucket["name"], "logical/")
    assert report["result"] == "FAIL"
    assert any(p.startswith("checksum: sha256: manifest " + manifest["sha256"]) for p in report["problems"])
    assert databases(pg_admin_dsn) == before, "a corrupt dump must not be restored"

    os.environ.update(source["env"])
    try:
        rc = dump.main(["restore-test", "--bucket", bucket["name"], "--prefix", "logical/",
                        "--database", source["name"], "--bindir", source["target"].bindir, "--json"])
    finally:
        for key in source["env"]:
            os.environ.pop(key, None)
    assert rc == dump.EXIT_FAIL
    assert "sha256" in capsys.readouterr().err


def test_count_mismatch_names_the_table(source, bucket, boto3_client):
    manifest = dump.run_dump(source["target"], bucket["name"], "")
    tampered = {k: v for k, v in manifest.items() if k != "manifest_key"}
    tampered["tables"] = {**tampered["tables"], "public.items": ROWS + 1}
    boto3_client("s3").put_object(Bucket=bucket["name"], Key=manifest["manifest_key"], Body=json.dumps(tampered))
    report = dump.run_restore_test(source["target"], bucket["name"], "", key=manifest["key"])
    assert report["result"] == "FAIL"
    assert report["problems"] == [f"rows: public.items manifest {ROWS + 1}, restored {ROWS}"]


def test_hnsw_table_restores_and_answers_nearest_neighbour_queries(source, bucket, local_stack):
    dump.run_dump(source["target"], bucket["name"], "x/")
    scratch = f"restored_{uuid.uuid4().hex[:8]}"
    report = dump.run_restore_test(source["target"], bucket["name"], "x/", scratch_name=scratch, keep=True)
    try:
        assert report["result"] == "PASS", report["problems"]
        query = "SELECT id FROM items ORDER BY embedding <-> (SELECT embedding FROM items WHERE id = 7) LIMIT 5"
        results = {}
        for name in (source["name"], scratch):
            with psycopg2.connect(make_dsn(local_stack, name)) as conn, conn.cursor() as cur:
                cur.execute("SET enable_seqscan = off")
                cur.execute("EXPLAIN " + query)
                plan = "\n".join(r[0] for r in cur.fetchall())
                assert "items_hnsw" in plan, plan
                cur.execute(query)
                results[name] = [r[0] for r in cur.fetchall()]
            conn.close()
        with psycopg2.connect(make_dsn(local_stack, source["name"])) as conn, conn.cursor() as cur:
            cur.execute("SET enable_indexscan = off")
            cur.execute(query)
            exact = [r[0] for r in cur.fetchall()]
        conn.close()
        # HNSW is approximate and the restore rebuilds the graph: the row itself comes first,
        # and the neighbours agree with the exact answer (as the source's index does).
        assert results[scratch][0] == 7 and exact[0] == 7
        assert len(set(results[scratch]) & set(exact)) >= 4, (results, exact)
    finally:
        conn = psycopg2.connect(make_dsn(local_stack, "postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        conn.close()


def test_the_query_sample_is_dumped_without_its_rows(source, bucket):
    """Sampled query vectors are personal data kept days, not the dumps' weeks: the table is dumped, its rows are not."""
    from ansible_collections.ndis.dbops.plugins.module_utils import vector_sample as vs

    vs.ensure({"dsn": source["dsn"]})
    with psycopg2.connect(source["dsn"]) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO query_sample.vector_queries (index_name, embedding) VALUES ('items_hnsw', '[1,2]')")
    conn.close()
    manifest = dump.run_dump(source["target"], bucket["name"], "s/")
    assert manifest["rows_not_dumped"] == ["query_sample.vector_queries"]
    assert manifest["tables"]["query_sample.vector_queries"] == 0 and manifest["tables"]["public.items"] == ROWS
    report = dump.run_restore_test(source["target"], bucket["name"], "s/", key=manifest["key"])
    assert report["result"] == "PASS", report["problems"]
    assert report["tables"]["query_sample.vector_queries"] == 0


def test_latest_is_the_newest_dump_and_a_missing_one_is_explained(source, bucket):
    import datetime as dt

    old = dump.run_dump(source["target"], bucket["name"], "p", now=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    new = dump.run_dump(source["target"], bucket["name"], "p", now=dt.datetime(2024, 1, 3, 0, 0, 0, tzinfo=dt.UTC))
    assert old["key"] == f"p/{source['name']}/2024/01/02/{source['name']}-20240102T030405Z.dump"
    assert dump.latest_manifest(dump.s3_client(), bucket["name"], "p", source["name"]) == new["manifest_key"]
    with pytest.raises(dump.DumpError, match="no dump manifest under s3://.*; run a dump first"):
        dump.latest_manifest(dump.s3_client(), bucket["name"], "elsewhere/", source["name"])


def test_password_from_an_rds_managed_secret(aws, boto3_client):
    """--password-secret-id: the scheduled dump reads an RDS-managed master password from its secret
    (RDS's shape, {"username", "password"}); a missing secret is named, its value never printed."""
    sm = boto3_client("secretsmanager")
    name = f"rds!db-test-{uuid.uuid4().hex[:8]}"
    arn = sm.create_secret(Name=name, SecretString=json.dumps({"username": "admin", "password": "Pw-" + "k" * 20}))["ARN"]
    assert dump.password_from_secret(arn) == "Pw-" + "k" * 20
    with pytest.raises(dump.DumpError, match="cannot read the password from Secrets Manager secret no-such"):
        dump.password_from_secret("no-such-secret")
    sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
