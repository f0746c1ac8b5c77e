#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# A read-only probe: amazon.aws.rds_instance says that something changes, not when it takes
# effect or what it costs, and rds_instance_param_group reports no change in check mode when
# only parameter values differ.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_change_plan
short_description: Classify the differences between a declared and an actual RDS instance
version_added: "0.1.0"
description:
  - Reads the instance and its parameter group and compares them with the declaration.
  - Each difference is classified as C(immediate), C(next-window) (queued for the next
    maintenance window), C(needs-reboot) (a static parameter or a new parameter group;
    RDS never reboots on its own), C(outage) (the instance restarts or fails over when the
    change is applied) or C(replace) (not changeable in place).
  - Read-only and never reports a change; supports check mode. AWS connection options come
    from the C(aws) module defaults group.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance to compare.
    type: str
    required: true
  desired:
    description:
      - Declared instance settings, keyed by amazon.aws.rds_instance option names
        (C(db_instance_class), C(engine_version), C(allocated_storage), C(multi_az),
        C(backup_retention_period), C(preferred_backup_window), ...). Settings left out or
        null are not compared.
      - C(ca_certificate_identifier), C(enable_iam_database_authentication) and C(master_password_mode)
        (C(managed), C(ssm); C(auto) is not compared) follow their own rules; a CA change is an outage
        unless the engine version reports SupportsCertificateRotationWithoutRestart.
    type: dict
    default: {}
  apply_immediately:
    description: Whether the modification will be applied now rather than in the next maintenance window.
    type: bool
    default: false
  parameter_group_name:
    description: Parameter group whose values to compare with O(parameters).
    type: str
  parameters:
    description: Declared parameter values.
    type: dict
    default: {}
  tags:
    description:
      - The instance's declared tags (compared exactly, as C(purge_tags=true) keeps them); null is not compared.
    type: dict
  subnet_group:
    description:
      - The declared DB subnet group, compared for RV(in_step.subnet_group); the instance's own
        C(db_subnet_group_name) is in O(desired).
    type: dict
    suboptions:
      name: {description: The group's name., type: str, required: true}
      description: {description: Its description., type: str}
      subnet_ids: {description: Its subnets., type: list, elements: str, default: []}
      tags: {description: Its tags., type: dict, default: {}}
  parameter_group:
    description:
      - The declared parameter group, compared for RV(in_step.parameter_group); its values are O(parameters).
    type: dict
    suboptions:
      name: {description: The group's name., type: str, required: true}
      family: {description: Its parameter group family (C(postgres16))., type: str}
      description: {description: Its description., type: str}
      tags: {description: Its tags., type: dict, default: {}}
  rotation_days:
    description:
      - Declared rotation schedule of an RDS-managed master password's secret, in days; 0 is not compared.
    type: int
    default: 0
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Classify what the next run would change
  ndis.dbops.rds_change_plan:
    db_instance_identifier: ndis-chatbot-prod
    apply_immediately: false
    desired:
      db_instance_class: db.t4g.large
      backup_retention_period: 7
    parameter_group_name: ndis-chatbot-prod-postgres16
    parameters:
      rds.force_ssl: 1
  register: plan

- name: Show it
  ansible.builtin.debug:
    msg: "{{ plan.table }}"
"""

RETURN = r"""
exists:
  description: Whether the instance exists. When it does not, every setting is new and RV(changes) is empty.
  returned: always
  type: bool
changes:
  description: One entry per difference.
  returned: always
  type: list
  elements: dict
  contains:
    setting: {description: Option or C(parameter NAME)., type: str}
    current: {description: The actual value., type: raw}
    desired: {description: The declared value., type: raw}
    when: {description: "C(immediate), C(next-window), C(needs-reboot), C(outage), C(replace) or C(unknown).", type: str}
    applies: {description: In words, when the change takes effect., type: str}
    note: {description: What it costs., type: str}
table:
  description: RV(changes) as fixed-width lines, with a header; empty when nothing differs.
  returned: always
  type: list
  elements: str
counts:
  description: Number of changes per C(when) class.
  returned: always
  type: dict
pending_reboot:
  description: The instance waits for a reboot to apply its parameter group.
  returned: always
  type: bool
master_password_mode:
  description: C(managed) when RDS keeps the master password in Secrets Manager, C(ssm) otherwise; empty when the instance does not exist.
  returned: always
  type: str
in_step:
  description:
    - For each converge step, true only when everything that step would set was read and matches the
      declaration, so the step has nothing to do; false when anything differs, could not be read or
      was not declared. C(instance) also needs the instance C(available) with nothing pending.
  returned: always
  type: dict
  contains:
    instance: {description: The instance's options and tags (O(desired), O(tags)) match., type: bool}
    subnet_group: {description: The subnet group matches O(subnet_group)., type: bool}
    parameter_group: {description: The parameter group matches O(parameter_group) and O(parameters)., type: bool}
    master_secret: {description: The password mode and the secret's rotation match., type: bool}
endpoint:
  description: The instance's endpoint (C(address), C(port)); empty when it does not exist or has none yet.
  returned: always
  type: dict
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import rds_changes
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance


def describe_parameters(client, group):
    try:
        pages = client.get_paginator("describe_db_parameters").paginate(DBParameterGroupName=group)
        return [p for page in pages for p in page.get("Parameters", [])]
    except is_boto3_error_code("DBParameterGroupNotFound"):
        return None


def rotation_without_restart(client, instance):
    """SupportsCertificateRotationWithoutRestart of the instance's engine version; None when unknown."""
    try:
        versions = client.describe_db_engine_versions(
            Engine=instance.get("Engine") or "postgres", EngineVersion=instance.get("EngineVersion"))["DBEngineVersions"]
    except Exception:  # noqa: BLE001 - any failure (denied, not implemented, unparsable) means unknown: a restart is assumed
        return None
    flags = [v.get("SupportsCertificateRotationWithoutRestart") for v in versions]
    return flags[0] if flags and flags[0] is not None else None


def describe_subnet_group(client, name):
    try:
        return client.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0]
    except is_boto3_error_code("DBSubnetGroupNotFoundFault"):
        return None


def describe_parameter_group(client, name):
    try:
        return client.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"][0]
    except is_boto3_error_code("DBParameterGroupNotFound"):
        return None


def tags_of(client, arn):
    return {t["Key"]: t["Value"] for t in client.list_tags_for_resource(ResourceName=arn).get("TagList", [])}


def _text(tags):
    return {str(k): str(v) for k, v in (tags or {}).items()}


def subnet_group_changes(client, declared):
    """Differences between the declared subnet group and RDS's, as plan entries (all immediate)."""
    group = describe_subnet_group(client, declared["name"])
    if group is None:
        return None
    changes = []
    have = dict(description=group.get("DBSubnetGroupDescription"),
                subnet_ids=sorted(s["SubnetIdentifier"] for s in group.get("Subnets", [])),
                tags=tags_of(client, group["DBSubnetGroupArn"]))
    want = dict(description=declared.get("description"), subnet_ids=sorted(declared.get("subnet_ids") or []),
                tags=_text(declared.get("tags")))
    for key in ("description", "subnet_ids", "tags"):
        if have[key] != want[key]:
            changes.append(dict(setting="subnet group %s %s" % (declared["name"], key), current=have[key],
                                desired=want[key], when=rds_changes.IMMEDIATE, applies="now", note="no interruption"))
    return changes


def parameter_group_in_step(client, declared):
    group = describe_parameter_group(client, declared["name"])
    if group is None:
        return False
    return (group.get("DBParameterGroupFamily") == declared.get("family")
            and group.get("Description") == declared.get("description")
            and tags_of(client, group["DBParameterGroupArn"]) == _text(declared.get("tags")))


def rotation_change(sm, instance, days):
    """The secret's rotation as a plan entry when it differs from the declared days; None when in step."""
    arn = (instance.get("MasterUserSecret") or {}).get("SecretArn")
    if not arn:
        return None
    described = sm.describe_secret(SecretId=arn)
    have = (described.get("RotationRules") or {}).get("AutomaticallyAfterDays") if described.get("RotationEnabled") else None
    if have == days:
        return None
    return dict(setting="master password rotation (days)", current=have, desired=days, when=rds_changes.IMMEDIATE,
                applies="now", note="Secrets Manager schedule; the password changes at the next rotation")


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            desired=dict(type="dict", default={}),
            apply_immediately=dict(type="bool", default=False),
            parameter_group_name=dict(type="str"),
            parameters=dict(type="dict", default={}),
            tags=dict(type="dict"),
            subnet_group=dict(type="dict", options=dict(
                name=dict(type="str", required=True), description=dict(type="str"),
                subnet_ids=dict(type="list", elements="str", default=[]), tags=dict(type="dict", default={}))),
            parameter_group=dict(type="dict", options=dict(
                name=dict(type="str", required=True), family=dict(type="str"), description=dict(type="str"),
                tags=dict(type="dict", default={}))),
            rotation_days=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    client = module.client("rds")
    in_step = dict(instance=False, subnet_group=False, parameter_group=False, master_secret=False)
    changes = []
    try:
        instance = describe_instance(client, p["db_instance_identifier"])
        params = describe_parameters(client, p["parameter_group_name"]) if p["parameter_group_name"] else None
        if instance is not None:
            changes += rds_changes.classify_instance(instance, p["desired"], p["apply_immediately"])
            ca = p["desired"].get("ca_certificate_identifier")
            rotation = rotation_without_restart(client, instance) if ca and ca != instance.get("CACertificateIdentifier") else None
            changes += rds_changes.classify_access(instance, p["desired"], p["apply_immediately"], rotation)
            tags_differ = p["tags"] is not None and tags_of(client, instance["DBInstanceArn"]) != _text(p["tags"])
            if tags_differ:
                changes.append(dict(setting="tags", current="(differ)", desired=_text(p["tags"]), when=rds_changes.IMMEDIATE,
                                    applies="now", note="no interruption"))
            in_step["instance"] = (p["tags"] is not None and not changes and instance.get("DBInstanceStatus") == "available"
                                   and not instance.get("PendingModifiedValues"))
        if params is not None:
            param_changes = rds_changes.classify_parameters(params, p["parameters"])
            changes += param_changes
            in_step["parameter_group"] = bool(p["parameter_group"]) and not param_changes and parameter_group_in_step(
                client, p["parameter_group"])
        if p["subnet_group"]:
            group_changes = subnet_group_changes(client, p["subnet_group"])
            in_step["subnet_group"] = group_changes == []
            changes += group_changes or []
        if instance is not None:
            if not any(c["setting"] == "master_password_mode" for c in changes):
                if rds_changes.master_password_mode(instance) == "ssm":
                    in_step["master_secret"] = True
                elif p["rotation_days"] > 0:
                    rotation_entry = rotation_change(module.client("secretsmanager"), instance, p["rotation_days"])
                    in_step["master_secret"] = rotation_entry is None
                    changes += [rotation_entry] if rotation_entry else []
                else:
                    in_step["master_secret"] = True
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not read RDS instance %s" % p["db_instance_identifier"])

    counts = {}
    for c in changes:
        counts[c["when"]] = counts.get(c["when"], 0) + 1
    module.exit_json(
        changed=False,
        exists=instance is not None,
        changes=changes,
        table=rds_changes.table(changes),
        counts=counts,
        pending_reboot=bool(instance and rds_changes.pending_reboot(instance)),
        master_password_mode=rds_changes.master_password_mode(instance) if instance else "",
        in_step=in_step,
        endpoint=dict(address=((instance or {}).get("Endpoint") or {}).get("Address", ""),
                      port=((instance or {}).get("Endpoint") or {}).get("Port")) if instance and instance.get("Endpoint") else {},
    )


if __name__ == "__main__":
    main()
