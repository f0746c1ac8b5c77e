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


@pytest.fixture(scope="module")
def replica_runs():
    with own_stack("replicas", "--enforce-iam") as stack:
        rds = boto3_factory(stack)("rds")
        runs, seen = {}, {}

        def run(name, playbook, *args):
            runs[name] = run_playbook(playbook, *args, stack=stack, timeout=900)
            assert runs[name].returncode == 0 or name in ("",), runs[name].stdout[-6000:]
            seen[name] = {i["DBInstanceIdentifier"]: i for i in rds.describe_db_instances()["DBInstances"]}
            seen[name + " stack"] = json.loads((Path(stack["dir"]) / "stack.json").read_text()).get("instances", {})

        run("converge", "site.yml", *declare(ONE))
        run("repeat", "site.yml", *declare(ONE))
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
    table = re.findall(rf"{REPLICA}\s+(\w+)\s+(.+?)\s+(\S+)\"?,?$", runs["check change"].stdout, re.M)
    assert [(s, d) for s, _c, d in table] == [("instance_class", "db.t4g.large"), ("tags", "{'role':")] or \
        [s for s, _c, _d in table] == ["instance_class", "tags"], table
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
