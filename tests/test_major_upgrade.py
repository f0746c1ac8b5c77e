"""Major engine upgrades (16 -> 17) through the site: in place and blue/green, against moto and the local server.

The module fixture ``major`` is one recording on a stack of its own (conftest.own_stack, NDIS_TEST_MAJOR_*),
the master password kept in SSM (blue/green refuses an RDS-managed one): site.yml converges it on 16, then
declares 17.7 in place: a dry run, a run stopped after the provision play (the engine upgraded, ANALYZE not
run yet), the run that resumes it, a second run. moto's record then goes back to 16.11 (AWS never downgrades;
here it spares a second stack and converge) and 17.7 is declared with method blue_green: a dry run, a run
stopped while the deployment provisions (its wait times out), the run that resumes it (checks on green,
switchover), a second run, the run that deletes the old blue on purpose. moto keeps the records (patch 15 has
no local build of 17, and moto's green has no server of its own): the database steps run on the embedded
server, which stays on its 16 build.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid

import pytest

from conftest import boto3_factory, own_stack
from playbook_runner import REPO_ROOT, changed_tasks, recap, run_playbook

SSM = ["-e", "rds_instance_master_password_mode=ssm"]
TARGET = {"rds_instance_engine_version": "17.7", "rds_instance_parameter_group_family": "postgres17",
          "rds_instance_parameter_group_name": "ndis-chatbot-local-postgres17",
          "rds_instance_allow_major_version_upgrade": True, "rds_instance_allow_outage": True}
IN_PLACE = [*SSM, "-e", json.dumps({**TARGET, "rds_instance_major_upgrade_method": "in_place"})]
BLUE_GREEN = [*SSM, "-e", json.dumps({**TARGET, "rds_instance_major_upgrade_method": "blue_green"})]
IDENT = "ndis-chatbot-local"
SNAPSHOT = IDENT + "-before-16-11-to-17-7"


def instances(rds):
    return sorted((i["DBInstanceIdentifier"], i["EngineVersion"], i["DBParameterGroups"][0]["DBParameterGroupName"])
                  for i in rds.describe_db_instances()["DBInstances"])


def deployments(rds):
    return [(d["BlueGreenDeploymentName"], d["Status"]) for d in rds.describe_blue_green_deployments()["BlueGreenDeployments"]]


def snapshot_tags(rds):
    out = {}
    for snap in rds.describe_db_snapshots(DBInstanceIdentifier=IDENT, SnapshotType="manual")["DBSnapshots"]:
        out[snap["DBSnapshotIdentifier"]] = {t["Key"]: t["Value"] for t in snap.get("TagList", [])}.get("ndis-post-upgrade")
    return out


def module_play(stack, task):
    play = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            f"    - {task}\n      register: r\n    - ansible.builtin.debug: {{var: r}}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write(play)
    return run_playbook(fh.name, localhost=True, stack=stack)


def provision_only(stack, *args):
    """site.yml stopped right after the provision play (as a run killed there): validate, then provision."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write("---\n" + "".join(f"- name: {name}\n  ansible.builtin.import_playbook: {REPO_ROOT}/playbooks/{name}.yml\n"
                                   for name in ("validate", "provision")))
    return run_playbook(fh.name, *args, stack=stack, timeout=900)


def back_to_16(rds):
    """moto's record back on 16.11 with the 16 group (patch 15 takes the flag; AWS never downgrades)."""
    rds.modify_db_instance(DBInstanceIdentifier=IDENT, EngineVersion="16.11", AllowMajorVersionUpgrade=True,
                           DBParameterGroupName=IDENT + "-postgres16", ApplyImmediately=True)
    for _ in range(120):
        inst = rds.describe_db_instances(DBInstanceIdentifier=IDENT)["DBInstances"][0]
        if (inst["DBInstanceStatus"], inst["EngineVersion"]) == ("available", "16.11"):
            return
        time.sleep(0.5)
    raise AssertionError(inst)


def managed_refusal(stack, rds):
    ident = "managed-" + uuid.uuid4().hex[:6]
    rds.create_db_instance(DBInstanceIdentifier=ident, Engine="postgres", EngineVersion="16.11",
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="dbadmin",
                           ManageMasterUserPassword=True)
    run = module_play(stack, "ndis.dbops.rds_blue_green: {db_instance_identifier: %s, engine_version: '17.7', "
                             "phase: deploy, allow_reboot: true}" % ident)
    return run, dict(deployments=[d for d in deployments(rds) if d[0].startswith(ident)])


@pytest.fixture(scope="module")
def major():
    timings, runs, seen = {}, {}, {}
    with own_stack("major") as stack:
        rds = boto3_factory(stack)("rds")

        def step(name, *args, timeout=900, run=None):
            t0 = time.monotonic()
            runs[name] = run() if run else run_playbook("site.yml", *args, stack=stack, timeout=timeout)
            timings[name] = time.monotonic() - t0
            seen[name] = dict(instances=instances(rds), deployments=deployments(rds), snapshots=snapshot_tags(rds))
            return runs[name]

        assert step("converge", *SSM).returncode == 0, runs["converge"].stdout[-4000:]
        # in place
        step("ip_check", "--check", *IN_PLACE)
        step("ip_stopped", run=lambda: provision_only(stack, *IN_PLACE))
        step("ip_resume", *IN_PLACE)
        step("ip_repeat", *IN_PLACE)
        back_to_16(rds)
        seen["back_to_16"] = dict(instances=instances(rds), deployments=deployments(rds), snapshots=snapshot_tags(rds))
        # blue/green
        step("check", "--check", *BLUE_GREEN)
        step("bg_stopped", *BLUE_GREEN, "-e", "rds_instance_upgrade_timeout=2")
        step("blue_green", *BLUE_GREEN)
        step("delete", *BLUE_GREEN, "-e", "rds_instance_blue_green_delete_old_blue=true")
        runs["managed"], seen["managed"] = managed_refusal(stack, rds)
        print("\nmajor upgrade timings (s): " + ", ".join("%s %.1f" % kv for kv in timings.items()))
        yield dict(stack=stack, runs=runs, seen=seen, rds=rds)


def test_in_place_check_mode_names_each_step_and_changes_nothing(major):
    run, seen = major["runs"]["ip_check"], major["seen"]
    assert run.returncode == 0, run.stdout[-4000:]
    assert seen["ip_check"] == seen["converge"]
    for text in ("major: allow_major_version_upgrade, target family parameter group", "17.7"):
        assert text in run.stdout, text
    assert "rds_instance : upgrade | Snapshot, move to the declared engine version and wait for it" in changed_tasks(run.stdout)


def test_in_place_stopped_before_analyze_is_finished_by_the_next_run(major):
    stopped, resumed, seen = major["runs"]["ip_stopped"], major["runs"]["ip_resume"], major["seen"]
    assert stopped.returncode == 0, stopped.stdout[-4000:]
    # the engine moved, with the target family's group, after the snapshot; its tag says ANALYZE is owed
    assert seen["ip_stopped"]["instances"] == [(IDENT, "17.7", IDENT + "-postgres17")]
    assert seen["ip_stopped"]["snapshots"] == {SNAPSHOT: "analyze"}
    assert "(major: allow_major_version_upgrade, target family parameter group)" in stopped.stdout
    # the next run upgrades nothing more, runs ANALYZE and records it
    assert resumed.returncode == 0, resumed.stdout[-6000:]
    changed = changed_tasks(resumed.stdout)
    assert any(t.endswith("Run ANALYZE in every database (pg_upgrade does not carry the statistics)") for t in changed), changed
    assert not any("upgrade | Snapshot" in t for t in changed), changed
    assert seen["ip_resume"]["snapshots"] == {SNAPSHOT: "done"}
    assert seen["ip_resume"]["instances"] == seen["ip_stopped"]["instances"]
    assert "passed" in resumed.stdout[resumed.stdout.index("VERIFY ndis-chatbot-local"):]


def test_in_place_second_run_changes_nothing(major):
    run = major["runs"]["ip_repeat"]
    assert run.returncode == 0 and recap(run.stdout)["changed"] == 0, changed_tasks(run.stdout)
    assert "Run ANALYZE" not in "\n".join(changed_tasks(run.stdout))
    assert major["seen"]["ip_repeat"] == major["seen"]["ip_resume"]
    assert major["seen"]["back_to_16"]["instances"] == [(IDENT, "16.11", IDENT + "-postgres16")]


def test_check_mode_names_each_step_and_changes_nothing(major):
    run, seen = major["runs"]["check"], major["seen"]
    assert run.returncode == 0, run.stdout[-4000:]
    assert seen["check"] == seen["back_to_16"]
    for text in ("create blue/green deployment ndis-chatbot-local-to-postgres17: green on 17.7",
                 "none (blue serves; green is copied and catches up)", "set rds.logical_replication = 1",
                 "outage (a reboot)", "switchover 16.11 -> 17.7 with timeout 300 s",
                 "switchover: writes stop until green takes the endpoint", "keep the old blue ndis-chatbot-local-old1",
                 "major upgrade (blue_green)"):
        assert text in run.stdout, text
    assert "rds_instance : blue_green | Create the green on the target version and wait for it" in changed_tasks(run.stdout)


def test_blue_green_stopped_while_provisioning_is_resumed_by_the_next_run(major):
    stopped, seen = major["runs"]["bg_stopped"], major["seen"]
    # the wait timed out with the deployment provisioning (patch 18): created once, blue untouched
    assert stopped.returncode != 0
    assert seen["bg_stopped"]["deployments"] == [("ndis-chatbot-local-to-postgres17", "PROVISIONING")], seen["bg_stopped"]
    assert seen["bg_stopped"]["instances"][0] == (IDENT, "16.11", IDENT + "-postgres16")
    for text in ("blue/green ndis-chatbot-local-to-postgres17: creating (green on 17.7)",
                 "blue/green ndis-chatbot-local-to-postgres17: PROVISIONING (CREATING_READ_REPLICA_OF_SOURCE IN_PROGRESS",
                 "still PROVISIONING", "the next run waits for it again"):
        assert text in stopped.stdout, text
    # the next run finds it by its name: no second deployment, waits, checks green, switches over
    run = major["runs"]["blue_green"]
    assert "creating (green on" not in run.stdout
    assert "blue/green ndis-chatbot-local-to-postgres17: AVAILABLE" in run.stdout
    assert "switchover ndis-chatbot-local-to-postgres17: SWITCHOVER_IN_PROGRESS" in run.stdout
    assert "switchover ndis-chatbot-local-to-postgres17: SWITCHOVER_COMPLETED" in run.stdout


def test_blue_green_checks_green_and_switches_over(major):
    run, seen = major["runs"]["blue_green"], major["seen"]["blue_green"]
    assert run.returncode == 0, run.stdout[-6000:]
    names = [i[0] for i in seen["instances"]]
    assert (IDENT, "17.7", "ndis-chatbot-local-postgres17") in seen["instances"], seen
    assert (IDENT + "-old1", "16.11", "ndis-chatbot-local-postgres16") in seen["instances"], seen
    assert len(names) == 2
    assert seen["deployments"] == [("ndis-chatbot-local-to-postgres17", "SWITCHOVER_COMPLETED")]
    for text in ("blue/green ndis-chatbot-local-to-postgres17: AVAILABLE",
                 "recall on green:", "ndis-chatbot-local runs 17.7 (the green took its name and endpoint)",
                 "the old blue ndis-chatbot-local-old1 is kept"):
        assert text in run.stdout, text
    assert "Run ANALYZE in every database" in run.stdout
    verify = run.stdout[run.stdout.index("VERIFY ndis-chatbot-local"):]
    assert "13/13 passed" in verify or "passed" in verify


def test_the_old_blue_is_deleted_on_purpose_and_nothing_else_changes(major):
    # the run after the switchover: the deletion is its one change, so the upgraded site is otherwise converged
    run, seen = major["runs"]["delete"], major["seen"]["delete"]
    assert run.returncode == 0, run.stdout[-4000:]
    assert changed_tasks(run.stdout) == ["rds_instance : old_blue | Keep the old blue, or delete it on purpose"]
    assert [i[0] for i in seen["instances"]] == [IDENT] and seen["deployments"] == []
    snaps = [s["DBSnapshotIdentifier"] for s in major["rds"].describe_db_snapshots()["DBSnapshots"]]
    assert IDENT + "-old1-final" in snaps


def test_blue_green_is_refused_with_an_rds_managed_password_saying_what_to_do(major):
    run = major["runs"]["managed"]
    assert run.returncode != 0 and major["seen"]["managed"]["deployments"] == []
    for text in ("RDS blue/green deployments are not supported for an instance whose master password RDS manages",
                 "Nothing was changed", "rds_instance_master_password_mode: ssm",
                 "rds_instance_major_upgrade_method: in_place"):
        assert text in run.stdout, text
