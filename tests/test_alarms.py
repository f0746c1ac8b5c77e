"""Alarms, their topic and subscriptions, the event subscription (ndis.dbops.rds_alarms) and
the monitoring role and log groups (ndis.dbops.rds_observability), against moto over HTTP:
check mode on nothing, apply, check-mode repeat and repeat with no change, then drift made
by hand is reported exactly in check mode and put right. The thresholds' arithmetic is
unit-tested on the RDS facts it is derived from."""

from __future__ import annotations

import json
import uuid

import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import rds_alarms as ra
from playbook_runner import run_playbook

GIB = 1024 ** 3


def by_name(specs):
    return {s["AlarmName"].rsplit("db-", 1)[-1]: s for s in specs}


def test_thresholds_follow_the_instance():
    specs = by_name(ra.alarm_specs("db", "db.t4g.medium", 50, "arn:topic"))
    assert specs["free-storage"]["Threshold"] == 5 * GIB  # 10% of 50 GiB
    assert specs["freeable-memory"]["Threshold"] == round(0.4 * GIB)  # 10% of 4 GiB
    assert specs["connections"]["Threshold"] == int(0.8 * 450)  # 4 GiB / 9531392 = 450
    assert specs["cpu"]["EvaluationPeriods"] * specs["cpu"]["Period"] == 15 * 60
    assert specs["cpu-credits"]["Threshold"] == round(0.1 * 24 * 24, 1)  # medium earns 24 credits an hour
    assert specs["disk-queue"]["Threshold"] == 60.0  # gp3 3000 IOPS x 20 ms
    big = by_name(ra.alarm_specs("db", "db.r6g.2xlarge", 400, "arn:topic", iops=12000, max_connections=1000))
    assert "cpu-credits" not in big  # not burstable
    assert big["freeable-memory"]["Threshold"] == round(0.1 * 64 * GIB)
    assert big["connections"]["Threshold"] == 800
    assert big["disk-queue"]["Threshold"] == 240.0
    assert big["free-storage"]["Threshold"] == 40 * GIB
    assert ra.default_max_connections(1024) == 5000  # RDS caps the default at 5000
    for spec in specs.values():
        assert spec["AlarmActions"] == spec["OKActions"] == ["arn:topic"]
        assert spec["AlarmDescription"].startswith(ra.MARKER)


def test_storage_ceiling_alarm_follows_allocated_storage_and_ceiling():
    assert "free-storage-ceiling" not in by_name(ra.alarm_specs("db", "db.t4g.medium", 50, "t"))  # no autoscaling
    assert "free-storage-ceiling" not in by_name(ra.alarm_specs("db", "db.t4g.medium", 50, "t", max_allocated_gib=50))
    far = by_name(ra.alarm_specs("db", "db.t4g.medium", 40, "t", max_allocated_gib=100))
    assert far["free-storage-ceiling"]["Threshold"] == 0.0  # a full 40 GiB disk still leaves 60 GiB to the ceiling
    assert "out of reach until the allocated storage (40 GiB) passes 90 GiB" in far["free-storage-ceiling"]["AlarmDescription"]
    assert far["free-storage"]["Threshold"] == 4 * GIB
    near = by_name(ra.alarm_specs("db", "db.t4g.medium", 95, "t", max_allocated_gib=100))
    assert near["free-storage-ceiling"]["Threshold"] == 5 * GIB  # 95 - 5 = 90 GiB used: 10 GiB (10%) left to the ceiling
    assert near["free-storage"]["Threshold"] == round(9.5 * GIB)
    top = by_name(ra.alarm_specs("db", "db.t4g.medium", 1000, "t", max_allocated_gib=1000.5,
                                 thresholds={"free_storage_ceiling_share": 0.2}))
    assert top["free-storage-ceiling"]["Threshold"] == round((1000 - 0.8 * 1000.5) * GIB)
    # the headroom to the ceiling is exactly the share at the threshold
    for allocated, ceiling, share in ((95, 100, 0.1), (310, 320, 0.05), (180, 200, 0.15)):
        free = ra.ceiling_threshold_gib(allocated, ceiling, share)
        assert abs((ceiling - (allocated - free)) - share * ceiling) < 1e-9
    with pytest.raises(ra.ThresholdError, match="free_storage_ceiling_share must be a share"):
        ra.alarm_specs("db", "db.t4g.medium", 20, "t", max_allocated_gib=100, thresholds={"free_storage_ceiling_share": 10})


def test_class_memory_table():
    assert [ra.class_memory_gib(c) for c in ("db.t4g.micro", "db.t3.small", "db.m6g.large", "db.m7g.4xlarge",
                                             "db.r6i.xlarge")] == [1, 2, 8, 64, 32]
    with pytest.raises(ra.ThresholdError, match="monitoring_class_memory_gib"):
        ra.class_memory_gib("db.z1d.large")
    with pytest.raises(ra.ThresholdError, match="db.<family>.<size>"):
        ra.class_memory_gib("t4g.medium")
    assert by_name(ra.alarm_specs("db", "db.z1d.large", 20, "t", memory_gib=16))["freeable-memory"]["Threshold"] == round(1.6 * GIB)


def test_bad_thresholds_are_named():
    with pytest.raises(ra.ThresholdError, match="cpu_percnt"):
        ra.alarm_specs("db", "db.t4g.medium", 20, "t", thresholds={"cpu_percnt": 90})
    with pytest.raises(ra.ThresholdError, match="connections_share must be a share"):
        ra.alarm_specs("db", "db.t4g.medium", 20, "t", thresholds={"connections_share": 80})


def test_differences_ignore_order_and_number_types():
    spec = ra.alarm_specs("db", "db.t4g.medium", 20, "arn:topic")[0]
    current = dict(spec, Threshold=int(spec["Threshold"]), AlarmActions=list(reversed(spec["AlarmActions"])))
    assert ra.alarm_differences(current, spec) == []
    assert ra.alarm_differences(dict(current, Threshold=1.0, OKActions=[]), spec) == ["Threshold", "OKActions"]


PLAY = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/ndis.dbops.aws:
      region: "{{ lookup('env', 'AWS_REGION') }}"
      endpoint_url: "{{ lookup('env', 'AWS_ENDPOINT_URL') }}"
  vars:
    alarms_args:
      db_instance_identifier: "{{ ident }}"
      instance_class: db.t4g.medium
      allocated_storage: 20
      topic_name: "{{ ident }}-alarms"
      subscriptions: [{protocol: email, endpoint: oncall@example.com}, {protocol: sqs, endpoint: "arn:aws:sqs:us-east-1:123456789012:q"}]
    obs_args:
      db_instance_identifier: "{{ ident }}"
      monitoring_interval: 60
      monitoring_role_name: "{{ ident }}-mon"
      log_exports: [postgresql, upgrade]
      log_retention_days: 14
  tasks:
    - {ndis.dbops.rds_alarms: "{{ alarms_args }}", check_mode: true, register: a1, when: steps != 'fix'}
    - {ndis.dbops.rds_observability: "{{ obs_args }}", check_mode: true, register: o1, when: steps != 'fix'}
    - {ndis.dbops.rds_alarms: "{{ alarms_args }}", register: a2, when: "steps in ['all', 'fix']"}
    - {ndis.dbops.rds_observability: "{{ obs_args }}", register: o2, when: "steps in ['all', 'fix']"}
    - {ndis.dbops.rds_alarms: "{{ alarms_args }}", check_mode: true, register: a3, when: "steps in ['all', 'fix']"}
    - {ndis.dbops.rds_observability: "{{ obs_args }}", check_mode: true, register: o3, when: "steps in ['all', 'fix']"}
    - {ndis.dbops.rds_alarms: "{{ alarms_args }}", register: a4, when: steps == 'all'}
    - {ndis.dbops.rds_observability: "{{ obs_args }}", register: o4, when: steps == 'all'}
    - ansible.builtin.copy:
        content: "{{ {'a1': a1, 'a2': a2, 'a3': a3, 'a4': a4, 'o1': o1, 'o2': o2, 'o3': o3, 'o4': o4} | to_json }}"
        dest: "{{ out }}"
      changed_when: false
"""


def run_play(local_stack, tmp_path, ident, steps):
    playbook = tmp_path / "alarms.yml"
    playbook.write_text(PLAY)
    out = tmp_path / f"out-{steps}.json"
    proc = run_playbook(playbook, "-e", f"out={out}", "-e", f"ident={ident}", "-e", f"steps={steps}",
                        stack=local_stack, localhost=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return json.loads(out.read_text())


def test_alarms_topic_subscriptions_and_observability_converge(local_stack, boto3_client, tmp_path):
    ident = f"alarm-{uuid.uuid4().hex[:6]}"
    rds, cw, sns, iam, logs = (boto3_client(s) for s in ("rds", "cloudwatch", "sns", "iam", "logs"))
    rds.create_db_instance(DBInstanceIdentifier=ident, DBInstanceClass="db.t4g.medium", Engine="postgres",
                           EngineVersion="16.8", AllocatedStorage=40, MasterUsername="admin", MasterUserPassword="x" * 20)
    r = run_play(local_stack, tmp_path, ident, "all")
    # check mode on nothing: reports, creates nothing
    assert r["a1"]["changed"] and any("create SNS topic" in c for c in r["a1"]["changes"])
    assert r["o1"]["changed"] and r["o1"]["monitoring_role_arn"].endswith(f":role/{ident}-mon")
    assert r["a2"]["changes"] == r["a1"]["changes"] and r["o2"]["changes"] == r["o1"]["changes"]
    # repeat, in check mode and for real: nothing
    for key in ("a3", "a4", "o3", "o4"):
        assert not r[key]["changed"] and r[key]["changes"] == [], (key, r[key]["changes"])
    assert r["o4"]["monitoring_role_arn"] == r["o2"]["monitoring_role_arn"]
    # what exists: derived thresholds from the running instance (40 GiB, not the declared 20)
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix=ident + "-")["MetricAlarms"]}
    assert sorted(alarms) == sorted(r["a2"]["alarm_names"]) and len(alarms) == 8
    assert alarms[f"{ident}-free-storage"]["Threshold"] == 4 * GIB
    topic = r["a2"]["topic_arn"]
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["KmsMasterKeyId"] == "alias/aws/sns"
    subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert sorted(s["Protocol"] for s in subs) == ["email", "sqs"]
    event = rds.describe_event_subscriptions(SubscriptionName=f"{ident}-events")["EventSubscriptionsList"][0]
    assert event["SourceIdsList"] == [ident] and "failover" in event["EventCategoriesList"]
    role = f"{ident}-mon"
    assert [p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]] == [
        "AmazonRDSEnhancedMonitoringRole"]
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/rds/instance/{ident}/")["logGroups"]
    assert {g["logGroupName"].rsplit("/", 1)[1]: g["retentionInDays"] for g in groups} == {"postgresql": 14, "upgrade": 14}

    # drift by hand: a threshold, a removed subscription, a stale owned alarm, a log retention
    cpu = {k: v for k, v in alarms[f"{ident}-cpu"].items() if k in ra.COMPARED}
    cw.put_metric_alarm(**dict(cpu, AlarmName=f"{ident}-cpu", Threshold=99.0))
    sns.unsubscribe(SubscriptionArn=next(s["SubscriptionArn"] for s in subs if s["Protocol"] == "sqs"))
    cw.put_metric_alarm(**dict(cpu, AlarmName=f"{ident}-old"))
    logs.put_retention_policy(logGroupName=f"/aws/rds/instance/{ident}/upgrade", retentionInDays=3)
    checked = run_play(local_stack, tmp_path, ident, "check")
    assert sorted(checked["a1"]["changes"]) == sorted([
        f"update alarm {ident}-cpu (Threshold)",
        f"subscribe sqs arn:aws:sqs:us-east-1:123456789012:q to {ident}-alarms",
        f"delete alarm {ident}-old (no longer declared)",
    ]), checked["a1"]["changes"]
    assert checked["o1"]["changes"] == [f"set retention of log group /aws/rds/instance/{ident}/upgrade: 3 -> 14 days"]
    assert cw.describe_alarms(AlarmNames=[f"{ident}-cpu"])["MetricAlarms"][0]["Threshold"] == 99.0  # check mode wrote nothing
    fixed = run_play(local_stack, tmp_path, ident, "fix")
    assert fixed["a2"]["changes"] == checked["a1"]["changes"] and not fixed["a3"]["changed"]
    assert fixed["o2"]["changes"] == checked["o1"]["changes"] and not fixed["o3"]["changed"]
    assert cw.describe_alarms(AlarmNames=[f"{ident}-cpu"])["MetricAlarms"][0]["Threshold"] == 80.0
    assert cw.describe_alarms(AlarmNames=[f"{ident}-old"])["MetricAlarms"] == []


def test_storage_ceiling_alarm_moves_when_autoscaling_grows_the_storage(local_stack, boto3_client, tmp_path):
    """With a ceiling the running instance reports, the ceiling alarm is created from the
    described storage; after the storage grew, check mode reports both storage thresholds
    and the next run moves them, then nothing changes."""
    ident = f"alarmcap-{uuid.uuid4().hex[:6]}"
    rds, cw = boto3_client("rds"), boto3_client("cloudwatch")
    rds.create_db_instance(DBInstanceIdentifier=ident, DBInstanceClass="db.t4g.medium", Engine="postgres",
                           EngineVersion="16.8", AllocatedStorage=40, MaxAllocatedStorage=100, StorageType="gp3", MasterUsername="admin",
                           MasterUserPassword="x" * 20)

    def thresholds():
        found = cw.describe_alarms(AlarmNames=[f"{ident}-free-storage", f"{ident}-free-storage-ceiling"])["MetricAlarms"]
        return {a["AlarmName"][len(ident) + 1:]: a["Threshold"] for a in found}

    r = run_play(local_stack, tmp_path, ident, "all")
    assert f"{ident}-free-storage-ceiling" in r["a2"]["alarm_names"] and len(r["a2"]["alarm_names"]) == 9
    for key in ("a3", "a4"):
        assert not r[key]["changed"], (key, r[key]["changes"])
    assert thresholds() == {"free-storage": 4.0 * GIB, "free-storage-ceiling": 0.0}
    rds.modify_db_instance(DBInstanceIdentifier=ident, AllocatedStorage=95, ApplyImmediately=True)
    assert rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["AllocatedStorage"] == 95
    checked = run_play(local_stack, tmp_path, ident, "check")
    assert sorted(checked["a1"]["changes"]) == [
        f"update alarm {ident}-free-storage (AlarmDescription, Threshold)",
        f"update alarm {ident}-free-storage-ceiling (AlarmDescription, Threshold)",
    ], checked["a1"]["changes"]
    assert thresholds()["free-storage-ceiling"] == 0.0  # check mode wrote nothing
    fixed = run_play(local_stack, tmp_path, ident, "fix")
    assert fixed["a2"]["changes"] == checked["a1"]["changes"] and not fixed["a3"]["changed"], fixed["a3"]["changes"]
    assert thresholds() == {"free-storage": round(9.5 * GIB), "free-storage-ceiling": 5.0 * GIB}
    assert any(line.startswith(f"{ident}-free-storage-ceiling: FreeStorageSpace minimum < 5 GiB")
               for line in fixed["a2"]["alarms"]), fixed["a2"]["alarms"]


def test_tag_and_arn_helpers():
    from ansible_collections.ndis.dbops.plugins.module_utils import aws_tags

    assert aws_tags.tag_list({"b": 2, "a": "x"}) == [{"Key": "a", "Value": "x"}, {"Key": "b", "Value": "2"}]
    assert aws_tags.tag_map({"n": 1}) == {"n": "1"} and aws_tags.tag_list(None) == []
    assert aws_tags.build_arn("aws-cn", "iam", "", "123", "role/r") == "arn:aws-cn:iam::123:role/r"
