"""The change plan's in_step: a converge step is skipped only when the plan read everything that
step sets and found it as declared. Against moto over HTTP: in step after creation, then each
drift (instance tag, subnet group description / subnets / tags, parameter group tags and
values, the master secret's rotation) turns exactly its step's flag off and names the change."""
from __future__ import annotations

import contextlib
import io
import json
import uuid

import pytest


def run_plan(local_stack, args: dict) -> dict:
    from ansible.module_utils.testing import patch_module_args

    from ansible_collections.ndis.dbops.plugins.modules import rds_change_plan

    aws = local_stack["aws"]
    full = dict(args, region=aws["region"], endpoint_url=aws["endpoint_url"], access_key=aws["access_key_id"],
                secret_key=aws["secret_access_key"], _ansible_check_mode=True)
    out = io.StringIO()
    with patch_module_args(full), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        rds_change_plan.main()
    result = json.loads(out.getvalue())
    assert not result.get("failed"), result.get("msg")
    return result


@pytest.fixture
def declared(local_stack, boto3_client):
    rds, sm = boto3_client("rds"), boto3_client("secretsmanager")
    tag = uuid.uuid4().hex[:8]
    name = f"instep-{tag}"
    subnets = local_stack["network"]["subnet_ids"]
    tags = {"app": "ndis", "env": "test"}
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    rds.create_db_subnet_group(DBSubnetGroupName=name, DBSubnetGroupDescription="Subnets of " + name,
                               SubnetIds=subnets, Tags=tag_list)
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres16",
                                  Description="Parameters of " + name, Tags=tag_list)
    rds.modify_db_parameter_group(DBParameterGroupName=name, Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "immediate"}])
    instance = rds.create_db_instance(
        DBInstanceIdentifier=name, DBInstanceClass="db.t4g.medium", Engine="postgres", EngineVersion="16.11",
        AllocatedStorage=20, MasterUsername="dbadmin", ManageMasterUserPassword=True, BackupRetentionPeriod=7,
        DBSubnetGroupName=name, DBParameterGroupName=name, Tags=tag_list)["DBInstance"]
    secret = instance["MasterUserSecret"]["SecretArn"]
    sm.rotate_secret(SecretId=secret, RotationRules={"AutomaticallyAfterDays": 7}, RotateImmediately=False)
    args = {
        "db_instance_identifier": name,
        "desired": {"db_instance_class": "db.t4g.medium", "master_username": "dbadmin", "master_password_mode": "managed",
                    "db_subnet_group_name": name, "db_parameter_group_name": name, "backup_retention_period": 7},
        "parameter_group_name": name,
        "parameters": {"rds.force_ssl": 1},
        "tags": tags,
        "subnet_group": {"name": name, "description": "Subnets of " + name, "subnet_ids": subnets, "tags": tags},
        "parameter_group": {"name": name, "family": "postgres16", "description": "Parameters of " + name, "tags": tags},
        "rotation_days": 7,
    }
    yield {"args": args, "name": name, "secret": secret, "subnets": subnets}
    rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True)
    rds.delete_db_subnet_group(DBSubnetGroupName=name)
    rds.delete_db_parameter_group(DBParameterGroupName=name)


ALL_IN_STEP = {"instance": True, "subnet_group": True, "parameter_group": True, "master_secret": True}


def test_everything_as_declared_is_in_step_and_the_endpoint_comes_with_it(local_stack, declared):
    plan = run_plan(local_stack, declared["args"])
    assert plan["changes"] == [] and plan["in_step"] == ALL_IN_STEP
    assert plan["endpoint"]["address"] and plan["endpoint"]["port"]


def test_nothing_declared_is_never_in_step(local_stack, declared):
    """A caller that does not pass a step's declaration never gets it skipped."""
    bare = {"db_instance_identifier": declared["name"], "desired": declared["args"]["desired"]}
    assert run_plan(local_stack, bare)["in_step"] == {
        "instance": False, "subnet_group": False, "parameter_group": False, "master_secret": True}


def test_a_missing_instance_and_groups_are_not_in_step(local_stack, declared):
    args = dict(declared["args"], db_instance_identifier="instep-missing",
                subnet_group=dict(declared["args"]["subnet_group"], name="instep-missing"),
                parameter_group=dict(declared["args"]["parameter_group"], name="instep-missing"),
                parameter_group_name="instep-missing")
    plan = run_plan(local_stack, args)
    assert plan["exists"] is False and not any(plan["in_step"].values()) and plan["endpoint"] == {}


@pytest.mark.parametrize("drift, step, setting", [
    ("instance tag", "instance", "tags"),
    ("instance option", "instance", "backup_retention_period"),
    ("subnet group description", "subnet_group", "description"),
    ("subnet group subnets", "subnet_group", "subnet_ids"),
    ("subnet group tag", "subnet_group", "tags"),
    ("parameter group tag", "parameter_group", None),
    ("parameter value", "parameter_group", "parameter rds.force_ssl"),
    ("rotation", "master_secret", "master password rotation (days)"),
])
def test_each_drift_turns_off_its_own_step_only(local_stack, boto3_client, declared, drift, step, setting):
    rds, sm = boto3_client("rds"), boto3_client("secretsmanager")
    name = declared["name"]
    arn = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["DBInstanceArn"]
    group_arn = rds.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0]["DBSubnetGroupArn"]
    pg_arn = rds.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"][0]["DBParameterGroupArn"]
    if drift == "instance tag":
        rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": "owner", "Value": "someone"}])
    elif drift == "instance option":
        rds.modify_db_instance(DBInstanceIdentifier=name, BackupRetentionPeriod=9, ApplyImmediately=True)
    elif drift == "subnet group description":
        rds.modify_db_subnet_group(DBSubnetGroupName=name, DBSubnetGroupDescription="changed by hand",
                                   SubnetIds=declared["subnets"])
    elif drift == "subnet group subnets":
        rds.modify_db_subnet_group(DBSubnetGroupName=name, DBSubnetGroupDescription="Subnets of " + name,
                                   SubnetIds=declared["subnets"][:1])
    elif drift == "subnet group tag":
        rds.remove_tags_from_resource(ResourceName=group_arn, TagKeys=["env"])
    elif drift == "parameter group tag":
        rds.add_tags_to_resource(ResourceName=pg_arn, Tags=[{"Key": "env", "Value": "other"}])
    elif drift == "parameter value":
        rds.modify_db_parameter_group(DBParameterGroupName=name, Parameters=[
            {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "immediate"}])
    elif drift == "rotation":
        sm.rotate_secret(SecretId=declared["secret"], RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False)
    plan = run_plan(local_stack, declared["args"])
    assert plan["in_step"] == dict(ALL_IN_STEP, **{step: False}), (drift, plan["in_step"])
    if setting:
        assert any(c["setting"].endswith(setting) for c in plan["changes"]), plan["changes"]
