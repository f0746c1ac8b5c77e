#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# A read-only probe: RDS refuses an engine version, class, storage or parameter it does not
# offer only when the create or modify call is made, half way through a run. This asks the
# region's catalogue first, in one task, so the validate play can refuse before any change.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_preflight
short_description: Check a declared RDS for PostgreSQL instance against the region's catalogue
version_added: "0.4.0"
description:
  - Asks the region what it offers and fails, naming each refused value and what is offered
    instead, when the engine version is not offered, is deprecated (past its end of standard
    support), belongs to another parameter group family or is not a valid upgrade target from
    the version the instance runs (C(DescribeDBEngineVersions), C(ValidUpgradeTarget)); when
    the major version is past its RDS end of standard support (C(DescribeDBMajorEngineVersions),
    where the region answers it); when the instance class is not orderable for the engine
    version, storage type and Multi-AZ, or the storage size or IOPS is outside its range
    (C(DescribeOrderableDBInstanceOptions)); when a declared parameter is not in the family,
    is not modifiable or has a value outside its C(AllowedValues)
    (C(DescribeEngineDefaultParameters)); and, for an instance not created yet, when the master
    user name is one RDS refuses for PostgreSQL.
  - An empty O(engine_version) or a major version alone (C(16)) resolves to the version the
    instance runs when it runs that major, and otherwise to the region's default minor;
    RV(engine_version) and RV(engine_version_note) say which.
  - Read-only; never reports a change; supports check mode. Nothing is cached between runs.
    AWS connection options come from the C(aws) module defaults group.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance; when it exists, its running version is the upgrade source and its master user name is not checked again.
    type: str
    required: true
  engine_version:
    description: Declared engine version, a major version alone, or empty.
    type: str
    default: ""
  parameter_group_family:
    description: The parameter group family, for example C(postgres16).
    type: str
    required: true
  db_instance_class:
    description: Declared instance class.
    type: str
    required: true
  storage_type:
    description: Declared storage type.
    type: str
    required: true
  allocated_storage:
    description: Declared storage in GiB.
    type: int
    required: true
  max_allocated_storage:
    description: Declared storage autoscaling ceiling in GiB.
    type: int
  iops:
    description: Declared provisioned IOPS; not checked when unset.
    type: int
  multi_az:
    description: Whether the instance runs a standby in a second availability zone.
    type: bool
    default: false
  parameters:
    description: Declared parameter values of the instance's parameter group.
    type: dict
    default: {}
  master_username:
    description: Declared master user name.
    type: str
    required: true
  variable_names:
    description:
      - Inventory variable behind each option (C(engine_version) -> C(rds_instance_engine_version)),
        so the failure message names what to edit.
    type: dict
    default: {}
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Check the declaration against the region before anything changes
  ndis.dbops.rds_preflight:
    db_instance_identifier: ndis-chatbot-prod
    engine_version: "16"
    parameter_group_family: postgres16
    db_instance_class: db.t4g.medium
    storage_type: gp3
    allocated_storage: 50
    max_allocated_storage: 100
    multi_az: true
    parameters:
      rds.force_ssl: 1
    master_username: dbadmin
  register: preflight

- name: Use the full version it resolved
  ansible.builtin.debug:
    msg: "{{ preflight.engine_version }} ({{ preflight.engine_version_note }})"
"""

RETURN = r"""
engine_version:
  description: The full engine version the declaration means (the declared one when it was full).
  returned: always
  type: str
  sample: "16.11"
engine_version_note:
  description: When the declaration was empty or a major alone, which version it resolved to and why; else empty.
  returned: always
  type: str
exists:
  description: Whether the instance exists.
  returned: always
  type: bool
running_engine_version:
  description: The version the instance runs, or null.
  returned: always
  type: str
problems:
  description: What RDS would refuse; the module fails when this is not empty.
  returned: always
  type: list
  elements: str
checked:
  description: What was checked, one line each.
  returned: always
  type: list
  elements: str
"""

import datetime

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import rds_catalogue
from ansible_collections.ndis.dbops.plugins.module_utils.aws_denied import ACCESS_DENIED
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance


def paginate(client, operation, key, **kwargs):
    pages = client.get_paginator(operation).paginate(**kwargs)
    out = []
    for page in pages:
        value = page
        for part in key.split("."):
            value = value.get(part) or {}
        out.extend(value or [])
    return out



def major_lifecycle(client, major):
    """SupportedEngineLifecycles of the major, or None where the region does not answer."""
    try:
        majors = client.describe_db_major_engine_versions(Engine="postgres", MajorEngineVersion=major)
    except is_boto3_error_code(ACCESS_DENIED):
        raise  # a refusal is the credentials' gap (the job's IAM policy), not a region without the call
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, AttributeError):  # pylint: disable=duplicate-except
        return None
    for entry in majors.get("DBMajorEngineVersions") or []:
        if entry.get("MajorEngineVersion") == major:
            return entry.get("SupportedEngineLifecycles")
    return None


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            engine_version=dict(type="str", default=""),
            parameter_group_family=dict(type="str", required=True),
            db_instance_class=dict(type="str", required=True),
            storage_type=dict(type="str", required=True),
            allocated_storage=dict(type="int", required=True),
            max_allocated_storage=dict(type="int"),
            iops=dict(type="int"),
            multi_az=dict(type="bool", default=False),
            parameters=dict(type="dict", default={}),
            master_username=dict(type="str", required=True),
            variable_names=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    names = p["variable_names"]
    client = module.client("rds")
    region = client.meta.region_name
    problems, checked = [], []

    def label(option, text):
        return "%s: %s" % (names[option], text) if option in names else text

    try:
        instance = describe_instance(client, p["db_instance_identifier"])
        running = instance.get("EngineVersion") if instance else None
        catalogue = paginate(client, "describe_db_engine_versions", "DBEngineVersions",
                             Engine="postgres", IncludeAll=True)
        declared = (p["engine_version"] or "").strip()
        default = None
        if "." not in declared:  # empty or a major alone: the note names the region's default minor
            query = dict(EngineVersion=declared) if declared else dict(DBParameterGroupFamily=p["parameter_group_family"])
            defaults = client.describe_db_engine_versions(Engine="postgres", DefaultOnly=True, **query)["DBEngineVersions"]
            default = defaults[0]["EngineVersion"] if defaults else None
        version, note = rds_catalogue.resolve_engine_version(declared, p["parameter_group_family"], running, default)
        if version is None:
            problems.append(label("engine_version", "engine version %r: %s offers no default version for %s"
                                  % (declared, region, declared or p["parameter_group_family"])))
        else:
            lifecycle = major_lifecycle(client, rds_catalogue.major_of(version))
            found = rds_catalogue.check_engine_version(
                version, p["parameter_group_family"], catalogue, region, running=running, lifecycle=lifecycle,
                today=datetime.datetime.now(datetime.timezone.utc).date())
            problems += [label("engine_version", text) for text in found]
            end = rds_catalogue.standard_support_end(lifecycle)
            checked.append("engine version %s%s%s" % (
                version, " (from %s)" % running if running and running != version else "",
                ", standard support until %s" % end.date().isoformat() if end else ""))
            known = [v["EngineVersion"] for v in catalogue if v.get("Status", "available") == "available"]
            if version not in known:
                checked.append("instance class %s: not checked, the engine version is not offered" % p["db_instance_class"])
            else:
                declared_instance = dict(
                    db_instance_class=p["db_instance_class"], engine_version=version, storage_type=p["storage_type"],
                    multi_az=p["multi_az"], allocated_storage=p["allocated_storage"],
                    max_allocated_storage=p["max_allocated_storage"], iops=p["iops"])
                options = paginate(client, "describe_orderable_db_instance_options", "OrderableDBInstanceOptions",
                                   Engine="postgres", EngineVersion=version, DBInstanceClass=p["db_instance_class"],
                                   Vpc=True)
                every = None
                if not options:
                    every = paginate(client, "describe_orderable_db_instance_options", "OrderableDBInstanceOptions",
                                     Engine="postgres", EngineVersion=version, Vpc=True)
                found = rds_catalogue.check_orderable(declared_instance, options, region, every)
                problems += [label("db_instance_class", text) for text in found]
                checked.append("%s with %s %s GiB%s" % (p["db_instance_class"], p["storage_type"],
                                                         p["allocated_storage"], ", Multi-AZ" if p["multi_az"] else ""))
        if p["parameters"]:
            family_parameters = paginate(client, "describe_engine_default_parameters", "EngineDefaults.Parameters",
                                         DBParameterGroupFamily=p["parameter_group_family"])
            problems += [label("parameters", text) for text in
                         rds_catalogue.check_parameters(p["parameters"], family_parameters, p["parameter_group_family"])]
            checked.append("parameters %s in %s" % (", ".join(sorted(p["parameters"])), p["parameter_group_family"]))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not read the RDS catalogue of %s for %s" % (region, p["db_instance_identifier"]))

    if instance is None:
        problems += [label("master_username", text) for text in rds_catalogue.check_master_username(p["master_username"])]
        checked.append("master user name %s" % p["master_username"])

    result = dict(changed=False, engine_version=version or declared, engine_version_note=note,
                  exists=instance is not None, running_engine_version=running, problems=problems, checked=checked)
    if problems:
        module.fail_json(
            msg="%s in %s: RDS would refuse %s (nothing was changed):\n%s\nFix these in the inventory's group_vars."
            % (p["db_instance_identifier"], region, "this" if len(problems) == 1 else "these %d" % len(problems),
               "\n".join("  - " + text for text in problems)),
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
