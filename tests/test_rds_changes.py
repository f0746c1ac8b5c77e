"""The RDS change classification rules, from the RDS User Guide's facts.

moto applies every modification at once and reports no pending values, so the rules
are tested on describe_db_instances-shaped dicts; test_rds_change_plan_module at the end
runs the module against moto for the parts moto can show.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import rds_changes as rc
from playbook_runner import run_playbook

INSTANCE = {
    "DBInstanceIdentifier": "db",
    "DBInstanceClass": "db.t4g.medium",
    "EngineVersion": "16.8",
    "AllocatedStorage": 20,
    "MaxAllocatedStorage": 100,
    "StorageType": "gp3",
    "MultiAZ": False,
    "BackupRetentionPeriod": 7,
    "PreferredBackupWindow": "15:30-16:00",
    "PreferredMaintenanceWindow": "sun:17:00-sun:17:30",
    "CopyTagsToSnapshot": True,
    "DeletionProtection": True,
    "PubliclyAccessible": False,
    "StorageEncrypted": True,
    "KmsKeyId": "arn:aws:kms:ap-southeast-2:123456789012:key/abcd",
    "Endpoint": {"Address": "db.example", "Port": 5432},
    "DBSubnetGroup": {"DBSubnetGroupName": "db"},
    "DBParameterGroups": [{"DBParameterGroupName": "db-postgres16", "ParameterApplyStatus": "in-sync"}],
    "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-2"}, {"VpcSecurityGroupId": "sg-1"}],
}


def one(desired, apply_immediately=False, instance=INSTANCE):
    changes = rc.classify_instance(instance, desired, apply_immediately)
    assert len(changes) == 1, changes
    return changes[0]


def test_no_difference_no_change():
    desired = {"db_instance_class": "db.t4g.medium", "engine_version": "16.8", "allocated_storage": "20",
               "multi_az": False, "backup_retention_period": 7, "preferred_backup_window": "15:30-16:00",
               "preferred_maintenance_window": "Sun:17:00-Sun:17:30", "vpc_security_group_ids": ["sg-1", "sg-2"],
               "port": 5432, "db_subnet_group_name": "db", "db_parameter_group_name": "db-postgres16",
               "kms_key_id": "key/abcd", "storage_encrypted": True, "publicly_accessible": False}
    assert rc.classify_instance(INSTANCE, desired, False) == []


@pytest.mark.parametrize("apply_immediately,when,applies", [
    (False, rc.OUTAGE, "next maintenance window"),
    (True, rc.OUTAGE, "now"),
])
def test_instance_class_change_is_an_outage(apply_immediately, when, applies):
    c = one({"db_instance_class": "db.t4g.large"}, apply_immediately)
    assert (c["when"], c["applies"]) == (when, applies)


def test_minor_version_upgrade_restarts_and_major_says_so():
    assert one({"engine_version": "16.9"})["when"] == rc.OUTAGE
    major = one({"engine_version": "17.2"})
    assert major["when"] == rc.OUTAGE and "major version upgrade" in major["note"]


@pytest.mark.parametrize("setting,value", [
    ("allocated_storage", 50), ("storage_type", "io2"), ("multi_az", True),
])
def test_online_changes_follow_apply_immediately(setting, value):
    assert one({setting: value}, False)["when"] == rc.NEXT_WINDOW
    assert one({setting: value}, True)["when"] == rc.IMMEDIATE


@pytest.mark.parametrize("setting,value", [
    ("preferred_backup_window", "16:00-16:30"), ("preferred_maintenance_window", "mon:17:00-mon:17:30"),
    ("deletion_protection", False), ("copy_tags_to_snapshot", False), ("max_allocated_storage", 200),
    ("vpc_security_group_ids", ["sg-3"]),
])
def test_asynchronous_changes_apply_now_whatever_apply_immediately_says(setting, value):
    c = one({setting: value}, False)
    assert (c["when"], c["applies"]) == (rc.IMMEDIATE, "now")


@pytest.mark.parametrize("setting,value", [
    ("monitoring_interval", 60), ("monitoring_role_arn", "arn:aws:iam::123456789012:role/mon"),
    ("enable_performance_insights", True), ("performance_insights_retention_period", 31),
    ("enable_cloudwatch_logs_exports", ["upgrade", "postgresql"]),
])
@pytest.mark.parametrize("apply_immediately", [False, True])
def test_observability_applies_now_without_downtime(setting, value, apply_immediately):
    c = one({setting: value}, apply_immediately)
    assert (c["when"], c["applies"]) == (rc.IMMEDIATE, "now")


def test_observability_matches_when_equal_and_log_exports_compare_as_sets():
    instance = dict(INSTANCE, MonitoringInterval=60, PerformanceInsightsEnabled=True,
                    PerformanceInsightsRetentionPeriod=7, EnabledCloudwatchLogsExports=["upgrade", "postgresql"],
                    PerformanceInsightsKMSKeyId="arn:aws:kms:ap-southeast-2:123456789012:key/pi")
    desired = {"monitoring_interval": "60", "enable_performance_insights": True,
               "performance_insights_retention_period": "7", "enable_cloudwatch_logs_exports": ["postgresql", "upgrade"],
               "performance_insights_kms_key_id": "pi"}
    assert rc.classify_instance(instance, desired) == []


def test_performance_insights_key_is_set_once():
    first = one({"performance_insights_kms_key_id": "arn:aws:kms:ap-southeast-2:123456789012:key/pi"})
    assert first["when"] == rc.IMMEDIATE
    instance = dict(INSTANCE, PerformanceInsightsKMSKeyId="arn:aws:kms:ap-southeast-2:123456789012:key/pi")
    other = one({"performance_insights_kms_key_id": "arn:aws:kms:ap-southeast-2:123456789012:key/other"},
                instance=instance)
    assert other["when"] == rc.REPLACE


def test_backup_retention_between_non_zero_values_is_immediate():
    c = one({"backup_retention_period": 14})
    assert (c["when"], c["applies"]) == (rc.IMMEDIATE, "now")


@pytest.mark.parametrize("current,desired", [(7, 0), (0, 7)])
def test_backup_retention_to_or_from_zero_is_an_outage(current, desired):
    instance = dict(INSTANCE, BackupRetentionPeriod=current)
    c = one({"backup_retention_period": desired}, instance=instance)
    assert c["when"] == rc.OUTAGE and "automated backups" in c["note"]


def test_new_parameter_group_needs_a_reboot():
    c = one({"db_parameter_group_name": "other"})
    assert (c["when"], c["applies"]) == (rc.NEEDS_REBOOT, "at the next reboot")


def test_port_change_restarts():
    assert one({"port": 5433})["when"] == rc.OUTAGE


@pytest.mark.parametrize("setting,value", [
    ("storage_encrypted", False), ("kms_key_id", "arn:aws:kms:ap-southeast-2:123456789012:key/other"),
])
def test_encryption_cannot_change_in_place(setting, value):
    c = one({setting: value})
    assert (c["when"], c["applies"]) == (rc.REPLACE, "never in place")


def test_unknown_and_null_settings_are_not_compared():
    assert rc.classify_instance(INSTANCE, {"tags": {"a": "b"}, "db_instance_class": None}, False) == []


PARAMS = [
    {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyType": "dynamic", "DataType": "boolean"},
    {"ParameterName": "shared_preload_libraries", "ParameterValue": "pg_stat_statements",
     "ApplyType": "static", "DataType": "list"},
    {"ParameterName": "log_min_duration_statement", "ApplyType": "dynamic", "DataType": "integer"},
]


def test_dynamic_parameter_applies_now_static_needs_reboot():
    changes = {c["setting"]: c for c in rc.classify_parameters(
        PARAMS, {"rds.force_ssl": 1, "shared_preload_libraries": "pg_stat_statements,pg_cron",
                 "log_min_duration_statement": 500})}
    assert changes["parameter rds.force_ssl"]["when"] == rc.IMMEDIATE
    assert changes["parameter shared_preload_libraries"]["when"] == rc.NEEDS_REBOOT
    assert changes["parameter log_min_duration_statement"]["current"] is None  # engine default
    assert changes["parameter log_min_duration_statement"]["desired"] == "500"


def test_boolean_parameters_compare_as_rds_stores_them():
    params = [dict(PARAMS[0], ParameterValue="1")]
    assert rc.classify_parameters(params, {"rds.force_ssl": True}) == []
    assert rc.classify_parameters(params, {"rds.force_ssl": "on"}) == []
    assert rc.classify_parameters(params, {"rds.force_ssl": 1}) == []


def test_unknown_parameter_is_reported():
    (c,) = rc.classify_parameters(PARAMS, {"no_such_param": 1})
    assert c["when"] == "unknown"


def test_pending_reboot_and_table():
    instance = dict(INSTANCE, DBParameterGroups=[{"DBParameterGroupName": "x", "ParameterApplyStatus": "pending-reboot"}])
    assert rc.pending_reboot(instance) and not rc.pending_reboot(INSTANCE)
    lines = rc.table(rc.classify_instance(INSTANCE, {"db_instance_class": "db.r6g.large", "multi_az": True}, False))
    assert lines[0].split() == ["setting", "current", "declared", "when", "applies", "note"]
    assert lines[1].startswith("db_instance_class  db.t4g.medium  db.r6g.large  outage")
    assert rc.table([]) == []


def test_rds_change_plan_module_against_moto(local_stack, boto3_client, tmp_path):
    rds = boto3_client("rds")
    rds.create_db_parameter_group(DBParameterGroupName="plan-pg", DBParameterGroupFamily="postgres16",
                                  Description="plan test")
    rds.modify_db_parameter_group(DBParameterGroupName="plan-pg", Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "immediate"}])
    rds.create_db_instance(DBInstanceIdentifier="plan-db", DBInstanceClass="db.t4g.medium", Engine="postgres",
                           EngineVersion="16.8", AllocatedStorage=20, MasterUsername="admin",
                           MasterUserPassword="x" * 20, BackupRetentionPeriod=7, DBParameterGroupName="plan-pg")
    playbook = tmp_path / "plan.yml"
    playbook.write_text("""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/ndis.dbops.aws:
      region: "{{ lookup('env', 'AWS_REGION') }}"
      endpoint_url: "{{ lookup('env', 'AWS_ENDPOINT_URL') }}"
  tasks:
    - ndis.dbops.rds_change_plan:
        db_instance_identifier: plan-db
        desired: {db_instance_class: db.t4g.large, backup_retention_period: 0, preferred_backup_window: "16:00-16:30"}
        parameter_group_name: plan-pg
        parameters: {rds.force_ssl: 1}
      register: plan
    - ndis.dbops.rds_change_plan:
        db_instance_identifier: missing-db
      register: missing
    - ansible.builtin.copy:
        content: "{{ {'plan': plan, 'missing': missing} | to_json }}"
        dest: "{{ out }}"
      changed_when: false
""")
    out = tmp_path / "out.json"
    proc = run_playbook(playbook, "-e", f"out={out}", stack=local_stack, localhost=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    result = json.loads(out.read_text())
    plan = {c["setting"]: c for c in result["plan"]["changes"]}
    assert plan["db_instance_class"]["when"] == "outage"
    assert plan["backup_retention_period"]["when"] == "outage"
    assert plan["preferred_backup_window"]["when"] == "immediate"
    assert plan["parameter rds.force_ssl"]["when"] == "immediate"
    assert result["plan"]["changed"] is False and result["plan"]["exists"] is True
    assert result["missing"]["exists"] is False and result["missing"]["changes"] == []


# --- connection settings: the CA, IAM authentication, who keeps the master password --------
ACCESS = dict(INSTANCE, CACertificateIdentifier="rds-ca-rsa2048-g1", IAMDatabaseAuthenticationEnabled=False)


def access_one(desired, apply_immediately=False, rotation=None, instance=ACCESS):
    changes = rc.classify_access(instance, desired, apply_immediately, rotation)
    assert len(changes) == 1, changes
    return changes[0]


def test_same_ca_iam_and_mode_no_change():
    assert rc.classify_access(ACCESS, dict(ca_certificate_identifier="rds-ca-rsa2048-g1",
                                           enable_iam_database_authentication=False,
                                           master_password_mode="ssm")) == []
    assert rc.classify_access(ACCESS, dict(master_password_mode="auto")) == []


@pytest.mark.parametrize("rotation,apply_immediately,when,applies", [
    (True, True, "immediate", "now"),
    (True, False, "next-window", "next maintenance window"),
    (False, True, "outage", "now"),
    (False, False, "outage", "next maintenance window"),
    (None, False, "outage", "next maintenance window"),
])
def test_ca_change_restarts_unless_the_engine_rotates_without_one(rotation, apply_immediately, when, applies):
    c = access_one(dict(ca_certificate_identifier="rds-ca-ecc384-g1"), apply_immediately, rotation)
    assert (c["setting"], c["current"], c["desired"]) == ("ca_certificate_identifier", "rds-ca-rsa2048-g1", "rds-ca-ecc384-g1")
    assert (c["when"], c["applies"]) == (when, applies)
    assert ("restarts" in c["note"] or "restart is assumed" in c["note"]) == (rotation is not True)
    assert "apps must trust the new CA first" in c["note"]


def test_iam_authentication_follows_apply_immediately_without_restart():
    c = access_one(dict(enable_iam_database_authentication=True))
    assert (c["when"], c["applies"], c["note"]) == ("next-window", "next maintenance window", "no interruption")
    assert access_one(dict(enable_iam_database_authentication=True), True)["when"] == "immediate"


@pytest.mark.parametrize("instance,desired,current", [
    (ACCESS, "managed", "ssm"),
    (dict(ACCESS, MasterUserSecret={"SecretArn": "arn:aws:secretsmanager:x:1:secret:rds!db-1"}), "ssm", "managed"),
])
def test_switching_who_keeps_the_master_password_is_immediate_whatever_apply_immediately_says(instance, desired, current):
    c = access_one(dict(master_password_mode=desired), False, instance=instance)
    assert (c["current"], c["desired"], c["when"], c["applies"]) == (current, desired, "immediate", "now")
    assert "open sessions stay" in c["note"]
    assert rc.master_password_mode(instance) == current
