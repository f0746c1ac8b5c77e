"""Major engine upgrades (16 -> 17) through the site: blue/green and in place, against moto and the local server.

The module fixture ``major`` is one recording on a stack of its own (conftest.own_stack, NDIS_TEST_MAJOR_*),
the master password kept in SSM (blue/green refuses an RDS-managed one): site.yml converges it on 16, then
declares 17.7 with method blue_green: a dry run, the run that creates the deployment, checks on green and
switches over, a second run, the run that deletes the old blue on purpose. moto keeps the records (its green
has no server of its own): the checks on green run on the embedded server, which stays on its 16 build.
The in-place path runs the site's upgrade module and the ANALYZE play against a moto-only instance.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid

import pytest

from conftest import boto3_factory, execute, make_dsn, own_stack
from playbook_runner import changed_tasks, recap, run_playbook

SSM = ["-e", "rds_instance_master_password_mode=ssm"]
MAJOR = {"rds_instance_engine_version": "17.7", "rds_instance_parameter_group_family": "postgres17",
         "rds_instance_parameter_group_name": "ndis-chatbot-local-postgres17",
         "rds_instance_allow_major_version_upgrade": True, "rds_instance_allow_outage": True,
         "rds_instance_major_upgrade_method": "blue_green"}
BLUE_GREEN = [*SSM, "-e", json.dumps(MAJOR)]
IDENT = "ndis-chatbot-local"


def instances(rds):
    return sorted((i["DBInstanceIdentifier"], i["EngineVersion"], i["DBParameterGroups"][0]["DBParameterGroupName"])
                  for i in rds.describe_db_instances()["DBInstances"])


def deployments(rds):
    return [(d["BlueGreenDeploymentName"], d["Status"]) for d in rds.describe_blue_green_deployments()["BlueGreenDeployments"]]


def module_play(stack, task):
    play = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            f"    - {task}\n      register: r\n    - ansible.builtin.debug: {{var: r}}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write(play)
    return run_playbook(fh.name, localhost=True, stack=stack)


def in_place(stack, rds):
    """16.11 -> 17.7 in place on a moto-only instance: the target family's group, AllowMajorVersionUpgrade, the snapshot."""
    ident = "inplace-" + uuid.uuid4().hex[:6]
    rds.create_db_parameter_group(DBParameterGroupName=ident + "-postgres17", DBParameterGroupFamily="postgres17",
                                  Description="target")
    rds.create_db_instance(DBInstanceIdentifier=ident, Engine="postgres", EngineVersion="16.11",
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="dbadmin",
                           MasterUserPassword="x" * 16)
    run = module_play(stack, "ndis.dbops.rds_engine_upgrade: {db_instance_identifier: %s, engine_version: '17.7', "
                             "apply_immediately: true, allow_major_version_upgrade: true, poll_interval: 1, "
                             "db_parameter_group_name: %s-postgres17}" % (ident, ident))
    inst = rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
    snaps = [s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots(DBInstanceIdentifier=ident)["DBSnapshots"]
             if s.get("SnapshotType") == "manual"]
    return run, dict(ident=ident, engine=inst["EngineVersion"], group=inst["DBParameterGroups"][0]["DBParameterGroupName"],
                     snapshots=snaps)


def managed_refusal(stack, rds):
    ident = "managed-" + uuid.uuid4().hex[:6]
    rds.create_db_instance(DBInstanceIdentifier=ident, Engine="postgres", EngineVersion="16.11",
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="dbadmin",
                           ManageMasterUserPassword=True)
    run = module_play(stack, "ndis.dbops.rds_blue_green: {db_instance_identifier: %s, engine_version: '17.7', "
                             "phase: deploy, allow_reboot: true}" % ident)
    return run, dict(deployments=deployments(rds))


@pytest.fixture(scope="module")
def major():
    timings, runs, seen = {}, {}, {}
    with own_stack("major") as stack:
        rds = boto3_factory(stack)("rds")

        def step(name, *args, timeout=900):
            t0 = time.monotonic()
            runs[name] = run_playbook("site.yml", *args, stack=stack, timeout=timeout)
            timings[name] = time.monotonic() - t0
            seen[name] = dict(instances=instances(rds), deployments=deployments(rds))
            return runs[name]

        assert step("converge", *SSM).returncode == 0, runs["converge"].stdout[-4000:]
        step("check", "--check", *BLUE_GREEN)
        step("blue_green", *BLUE_GREEN)
        step("repeat", *BLUE_GREEN)
        step("delete", *BLUE_GREEN, "-e", "rds_instance_blue_green_delete_old_blue=true")
        # moto-only instances in the same moto: the in-place module path and the managed-password refusal
        runs["in_place"], seen["in_place"] = in_place(stack, rds)
        runs["managed"], seen["managed"] = managed_refusal(stack, rds)
        print("\nmajor upgrade timings (s): " + ", ".join("%s %.1f" % kv for kv in timings.items()))
        yield dict(stack=stack, runs=runs, seen=seen, rds=rds)


def test_check_mode_names_each_step_and_changes_nothing(major):
    run, seen = major["runs"]["check"], major["seen"]
    assert run.returncode == 0, run.stdout[-4000:]
    assert seen["check"] == seen["converge"]
    for text in ("create blue/green deployment ndis-chatbot-local-to-postgres17: green on 17.7",
                 "none (blue serves; green is copied and catches up)", "set rds.logical_replication = 1",
                 "outage (a reboot)", "switchover 16.11 -> 17.7 with timeout 300 s",
                 "switchover: writes stop until green takes the endpoint", "keep the old blue ndis-chatbot-local-old1",
                 "major upgrade (blue_green)"):
        assert text in run.stdout, text
    assert "rds_instance : blue/green | Create the green on the target version and wait for it" in changed_tasks(run.stdout)


def test_blue_green_creates_checks_green_and_switches_over(major):
    run, seen = major["runs"]["blue_green"], major["seen"]["blue_green"]
    assert run.returncode == 0, run.stdout[-6000:]
    names = [i[0] for i in seen["instances"]]
    assert (IDENT, "17.7", "ndis-chatbot-local-postgres17") in seen["instances"], seen
    assert (IDENT + "-old1", "16.11", "ndis-chatbot-local-postgres16") in seen["instances"], seen
    assert len(names) == 2
    assert seen["deployments"] == [("ndis-chatbot-local-to-postgres17", "SWITCHOVER_COMPLETED")]
    for text in ("blue/green ndis-chatbot-local-to-postgres17: creating (green on 17.7)",
                 "blue/green ndis-chatbot-local-to-postgres17: AVAILABLE",
                 "recall on green:", "ndis-chatbot-local runs 17.7 (the green took its name and endpoint)",
                 "the old blue ndis-chatbot-local-old1 is kept"):
        assert text in run.stdout, text
    assert "Run ANALYZE in every database" in run.stdout
    verify = run.stdout[run.stdout.index("VERIFY ndis-chatbot-local"):]
    assert "13/13 passed" in verify or "passed" in verify


def test_a_second_run_changes_nothing_and_keeps_the_old_blue(major):
    run = major["runs"]["repeat"]
    assert run.returncode == 0 and recap(run.stdout)["changed"] == 0, changed_tasks(run.stdout)
    assert "the old blue ndis-chatbot-local-old1 (16.11) is kept" in run.stdout
    assert major["seen"]["repeat"] == major["seen"]["blue_green"]


def test_the_old_blue_is_deleted_on_purpose(major):
    run, seen = major["runs"]["delete"], major["seen"]["delete"]
    assert run.returncode == 0, run.stdout[-4000:]
    assert changed_tasks(run.stdout) == ["rds_instance : old blue | Keep the old blue, or delete it on purpose"]
    assert [i[0] for i in seen["instances"]] == [IDENT] and seen["deployments"] == []
    snaps = [s["DBSnapshotIdentifier"] for s in major["rds"].describe_db_snapshots()["DBSnapshots"]]
    assert IDENT + "-old1-final" in snaps


def test_in_place_major_moves_engine_and_group_after_a_snapshot(major):
    run, seen = major["runs"]["in_place"], major["seen"]["in_place"]
    assert run.returncode == 0 and '"state": "upgraded"' in run.stdout, run.stdout[-3000:]
    assert (seen["engine"], seen["group"]) == ("17.7", seen["ident"] + "-postgres17")
    assert seen["snapshots"] == [seen["ident"] + "-before-16-11-to-17-7"]
    assert "(major: allow_major_version_upgrade, target family parameter group)" in run.stdout


def test_blue_green_is_refused_with_an_rds_managed_password_saying_what_to_do(major):
    run = major["runs"]["managed"]
    assert run.returncode != 0 and major["seen"]["managed"]["deployments"] == []
    for text in ("RDS blue/green deployments are not supported for an instance whose master password RDS manages",
                 "Nothing was changed", "rds_instance_master_password_mode: ssm",
                 "rds_instance_major_upgrade_method: in_place"):
        assert text in run.stdout, text
