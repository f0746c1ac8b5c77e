"""One test per compatibility patch in dbops.moto_server, via boto3 over HTTP
against the running (patched) moto server of the session stack; and one per patch of its
IAM enforcement (dbops.moto_iam, patches I1-I4) against a moto server of their own."""

from __future__ import annotations

import time
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


def test_patch6_postgres_engine_versions(boto3_client):
    rds = boto3_client("rds")
    offered = rds.describe_db_engine_versions(Engine="postgres")["DBEngineVersions"]
    assert [v["EngineVersion"] for v in offered if v["MajorEngineVersion"] == "16"] == ["16.9", "16.10", "16.11", "16.14"]
    assert {v["DBParameterGroupFamily"] for v in offered if v["MajorEngineVersion"] == "16"} == {"postgres16"}
    every = rds.describe_db_engine_versions(Engine="postgres", IncludeAll=True)["DBEngineVersions"]
    assert {v["EngineVersion"]: v["Status"] for v in every}["16.8"] == "deprecated"  # only with IncludeAll
    default = rds.describe_db_engine_versions(Engine="postgres", EngineVersion="16", DefaultOnly=True)["DBEngineVersions"]
    assert [v["EngineVersion"] for v in default] == ["16.11"]
    by_family = rds.describe_db_engine_versions(Engine="postgres", DBParameterGroupFamily="postgres16",
                                                DefaultOnly=True)["DBEngineVersions"]
    assert [v["EngineVersion"] for v in by_family] == ["16.11"]
    one = rds.describe_db_engine_versions(Engine="postgres", EngineVersion="16.9")["DBEngineVersions"]
    targets = {t["EngineVersion"]: t["IsMajorVersionUpgrade"] for t in one[0]["ValidUpgradeTarget"]}
    assert targets == {"16.10": False, "16.11": False, "16.14": False, "17.7": True}  # later minors and 17, never lower
    assert rds.describe_db_engine_versions(Engine="postgres", EngineVersion="16.99")["DBEngineVersions"] == []


def test_patch7_postgres_major_lifecycles(boto3_client):
    majors = boto3_client("rds").describe_db_major_engine_versions(Engine="postgres", MajorEngineVersion="16")
    lifecycles = {lc["LifecycleSupportName"]: lc for lc in majors["DBMajorEngineVersions"][0]["SupportedEngineLifecycles"]}
    assert lifecycles["open-source-rds-standard-support"]["LifecycleSupportEndDate"].date().isoformat() == "2029-02-28"
    assert lifecycles["open-source-rds-extended-support"]["LifecycleSupportEndDate"].date().isoformat() == "2032-02-29"


def test_patch8_postgres_orderable_options(boto3_client):
    rds = boto3_client("rds")
    options = rds.describe_orderable_db_instance_options(
        Engine="postgres", EngineVersion="16.11", DBInstanceClass="db.t4g.medium", Vpc=True)["OrderableDBInstanceOptions"]
    by_storage = {o["StorageType"]: o for o in options}
    assert set(by_storage) == {"gp2", "gp3", "io1", "io2"}
    gp3 = by_storage["gp3"]
    assert (gp3["MinStorageSize"], gp3["MaxStorageSize"], gp3["MultiAZCapable"]) == (20, 65536, True)
    assert (gp3["MinIopsPerDbInstance"], gp3["MaxIopsPerDbInstance"]) == (12000, 64000)
    assert by_storage["io1"]["MinStorageSize"] == 100 and by_storage["gp2"]["SupportsIops"] is False
    every = rds.get_paginator("describe_orderable_db_instance_options").paginate(
        Engine="postgres", EngineVersion="16.11").build_full_result()["OrderableDBInstanceOptions"]
    assert {"db.t4g.small", "db.t4g.medium", "db.t4g.large"} <= {o["DBInstanceClass"] for o in every}
    assert rds.describe_orderable_db_instance_options(Engine="postgres", EngineVersion="16.11",
                                                      DBInstanceClass="db.t4g.hyper")["OrderableDBInstanceOptions"] == []
    # a deprecated version is not orderable; other engines keep moto's own answer
    assert rds.describe_orderable_db_instance_options(Engine="postgres", EngineVersion="16.8")["OrderableDBInstanceOptions"] == []
    assert rds.describe_orderable_db_instance_options(Engine="aurora-postgresql")["OrderableDBInstanceOptions"]


def test_patch9_postgres16_engine_default_parameters(boto3_client):
    rds = boto3_client("rds")
    params = rds.get_paginator("describe_engine_default_parameters").paginate(
        DBParameterGroupFamily="postgres16").build_full_result()["EngineDefaults"]["Parameters"]
    by_name = {p["ParameterName"]: p for p in params}
    assert (by_name["rds.force_ssl"]["AllowedValues"], by_name["rds.force_ssl"]["DataType"]) == ("0,1", "boolean")
    assert by_name["max_connections"]["ApplyType"] == "static"
    assert by_name["rds.extensions"]["IsModifiable"] is False
    # the same metadata as a parameter group of the family (patch 3)
    name = uid("pg16d")
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres16", Description="t")
    group = {p["ParameterName"]: p for p in rds.describe_db_parameters(DBParameterGroupName=name)["Parameters"]}
    assert set(group) == set(by_name)
    # postgres17 has the same ones (a major upgrade plan carries the declared parameters over)
    p17 = rds.get_paginator("describe_engine_default_parameters").paginate(
        DBParameterGroupFamily="postgres17").build_full_result()["EngineDefaults"]["Parameters"]
    assert {p["ParameterName"] for p in p17} == set(by_name)
    unknown = rds.describe_engine_default_parameters(DBParameterGroupFamily="postgres99")["EngineDefaults"]
    assert unknown.get("Parameters", []) == []


def test_patch10_managed_master_secret_holds_the_servers_admin_password(boto3_client, local_stack):
    """The stack's moto runs in its state directory and reads admin_password there: the
    secret RDS names in MasterUserSecret logs in to the embedded server, as on AWS."""
    import json

    import psycopg2

    rds, sm = boto3_client("rds"), boto3_client("secretsmanager")
    name = uid("managed")
    master = local_stack["pg"]["user"]
    created = rds.create_db_instance(
        DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.8",
        DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername=master,
        ManageMasterUserPassword=True,
    )["DBInstance"]
    secret = json.loads(sm.get_secret_value(SecretId=created["MasterUserSecret"]["SecretArn"])["SecretString"])
    assert secret["username"] == master
    assert secret["password"] == local_stack["admin_password"], "the secret holds moto's placeholder, not the server's password"
    pg = local_stack["pg"]
    psycopg2.connect(host=pg["host"], port=pg["port"], user=secret["username"], password=secret["password"],
                     dbname="postgres", connect_timeout=5).close()
    # turning management on later (ModifyDBInstance) creates the same kind of secret
    other = uid("switch")
    rds.create_db_instance(DBInstanceIdentifier=other, Engine="postgres", EngineVersion="16.8",
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="dbmaster",
                           MasterUserPassword="not-a-real-secret-1")
    switched = rds.modify_db_instance(DBInstanceIdentifier=other, ManageMasterUserPassword=True,
                                      ApplyImmediately=True)["DBInstance"]
    secret = json.loads(sm.get_secret_value(SecretId=switched["MasterUserSecret"]["SecretArn"])["SecretString"])
    assert secret == {"username": "dbmaster", "password": local_stack["admin_password"]}
    for ident in (name, other):
        rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True)


def test_patch11_performance_insights_is_reported(boto3_client):
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


def test_patch12_rds_monitoring_managed_policy_attaches(boto3_client):
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
                         ("log_temp_files", "integer"), ("track_io_timing", "boolean"),
                         ("hot_standby_feedback", "boolean"), ("max_standby_streaming_delay", "integer")):
        assert (by_name[pname]["DataType"], by_name[pname]["ApplyType"]) == (dtype, "dynamic")
    assert by_name["shared_preload_libraries"]["ApplyType"] == "static"


def test_patch13_pending_maintenance_actions_answer(boto3_client):
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


def test_patch14_modify_db_subnet_group_keeps_the_group(boto3_client, local_stack):
    rds = boto3_client("rds")
    name = uid("subnets")
    subnets = local_stack["network"]["subnet_ids"]
    rds.create_db_subnet_group(DBSubnetGroupName=name, DBSubnetGroupDescription="first", SubnetIds=subnets)
    rds.modify_db_subnet_group(DBSubnetGroupName=name, DBSubnetGroupDescription="second", SubnetIds=subnets[:1])
    group = rds.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0]
    assert group["DBSubnetGroupDescription"] == "second"
    assert [s["SubnetIdentifier"] for s in group["Subnets"]] == subnets[:1]
    with pytest.raises(ClientError) as exc:
        rds.modify_db_subnet_group(DBSubnetGroupName=name + "-gone", DBSubnetGroupDescription="x", SubnetIds=subnets)
    assert exc.value.response["Error"]["Code"] == "DBSubnetGroupNotFoundFault"
    rds.delete_db_subnet_group(DBSubnetGroupName=name)


def test_patch15_engine_version_upgrade_goes_through_upgrading_or_waits_for_the_window(boto3_client):
    import time

    rds = boto3_client("rds")
    name = uid("upg")
    rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.9",
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20,
                           MasterUsername="dbadmin", MasterUserPassword="not-a-real-secret-1")
    # without ApplyImmediately: pending for the maintenance window, nothing moves
    rds.modify_db_instance(DBInstanceIdentifier=name, EngineVersion="16.10", ApplyImmediately=False)
    inst = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    assert (inst["EngineVersion"], inst["DBInstanceStatus"], inst["PendingModifiedValues"]) == (
        "16.9", "available", {"EngineVersion": "16.10"})
    # a new major needs AllowMajorVersionUpgrade, and then a parameter group of its family
    with pytest.raises(ClientError, match="AllowMajorVersionUpgrade"):
        rds.modify_db_instance(DBInstanceIdentifier=name, EngineVersion="17.7", ApplyImmediately=True)
    rds.create_db_parameter_group(DBParameterGroupName=name + "-pg16", DBParameterGroupFamily="postgres16",
                                  Description="x")
    with pytest.raises(ClientError, match="postgres17"):
        rds.modify_db_instance(DBInstanceIdentifier=name, EngineVersion="17.7", ApplyImmediately=True,
                               AllowMajorVersionUpgrade=True, DBParameterGroupName=name + "-pg16")
    # applied now: upgrading on the old version, then available on the new one (no local build of 16.10)
    rds.modify_db_instance(DBInstanceIdentifier=name, EngineVersion="16.10", ApplyImmediately=True)
    seen = []
    for _ in range(300):
        inst = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
        seen.append((inst["DBInstanceStatus"], inst["EngineVersion"]))
        if seen[-1] == ("available", "16.10"):
            break
        time.sleep(0.1)
    assert seen[0] == ("upgrading", "16.9") and seen[-1] == ("available", "16.10"), seen
    assert inst.get("PendingModifiedValues", {}) == {}


def test_patch18_blue_green_deployment_provisions_and_switches_over_in_time(boto3_client):
    import time

    from dbops import moto_server

    rds = boto3_client("rds")
    name = uid("bg")
    arn = rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.11",
                                 DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="dbadmin",
                                 MasterUserPassword="not-a-real-secret-1")["DBInstance"]["DBInstanceArn"]
    rds.create_db_parameter_group(DBParameterGroupName=name + "-pg17", DBParameterGroupFamily="postgres17",
                                  Description="x")
    created = rds.create_blue_green_deployment(BlueGreenDeploymentName=name + "-to-postgres17", Source=arn,
                                               TargetEngineVersion="17.7",
                                               TargetDBParameterGroupName=name + "-pg17")["BlueGreenDeployment"]
    ident = created["BlueGreenDeploymentIdentifier"]
    green = created["Target"].split(":db:")[-1]

    def watch(done):
        seen, started = [], time.monotonic()
        while time.monotonic() - started < 60:
            d = rds.describe_blue_green_deployments(BlueGreenDeploymentIdentifier=ident)["BlueGreenDeployments"][0]
            names = sorted(i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]
                           if i["DBInstanceIdentifier"].startswith(name))
            state = (d["Status"], tuple(t["Status"] for t in d["Tasks"]), tuple(names))
            if not seen or seen[-1][1:] != state:
                seen.append((round(time.monotonic() - started, 1), *state))
            if done(d):
                return seen
            time.sleep(0.2)
        raise AssertionError(seen)

    # described right after the create: provisioning, the green creating; then AVAILABLE, tasks completed
    green_status = rds.describe_db_instances(DBInstanceIdentifier=green)["DBInstances"][0]["DBInstanceStatus"]
    seen = watch(lambda d: d["Status"] == "AVAILABLE")
    assert (created["Status"], green_status) == ("PROVISIONING", "creating")
    assert seen[0][1:3] == ("PROVISIONING", ("IN_PROGRESS", "PENDING")), seen
    assert seen[-1][1:3] == ("AVAILABLE", ("COMPLETED", "COMPLETED")), seen
    assert seen[-1][0] >= moto_server.BLUE_GREEN_PROVISIONING_SECONDS - 1, seen
    green_inst = rds.describe_db_instances(DBInstanceIdentifier=green)["DBInstances"][0]
    assert (green_inst["DBInstanceStatus"], green_inst["EngineVersion"]) == ("available", "17.7")
    # the switchover: in progress with the names as they were, then the green under the blue's name
    answer = rds.switchover_blue_green_deployment(BlueGreenDeploymentIdentifier=ident, SwitchoverTimeout=60)
    assert answer["BlueGreenDeployment"]["Status"] == "SWITCHOVER_IN_PROGRESS"
    with pytest.raises(ClientError) as exc:  # a second one while it runs is refused, as AWS refuses it
        rds.switchover_blue_green_deployment(BlueGreenDeploymentIdentifier=ident)
    assert exc.value.response["Error"]["Code"] == "InvalidBlueGreenDeploymentStateFault"
    seen = watch(lambda d: d["Status"] == "SWITCHOVER_COMPLETED")
    assert seen[0][1] == "SWITCHOVER_IN_PROGRESS" and seen[0][3] == tuple(sorted([name, green])), seen
    assert seen[-1][3] == (name, name + "-old1") and seen[-1][0] >= moto_server.BLUE_GREEN_SWITCHOVER_SECONDS - 1, seen
    assert rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["EngineVersion"] == "17.7"


def test_patch16_a_read_replica_is_a_record_of_its_own(boto3_client):
    rds, sm = boto3_client("rds"), boto3_client("secretsmanager")
    source, replica = uid("rrsrc"), uid("rr")
    created = rds.create_db_instance(
        DBInstanceIdentifier=source, Engine="postgres", EngineVersion="16.11", DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20, MasterUsername="dbadmin", ManageMasterUserPassword=True, BackupRetentionPeriod=7,
        Tags=[{"Key": "env", "Value": "source"}])["DBInstance"]
    rds.create_db_instance_read_replica(DBInstanceIdentifier=replica, SourceDBInstanceIdentifier=source)
    described = rds.describe_db_instances(DBInstanceIdentifier=replica)["DBInstances"][0]
    assert described["ReadReplicaSourceDBInstanceIdentifier"] == source
    assert described["TagList"] == [] and "MasterUserSecret" not in described
    arn = described["DBInstanceArn"]
    rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": "role", "Value": "reader"}])
    src = rds.describe_db_instances(DBInstanceIdentifier=source)["DBInstances"][0]
    assert src["TagList"] == [{"Key": "env", "Value": "source"}]
    assert src["ReadReplicaDBInstanceIdentifiers"] == [replica]
    for _ in range(300):  # on the local stack a real standby is made behind it (patch 17): let it finish
        if rds.describe_db_instances(DBInstanceIdentifier=replica)["DBInstances"][0]["DBInstanceStatus"] != "creating":
            break
        time.sleep(0.1)
    rds.delete_db_instance(DBInstanceIdentifier=replica, SkipFinalSnapshot=True)
    src = rds.describe_db_instances(DBInstanceIdentifier=source)["DBInstances"][0]
    assert src.get("ReadReplicaDBInstanceIdentifiers", []) == []
    # the source's managed master password is still there
    assert sm.get_secret_value(SecretId=created["MasterUserSecret"]["SecretArn"])["SecretString"]
    rds.delete_db_instance(DBInstanceIdentifier=source, SkipFinalSnapshot=True)


# --------------------------------------------------------------------------
# IAM enforcement (dbops/moto_iam.py, patches I1-I4): a moto server of its own that enforces IAM
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def enforcing_moto(tmp_path_factory):
    """A bare patched moto server with --enforce-iam (no PostgreSQL): its endpoint and request log."""
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO_ROOT, free_port
    from dbops.local_stack import port_answers

    port = int(os.environ.get("NDIS_TEST_IAM_MOTO_PORT") or free_port())
    log = tmp_path_factory.mktemp("iam") / "requests.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "dbops.moto_server", "--port", str(port), "--enforce-iam",
                             "--iam-log", str(log)], env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_answers(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the enforcing moto server did not start"
            time.sleep(0.2)
        yield {"endpoint_url": f"http://127.0.0.1:{port}", "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def iam_user(moto: dict, policy: dict):
    """A boto3 client factory for a new user holding POLICY alone (created by the stack's administrator)."""
    import json

    import boto3

    def client(service, key="testing", secret="testing"):
        return boto3.client(service, endpoint_url=moto["endpoint_url"], region_name="ap-southeast-2",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    name = uid("user")
    admin = client("iam")
    admin.create_user(UserName=name)
    admin.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
    key = admin.create_access_key(UserName=name)["AccessKey"]
    return lambda service: client(service, key["AccessKeyId"], key["SecretAccessKey"]), name


def denied(call) -> str:
    with pytest.raises(ClientError) as exc:
        call()
    error = exc.value.response["Error"]
    # moto answers a refused CloudWatch call (JSON protocol) with its XML error, which botocore reports as "403"
    assert error["Code"] in ("AccessDenied", "AccessDeniedException") or "<Code>AccessDenied</Code>" in error["Message"], error
    return str(exc.value)


def test_patchI1_scoped_resources_and_conditions_are_judged_on_the_action(enforcing_moto):
    arn = "arn:aws:rds:ap-southeast-2:123456789012"
    user, name = iam_user(enforcing_moto, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "rds:DescribeDBInstances", "Resource": f"{arn}:db:only-this-one"},
        {"Effect": "Allow", "Action": "ssm:DescribeParameters", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestedRegion": "ap-southeast-2"}}},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::allowed-bucket"}]})
    # without the patch, moto compares the scoped Resource with "*" and the Condition with nothing: both refused
    assert "DBInstances" in user("rds").describe_db_instances()
    assert "Parameters" in user("ssm").describe_parameters()
    # an action the policy does not name is still refused, and named in the message
    assert "rds:DescribeDBParameterGroups" in denied(lambda: user("rds").describe_db_parameter_groups())
    # S3's resources are still compared: another bucket is refused
    admin = boto3_admin(enforcing_moto, "s3")
    for bucket in ("allowed-bucket", "other-bucket"):
        admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ap-southeast-2"})
    assert user("s3").list_objects_v2(Bucket="allowed-bucket")["KeyCount"] == 0
    denied(lambda: user("s3").list_objects_v2(Bucket="other-bucket"))


def boto3_admin(moto: dict, service: str):
    import boto3

    return boto3.client(service, endpoint_url=moto["endpoint_url"], region_name="ap-southeast-2",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_patchI2_cloudwatch_and_head_bucket_are_checked_as_aws_names_them(enforcing_moto):
    import json

    admin = boto3_admin(enforcing_moto, "s3")
    admin.create_bucket(Bucket="head-bucket", CreateBucketConfiguration={"LocationConstraint": "ap-southeast-2"})
    user, name = iam_user(enforcing_moto, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["cloudwatch:DescribeAlarms", "s3:ListBucket"], "Resource": "*"}]})
    assert user("cloudwatch").describe_alarms()["MetricAlarms"] == []
    user("s3").head_bucket(Bucket="head-bucket")
    assert "cloudwatch:PutMetricAlarm" in denied(lambda: user("cloudwatch").put_metric_alarm(
        AlarmName="a", MetricName="CPUUtilization", Namespace="AWS/RDS", Statistic="Average", Period=60,
        EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold"))
    logged = [json.loads(line) for line in enforcing_moto["log"].read_text().splitlines()]
    mine = {(e["action"], e["allowed"]) for e in logged if e["user"] == name}
    assert mine == {("cloudwatch:DescribeAlarms", True), ("s3:ListBucket", True), ("cloudwatch:PutMetricAlarm", False)}


def test_patchI3_passing_the_monitoring_role_needs_pass_role_on_it(enforcing_moto):
    import json

    iam = boto3_admin(enforcing_moto, "iam")
    roles = {}
    for role in ("the-monitoring-role", "another-role"):
        roles[role] = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": []}))["Role"]["Arn"]
    user, name = iam_user(enforcing_moto, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "rds:CreateDBInstance", "Resource": "*"},
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": roles["the-monitoring-role"],
         "Condition": {"StringEquals": {"iam:PassedToService": "monitoring.rds.amazonaws.com"}}}]})

    def create(role):
        return user("rds").create_db_instance(
            DBInstanceIdentifier=uid("pass"), Engine="postgres", EngineVersion="16.11", DBInstanceClass="db.t4g.small",
            AllocatedStorage=20, MasterUsername="dbadmin", MasterUserPassword="not-a-real-secret-1",
            MonitoringInterval=60, MonitoringRoleArn=roles[role])

    assert create("the-monitoring-role")["DBInstance"]["MonitoringRoleArn"] == roles["the-monitoring-role"]
    assert "iam:PassRole" in denied(lambda: create("another-role"))
    logged = [json.loads(line) for line in enforcing_moto["log"].read_text().splitlines()]
    assert [(e["action"], e["resource"], e["allowed"]) for e in logged
            if e["user"] == name and e["action"] == "iam:PassRole"] == [
        ("iam:PassRole", roles["the-monitoring-role"], True), ("iam:PassRole", roles["another-role"], False)]


def test_patchI4_the_administrator_reads_aws_backup(enforcing_moto):
    # moto miscomputes the signature of this GET: the administrator's key is trusted alone
    assert "BackupVaultList" in boto3_admin(enforcing_moto, "backup").list_backup_vaults()
    # a job user's requests are still signature-checked: a wrong secret is refused
    user, name = iam_user(enforcing_moto, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "rds:DescribeDBInstances", "Resource": "*"}]})
    key = user("rds")._request_signer._credentials.access_key
    import boto3

    forged = boto3.client("rds", endpoint_url=enforcing_moto["endpoint_url"], region_name="ap-southeast-2",
                          aws_access_key_id=key, aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as exc:
        forged.describe_db_instances()
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
