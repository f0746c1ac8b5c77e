"""One test per compatibility patch in dbops.moto_server, via boto3 over HTTP
against the running (patched) moto server of the session stack."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_patch1_gp3_reports_baseline_iops_and_throughput(boto3_client):
    rds = boto3_client("rds")
    name = uid("gp3")
    created = rds.create_db_instance(
        DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.4",
        DBInstanceClass="db.t4g.medium", AllocatedStorage=20, StorageType="gp3",
        MasterUsername="admin", MasterUserPassword="not-a-real-secret-1",
    )["DBInstance"]
    assert (created["Iops"], created["StorageThroughput"]) == (3000, 125)
    described = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    assert described["StorageType"] == "gp3"
    assert (described["Iops"], described["StorageThroughput"]) == (3000, 125)
    # explicit values win; other storage types stay without them
    explicit = rds.create_db_instance(
        DBInstanceIdentifier=uid("gp3x"), Engine="postgres", EngineVersion="16.4",
        DBInstanceClass="db.t4g.medium", AllocatedStorage=500, StorageType="gp3", Iops=12000,
        StorageThroughput=500, MasterUsername="admin", MasterUserPassword="not-a-real-secret-1",
    )["DBInstance"]
    assert (explicit["Iops"], explicit["StorageThroughput"]) == (12000, 500)
    gp2 = rds.create_db_instance(
        DBInstanceIdentifier=uid("gp2"), Engine="postgres", EngineVersion="16.4",
        DBInstanceClass="db.t4g.medium", AllocatedStorage=20, StorageType="gp2",
        MasterUsername="admin", MasterUserPassword="not-a-real-secret-1",
    )["DBInstance"]
    assert "Iops" not in gp2 and "StorageThroughput" not in gp2


def test_patch2_describe_missing_parameter_group_is_not_found(boto3_client):
    rds = boto3_client("rds")
    with pytest.raises(ClientError) as exc:
        rds.describe_db_parameter_groups(DBParameterGroupName=uid("missing"))
    assert exc.value.response["Error"]["Code"] == "DBParameterGroupNotFound"
    name = uid("exists")
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres16", Description="t")
    groups = rds.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"]
    assert [g["DBParameterGroupName"] for g in groups] == [name]


def test_patch3_postgres16_parameters_have_metadata(boto3_client):
    rds = boto3_client("rds")
    name = uid("pg16")
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres16", Description="t")
    rds.modify_db_parameter_group(DBParameterGroupName=name, Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "immediate"},
        {"ParameterName": "log_min_duration_statement", "ParameterValue": "500", "ApplyMethod": "immediate"},
    ])
    params = rds.get_paginator("describe_db_parameters").paginate(
        DBParameterGroupName=name).build_full_result()["Parameters"]
    by_name = {p["ParameterName"]: p for p in params}
    expected = {
        "rds.force_ssl": ("boolean", "dynamic"),
        "log_min_duration_statement": ("integer", "dynamic"),
        "maintenance_work_mem": ("integer", "dynamic"),
        "shared_preload_libraries": ("list", "static"),
        "statement_timeout": ("integer", "dynamic"),
    }
    for pname, (dtype, apply_type) in expected.items():
        p = by_name[pname]
        assert (p["DataType"], p["ApplyType"], p["IsModifiable"]) == (dtype, apply_type, True), p
        assert p["AllowedValues"]
    assert by_name["rds.force_ssl"]["ParameterValue"] == "0"
    assert by_name["rds.force_ssl"]["Source"] == "user"
    assert by_name["log_min_duration_statement"]["ParameterValue"] == "500"
    assert by_name["statement_timeout"]["Source"] == "engine-default"
    assert "ParameterValue" not in by_name["statement_timeout"]
    user_only = rds.describe_db_parameters(DBParameterGroupName=name, Source="user")["Parameters"]
    assert {p["ParameterName"] for p in user_only} == {"rds.force_ssl", "log_min_duration_statement"}
    with pytest.raises(ClientError) as exc:
        rds.describe_db_parameters(DBParameterGroupName=uid("missing"))
    assert exc.value.response["Error"]["Code"] == "DBParameterGroupNotFound"


def test_patch4a_describe_missing_backup_vault_is_access_denied(boto3_client):
    backup = boto3_client("backup")
    with pytest.raises(ClientError) as exc:
        backup.describe_backup_vault(BackupVaultName=uid("missing"))
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    name = uid("vault")
    backup.create_backup_vault(BackupVaultName=name)
    assert backup.describe_backup_vault(BackupVaultName=name)["BackupVaultName"] == name


def test_patch4b_backup_selections(boto3_client):
    backup = boto3_client("backup")
    plan_id = backup.create_backup_plan(BackupPlan={
        "BackupPlanName": uid("plan"),
        "Rules": [{"RuleName": "daily", "TargetBackupVaultName": "v", "ScheduleExpression": "cron(0 16 * * ? *)"}],
    })["BackupPlanId"]
    assert backup.list_backup_selections(BackupPlanId=plan_id)["BackupSelectionsList"] == []
    selection = {
        "SelectionName": "rds",
        "IamRoleArn": "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole",
        "Resources": ["arn:aws:rds:ap-southeast-2:123456789012:db:ndis-db"],
    }
    sel_id = backup.create_backup_selection(BackupPlanId=plan_id, BackupSelection=selection)["SelectionId"]
    listed = backup.list_backup_selections(BackupPlanId=plan_id)["BackupSelectionsList"]
    assert [(s["SelectionId"], s["SelectionName"], s["IamRoleArn"]) for s in listed] == [
        (sel_id, "rds", selection["IamRoleArn"])]
    got = backup.get_backup_selection(BackupPlanId=plan_id, SelectionId=sel_id)
    assert got["BackupPlanId"] == plan_id
    assert got["BackupSelection"]["Resources"] == selection["Resources"]
    assert got["BackupSelection"]["Conditions"] == {
        "StringEquals": [], "StringLike": [], "StringNotEquals": [], "StringNotLike": []}
    backup.delete_backup_selection(BackupPlanId=plan_id, SelectionId=sel_id)
    assert backup.list_backup_selections(BackupPlanId=plan_id)["BackupSelectionsList"] == []
    with pytest.raises(ClientError) as exc:
        backup.list_backup_selections(BackupPlanId="no-such-plan")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_patch6_performance_insights_is_reported(boto3_client):
    rds = boto3_client("rds")
    name = uid("pi")
    created = rds.create_db_instance(
        DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.4", DBInstanceClass="db.t4g.medium",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="not-a-real-secret-1",
        EnablePerformanceInsights=True,
    )["DBInstance"]
    # AWS defaults: 7 days, the aws/rds key
    assert created["PerformanceInsightsEnabled"] is True
    assert created["PerformanceInsightsRetentionPeriod"] == 7
    assert created["PerformanceInsightsKMSKeyId"].startswith("arn:aws:kms:")
    rds.modify_db_instance(DBInstanceIdentifier=name, PerformanceInsightsRetentionPeriod=31, ApplyImmediately=True)
    described = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    assert (described["PerformanceInsightsEnabled"], described["PerformanceInsightsRetentionPeriod"]) == (True, 31)
    rds.modify_db_instance(DBInstanceIdentifier=name, EnablePerformanceInsights=False, ApplyImmediately=True)
    described = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    assert described["PerformanceInsightsEnabled"] is False
    assert "PerformanceInsightsRetentionPeriod" not in described and "PerformanceInsightsKMSKeyId" not in described
    # other modifications still apply next to it
    rds.modify_db_instance(DBInstanceIdentifier=name, EnablePerformanceInsights=True, DeletionProtection=True,
                           ApplyImmediately=True)
    described = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    assert (described["PerformanceInsightsEnabled"], described["DeletionProtection"]) == (True, True)


def test_patch7_rds_monitoring_managed_policy_attaches(boto3_client):
    iam = boto3_client("iam")
    arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    assert policy["PolicyName"] == "AmazonRDSEnhancedMonitoringRole"
    role = uid("mon")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')
    iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [arn]
    with pytest.raises(ClientError) as exc:
        iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/NoSuchPolicyAnywhere")
    assert exc.value.response["Error"]["Code"] == "NoSuchEntity"


def test_patch3_observability_parameters_have_metadata(boto3_client):
    rds = boto3_client("rds")
    name = uid("pg16obs")
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres16", Description="t")
    params = rds.get_paginator("describe_db_parameters").paginate(
        DBParameterGroupName=name).build_full_result()["Parameters"]
    by_name = {p["ParameterName"]: p for p in params}
    for pname, dtype in (("log_lock_waits", "boolean"), ("log_autovacuum_min_duration", "integer"),
                         ("log_temp_files", "integer"), ("track_io_timing", "boolean")):
        assert (by_name[pname]["DataType"], by_name[pname]["ApplyType"]) == (dtype, "dynamic")
    assert by_name["shared_preload_libraries"]["ApplyType"] == "static"


def test_patch8_pending_maintenance_actions_answer(boto3_client):
    rds = boto3_client("rds")
    name = uid("maint")
    arn = rds.create_db_instance(
        DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.4", DBInstanceClass="db.t4g.medium",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="not-a-real-secret-1",
    )["DBInstance"]["DBInstanceArn"]
    assert rds.describe_pending_maintenance_actions(ResourceIdentifier=arn)["PendingMaintenanceActions"] == []
    assert rds.describe_pending_maintenance_actions()["PendingMaintenanceActions"] == []
    with pytest.raises(ClientError) as exc:
        rds.describe_pending_maintenance_actions(ResourceIdentifier=arn + "-gone")
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"
