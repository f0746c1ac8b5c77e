"""Declared read replicas through the real site on the local stack, where each is a real standby server.

The module fixture ``replica_runs`` is one recording on a stack of its own (conftest.own_stack,
NDIS_TEST_REPLICAS_*), on which moto enforces IAM (each run as its job's user: the deploy job creates,
converges and removes the replica; drift runs as the read-only job). site.yml converges the instance with one
replica declared, then again; a dry run declares another class and tags, the real run applies them, drift
finds nothing; the replica is dropped from the declaration (kept, named), then removed with the switch; a dry
run declares it again. Each test asserts on the recording.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from conftest import boto3_factory, own_stack
from playbook_runner import changed_tasks, recap, run_playbook

INSTANCE = "ndis-chatbot-local"
REPLICA = f"{INSTANCE}-replica-1"
TASK = "rds_instance : replicas | Ensure the read replicas of the instance"


def declare(*replicas: dict, remove: bool = False) -> list[str]:
    return ["-e", json.dumps({"rds_instance_read_replicas": list(replicas), "rds_instance_read_replicas_remove": remove})]


ONE = {"identifier": REPLICA, "availability_zone": "ap-southeast-2b"}
CHANGED = dict(ONE, **{"class": "db.t4g.large", "tags": {"role": "search"}})


def execute_kw(params: dict, *statements: str):
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def read_url_probe(stack: dict) -> dict:
    """What the app's searches see through DATABASE_URL_READONLY, and what a write through it gets."""
    ssm = boto3_factory(stack)("ssm")
    url = ssm.get_parameter(Name="/ndis-chatbot/local/DATABASE_URL_READONLY", WithDecryption=True)["Parameter"]
    app_url = ssm.get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]["Value"]
    out = {"type": url["Type"], "url": urlsplit(url["Value"])}
    conn = psycopg2.connect(url["Value"])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT '[1]'::vector")  # pgvector loaded: its settings are real, not placeholders
            cur.execute("SELECT current_user, pg_is_in_recovery(), current_setting('hnsw.ef_search', true), "
                        "(SELECT count(*) FROM embeddings) FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            out["session"] = cur.fetchone()
            try:
                cur.execute("INSERT INTO embeddings SELECT * FROM embeddings LIMIT 1")
                out["write"] = "accepted"
            except psycopg2.Error as e:
                out["write"] = type(e).__name__
    finally:
        conn.close()
    primary = psycopg2.connect(app_url)
    try:
        with primary.cursor() as cur:  # what an app session on the primary gets, pgvector loaded
            cur.execute("SELECT '[1]'::vector")
            cur.execute("SELECT current_setting('hnsw.ef_search', true)")
            out["primary_ef_search"] = cur.fetchone()[0]
    finally:
        primary.close()
    return out


@pytest.fixture(scope="module")
def replica_runs():
    with own_stack("replicas", "--enforce-iam") as stack:
        rds = boto3_factory(stack)("rds")
        runs, seen = {}, {}

        def run(name, playbook, *args):
            runs[name] = run_playbook(playbook, *args, stack=stack, timeout=900)
            # health FAILs on other grounds on a stack this young (no dump yet): its replica line is what counts
            if not name.startswith("health"):
                assert (runs[name].returncode == 0) != name.endswith(" paused"), runs[name].stdout[-6000:]
            seen[name] = {i["DBInstanceIdentifier"]: i for i in rds.describe_db_instances()["DBInstances"]}
            seen[name + " stack"] = json.loads((Path(stack["dir"]) / "stack.json").read_text()).get("instances", {})

        run("converge", "site.yml", *declare(ONE))
        run("repeat", "site.yml", *declare(ONE))
        runs["read url"] = read_url_probe(stack)
        run("verify", "playbooks/verify.yml", *declare(ONE))
        run("health", "playbooks/health.yml", *declare(ONE))
        replica_dsn = dict(host="127.0.0.1", port=seen["repeat stack"][REPLICA]["port"], user=stack["pg"]["user"],
                           password=stack["admin_password"], dbname="postgres")
        execute_kw(replica_dsn, "SELECT pg_wal_replay_pause()")
        try:
            run("health paused", "playbooks/health.yml", *declare(ONE))
            run("verify paused", "playbooks/verify.yml", *declare(ONE))
        finally:
            execute_kw(replica_dsn, "SELECT pg_wal_replay_resume()")
        run("check change", "site.yml", "--tags", "rds_instance", "--check", *declare(CHANGED))
        run("change", "site.yml", "--tags", "rds_instance", *declare(CHANGED))
        run("drift", "playbooks/drift.yml", "--check", "--tags", "rds_instance", *declare(CHANGED))
        run("undeclared", "site.yml", "--tags", "rds_instance", *declare())
        run("check remove", "site.yml", "--tags", "rds_instance", "--check", *declare(remove=True))
        run("remove", "site.yml", "--tags", "rds_instance", *declare(remove=True))
        run("check create", "site.yml", "--tags", "rds_instance", "--check", *declare(ONE))
        yield {"runs": runs, "seen": seen, "stack": stack}


def test_the_site_creates_the_declared_replica_as_a_real_standby(replica_runs):
    run, seen = replica_runs["runs"]["converge"], replica_runs["seen"]["converge"]
    assert TASK in changed_tasks(run.stdout)
    replica = seen[REPLICA]
    assert replica["ReadReplicaSourceDBInstanceIdentifier"] == INSTANCE
    assert replica["DBInstanceStatus"] == "available" and replica["AvailabilityZone"] == "ap-southeast-2b"
    assert replica["DBParameterGroups"][0]["DBParameterGroupName"] == f"{INSTANCE}-postgres16"
    assert seen[INSTANCE]["ReadReplicaDBInstanceIdentifiers"] == [REPLICA]
    assert seen[INSTANCE]["BackupRetentionPeriod"] == 7  # the primary's backup policy holds
    server = replica_runs["seen"]["converge stack"][REPLICA]
    assert server["role"] == "replica" and server["source"] == INSTANCE


def test_second_run_changes_nothing(replica_runs):
    run = replica_runs["runs"]["repeat"]
    assert recap(run.stdout)["changed"] == 0, changed_tasks(run.stdout)


def test_check_mode_predicts_each_change_exactly(replica_runs):
    runs = replica_runs["runs"]
    predicted, real = changed_tasks(runs["check change"].stdout), changed_tasks(runs["change"].stdout)
    assert predicted == real == [TASK]
    out = runs["check change"].stdout
    assert re.search(rf'"{REPLICA}\s+instance_class\s+db\.t4g\.medium\s+db\.t4g\.large"', out), out[-3000:]
    assert re.search(rf'"{REPLICA}\s+tags\s+\{{.*\}}\s+\{{\'role\': \'search\'\}}"', out)
    assert len(re.findall(rf'"{REPLICA}\s+\w+\s', out)) == 2  # nothing else
    assert replica_runs["seen"]["check change"][REPLICA]["DBInstanceClass"] == "db.t4g.medium"
    changed = replica_runs["seen"]["change"][REPLICA]
    assert changed["DBInstanceClass"] == "db.t4g.large"
    assert {t["Key"]: t["Value"] for t in changed["TagList"]} == {"role": "search"}
    assert "DRIFT ndis-chatbot-local: 0 task(s) would change" in runs["drift"].stdout


def test_a_replica_is_removed_only_with_the_switch(replica_runs):
    runs, seen = replica_runs["runs"], replica_runs["seen"]
    assert recap(runs["undeclared"].stdout)["changed"] == 0
    assert f"does not name: {REPLICA}" in runs["undeclared"].stdout
    assert REPLICA in seen["undeclared"] and REPLICA in seen["undeclared stack"]
    assert changed_tasks(runs["check remove"].stdout) == [TASK] and REPLICA in seen["check remove"]
    assert changed_tasks(runs["remove"].stdout) == [TASK]
    assert REPLICA not in seen["remove"] and REPLICA not in seen["remove stack"]
    assert seen["remove"][INSTANCE]["DBInstanceStatus"] == "available"
    # declared again: the dry run says it would create it, and creates nothing
    assert changed_tasks(runs["check create"].stdout) == [TASK]
    assert re.search(rf"{REPLICA}\s+create\s+-\s+db\.t4g\.medium", runs["check create"].stdout)
    assert REPLICA not in seen["check create"]


def test_the_read_url_reaches_the_replica_over_verified_tls_and_cannot_write(replica_runs):
    probe = replica_runs["runs"]["read url"]
    server = replica_runs["seen"]["repeat stack"][REPLICA]
    assert probe["type"] == "SecureString"
    url = probe["url"]
    assert (url.hostname, url.port, url.username) == ("127.0.0.1", server["tls"]["port"], "app_user_reader")
    assert "sslmode=verify-full" in url.query and "sslrootcert=" in url.query
    user, standby, ef_search, _rows = probe["session"]
    assert (user, standby) == ("app_user_reader", True)
    assert ef_search == probe["primary_ef_search"]  # the tuned setting replicates with the catalog
    assert probe["write"] in ("ReadOnlySqlTransaction", "InsufficientPrivilege")


def test_verify_and_health_check_the_replica_and_name_a_paused_one(replica_runs):
    runs = replica_runs["runs"]
    assert re.search(r"PASS\s+Read URL reaches a replica that cannot write", runs["verify"].stdout), runs["verify"].stdout[-3000:]
    assert re.search(r"PASS\s+Read URL gets the search settings and keeps up", runs["verify"].stdout)
    assert re.search(rf"(PASS|WARN)\s+Read replica {REPLICA}\s+lag", runs["health"].stdout), runs["health"].stdout[-3000:]
    assert re.search(rf"FAIL\s+Read replica {REPLICA}\s+replay paused", runs["health paused"].stdout), \
        runs["health paused"].stdout[-3000:]
    assert re.search(r"FAIL\s+Read URL gets the search settings and keeps up.*replay paused", runs["verify paused"].stdout)


def test_each_replica_has_a_lag_alarm(replica_runs):
    cw = boto3_factory(replica_runs["stack"])("cloudwatch")
    alarm = cw.describe_alarms(AlarmNames=[f"{REPLICA}-replica-lag"])["MetricAlarms"]
    assert [(a["MetricName"], a["Threshold"], a["Dimensions"]) for a in alarm] == [
        ("ReplicaLag", 600.0, [{"Name": "DBInstanceIdentifier", "Value": REPLICA}])]
