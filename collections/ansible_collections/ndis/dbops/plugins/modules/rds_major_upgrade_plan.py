#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_major_upgrade_plan
short_description: Plan a major engine upgrade in place or as an RDS blue/green deployment, with AWS's documented limits
version_added: "0.3.0"
description:
  - Read-only. Reads the instance, the valid upgrade targets of its version, the target family's parameters
    (C(DescribeEngineDefaultParameters)), the instance's parameter group (C(rds.logical_replication)) and any blue/green
    deployment of it, and returns the steps of the declared O(method) with their downtime class, and the problems
    that stop it (each with the fix) - module_utils/major_upgrade.py lists the limits AWS documents.
  - O(db_facts) is what the database says (prepared transactions, logical replication slots, tables without a
    primary key, unlogged tables); C(playbooks/major_upgrade_plan.yml) reads it.
  - O(fail_on_problems) fails the task, naming every problem, before anything changes.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance (blue).
    type: str
    required: true
  engine_version:
    description: The target version (a new major, for example C(17.7)); empty, the region's default minor of the next major.
    type: str
    default: ""
  method:
    description: C(in_place) (ModifyDBInstance with AllowMajorVersionUpgrade) or C(blue_green) (a green copy, then a switchover).
    type: str
    default: in_place
    choices: [in_place, blue_green]
  parameters:
    description: The parameters the instance's group declares; those that exist in the target family go to the new group.
    type: dict
    default: {}
  target_parameter_group_name:
    description: Name of the target family's parameter group to create; default C(<instance>-postgres<major>).
    type: str
    default: ""
  allow_major_version_upgrade:
    description: The declaration that a major upgrade is meant.
    type: bool
    default: false
  switchover_timeout:
    description: Seconds RDS may take to switch over before it rolls back (30-3600).
    type: int
    default: 300
  db_facts:
    description: What the database says - prepared_transactions (int), logical_slots, tables_without_primary_key, unlogged_tables (lists).
    type: dict
    default: {}
  fail_on_problems:
    description: Fail when a problem stops the plan.
    type: bool
    default: false
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Plan the move to PostgreSQL 17 as a blue/green deployment
  ndis.dbops.rds_major_upgrade_plan:
    db_instance_identifier: ndis-chatbot-prod
    engine_version: "17.7"
    method: blue_green
    allow_major_version_upgrade: true
"""

RETURN = r"""
engine_version:
  description: The target version planned.
  returned: always
  type: str
steps:
  description: The steps in order, each with step and downtime.
  returned: always
  type: list
  elements: dict
problems:
  description: What stops the plan, each naming the fix; empty when it can go ahead.
  returned: always
  type: list
  elements: str
notes:
  description: Parameters left out of the target family, an existing deployment, the rollback.
  returned: always
  type: list
  elements: str
table:
  description: The plan as printable lines.
  returned: always
  type: list
  elements: str
target_parameters:
  description: The parameters the target family's group gets.
  returned: always
  type: dict
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import major_upgrade as mu
from ansible_collections.ndis.dbops.plugins.module_utils import rds_changes
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance, paginate


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            engine_version=dict(type="str", default=""),
            method=dict(type="str", default="in_place", choices=list(mu.METHODS)),
            parameters=dict(type="dict", default={}),
            target_parameter_group_name=dict(type="str", default=""),
            allow_major_version_upgrade=dict(type="bool", default=False),
            switchover_timeout=dict(type="int", default=300),
            db_facts=dict(type="dict", default={}),
            fail_on_problems=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    client = module.client("rds")
    ident, target = p["db_instance_identifier"], p["engine_version"]
    try:
        instance = describe_instance(client, ident)
        if instance is None:
            module.fail_json(msg="%s does not exist: a new instance is created on the declared version, nothing to upgrade" % ident)
        if not target:
            nxt = str(int(instance["EngineVersion"].split(".")[0]) + 1)
            found = client.describe_db_engine_versions(Engine="postgres", EngineVersion=nxt, DefaultOnly=True)["DBEngineVersions"]
            if not found:
                module.fail_json(msg="%s offers no PostgreSQL %s yet; declare rds_instance_major_upgrade_target" % (module.region, nxt))
            target = found[0]["EngineVersion"]
        group = p["target_parameter_group_name"] or "%s-%s" % (ident, mu.family_of(target))
        entries = client.describe_db_engine_versions(Engine="postgres", EngineVersion=instance["EngineVersion"],
                                                     IncludeAll=True)["DBEngineVersions"]
        valid = [t["EngineVersion"] for e in entries for t in e.get("ValidUpgradeTarget") or [] if t.get("IsMajorVersionUpgrade")]
        family_params = paginate(client, "describe_engine_default_parameters", "EngineDefaults.Parameters",
                                 DBParameterGroupFamily=mu.family_of(target))
        kept, dropped = mu.split_parameters(p["parameters"], family_params)
        blue_group = (instance.get("DBParameterGroups") or [{}])[0].get("DBParameterGroupName")
        logical = "0"
        if blue_group:
            for param in paginate(client, "describe_db_parameters", "Parameters", DBParameterGroupName=blue_group):
                if param.get("ParameterName") == "rds.logical_replication":
                    logical = str(param.get("ParameterValue", "0"))
        deployments = [d for d in client.describe_blue_green_deployments().get("BlueGreenDeployments", [])
                       if d.get("Source", "").endswith(":db:" + ident)]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not read what the major upgrade plan of %s needs" % ident)
    result = mu.plan(p["method"], instance, target, valid, group, kept, dropped, p["db_facts"],
                     rds_changes.master_password_mode(instance), logical, deployments[0] if deployments else None,
                     p["switchover_timeout"], p["allow_major_version_upgrade"])
    out = dict(changed=False, engine_version=target, steps=result["steps"], problems=result["problems"], notes=result["notes"],
               table=mu.table(result), target_parameters=kept)
    if p["fail_on_problems"] and result["problems"]:
        module.fail_json(msg="%s: the %s major upgrade to %s cannot go ahead (nothing was changed): %s"
                             % (ident, p["method"], target, " | ".join(result["problems"])), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
