#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# One call for what the instance's observability needs outside RDS: the Enhanced Monitoring
# role and the log groups of the exported logs with their retention. amazon.aws.iam_role
# plus one community.aws.cloudwatchlogs_log_group per log type cost a module run each on
# every no-op run; this reads all of them and writes only what differs.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_observability
short_description: Ensure the Enhanced Monitoring role and the RDS log groups' retention
version_added: "0.1.0"
description:
  - Ensures the IAM role RDS Enhanced Monitoring publishes with (trusting
    C(monitoring.rds.amazonaws.com), with the AWS managed policy C(AmazonRDSEnhancedMonitoringRole)),
    unless a role ARN is given, which is then only checked to exist.
  - Ensures the CloudWatch Logs groups C(/aws/rds/instance/<id>/<log type>) of the exported logs
    exist with the declared retention (RDS creates them without one, keeping logs forever).
  - Reads everything first and writes only the differences; in check mode it reports them and
    writes nothing. AWS connection options come from the C(aws) module defaults group.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance whose log groups to manage.
    type: str
    required: true
  monitoring_interval:
    description: Enhanced Monitoring interval in seconds; C(0) turns it off and no role is needed.
    type: int
    default: 60
    choices: [0, 1, 5, 10, 15, 30, 60]
  monitoring_role_arn:
    description: An existing role to use for Enhanced Monitoring; it is checked, not changed.
    type: str
  monitoring_role_name:
    description: Name of the role to create when O(monitoring_role_arn) is not given.
    type: str
  log_exports:
    description: Log types exported to CloudWatch Logs (C(postgresql), C(upgrade)).
    type: list
    elements: str
    default: []
  log_retention_days:
    description: Days CloudWatch Logs keeps the exported logs.
    type: int
    default: 30
    choices: [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]
  tags:
    description: Tags on the role and the log groups (set on creation).
    type: dict
    default: {}
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Ensure the monitoring role and the log groups
  ndis.dbops.rds_observability:
    db_instance_identifier: ndis-chatbot-prod
    monitoring_interval: 60
    monitoring_role_name: ndis-chatbot-prod-rds-monitoring
    log_exports: [postgresql, upgrade]
    log_retention_days: 30
  register: observability
"""

RETURN = r"""
monitoring_role_arn:
  description: The role to pass to RDS as MonitoringRoleArn (predicted in check mode when it does not exist yet); empty when monitoring is off.
  returned: always
  type: str
log_groups:
  description: The log groups and their retention in days.
  returned: always
  type: list
  elements: dict
changes:
  description: What was (or, in check mode, would be) changed, one line each.
  returned: always
  type: list
  elements: str
"""

import json

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import aws_tags

MONITORING_POLICY_ARN = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "monitoring.rds.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def _trusts_rds_monitoring(document):
    if isinstance(document, str):
        from urllib.parse import unquote
        document = json.loads(unquote(document))
    for stmt in document.get("Statement", []):
        principal = (stmt.get("Principal") or {}).get("Service")
        services = principal if isinstance(principal, list) else [principal]
        actions = stmt.get("Action") if isinstance(stmt.get("Action"), list) else [stmt.get("Action")]
        if stmt.get("Effect") == "Allow" and "monitoring.rds.amazonaws.com" in services and "sts:AssumeRole" in actions:
            return True
    return False


def get_role(iam, name):
    try:
        return iam.get_role(RoleName=name)["Role"]
    except is_boto3_error_code("NoSuchEntity"):
        return None


def ensure_role(module, iam, sts, name, tags, changes):
    role = get_role(iam, name)
    if role is None:
        changes.append("create IAM role %s (trusts monitoring.rds.amazonaws.com, policy AmazonRDSEnhancedMonitoringRole)" % name)
        if module.check_mode:
            partition, account = aws_tags.caller_partition_account(sts)
            return aws_tags.build_arn(partition, "iam", "", account, "role/" + name)
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                               Description="RDS Enhanced Monitoring publishes metrics with this role",
                               Tags=aws_tags.tag_list(tags))["Role"]
        iam.attach_role_policy(RoleName=name, PolicyArn=MONITORING_POLICY_ARN)
        return role["Arn"]
    if not _trusts_rds_monitoring(role["AssumeRolePolicyDocument"]):
        changes.append("set the trust policy of IAM role %s to monitoring.rds.amazonaws.com" % name)
        if not module.check_mode:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(TRUST_POLICY))
    attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]]
    if MONITORING_POLICY_ARN not in attached:
        changes.append("attach AmazonRDSEnhancedMonitoringRole to IAM role %s" % name)
        if not module.check_mode:
            iam.attach_role_policy(RoleName=name, PolicyArn=MONITORING_POLICY_ARN)
    return role["Arn"]


def ensure_log_groups(module, logs, identifier, types, retention, tags, changes):
    prefix = "/aws/rds/instance/%s/" % identifier
    pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=prefix)
    current = dict((g["logGroupName"], g) for page in pages for g in page.get("logGroups", []))
    out = []
    for log_type in sorted(set(types)):
        name = prefix + log_type
        group = current.get(name)
        if group is None:
            changes.append("create log group %s (retention %d days)" % (name, retention))
            if not module.check_mode:
                logs.create_log_group(logGroupName=name, tags=aws_tags.tag_map(tags))
                logs.put_retention_policy(logGroupName=name, retentionInDays=retention)
        elif group.get("retentionInDays") != retention:
            changes.append("set retention of log group %s: %s -> %d days"
                           % (name, group.get("retentionInDays", "never expire"), retention))
            if not module.check_mode:
                logs.put_retention_policy(logGroupName=name, retentionInDays=retention)
        out.append(dict(name=name, retention_days=retention))
    return out


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            monitoring_interval=dict(type="int", default=60, choices=[0, 1, 5, 10, 15, 30, 60]),
            monitoring_role_arn=dict(type="str"),
            monitoring_role_name=dict(type="str"),
            log_exports=dict(type="list", elements="str", default=[]),
            log_retention_days=dict(type="int", default=30, choices=[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400,
                                                                      545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]),
            tags=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    unknown = sorted(set(p["log_exports"]) - {"postgresql", "upgrade", "iam-db-auth-error"})
    if unknown:
        module.fail_json(msg="log_exports: %s is not a log type of RDS for PostgreSQL; use postgresql, upgrade"
                         " (or iam-db-auth-error)." % ", ".join(unknown))
    if p["monitoring_interval"] and not (p["monitoring_role_arn"] or p["monitoring_role_name"]):
        module.fail_json(msg="monitoring_interval %d needs monitoring_role_arn (an existing role) or monitoring_role_name"
                         " (a role to create)." % p["monitoring_interval"])
    changes = []
    role_arn = ""
    try:
        if p["monitoring_interval"]:
            iam = module.client("iam")
            if p["monitoring_role_arn"]:
                role_arn = p["monitoring_role_arn"]
                if get_role(iam, role_arn.split("/")[-1]) is None:
                    module.fail_json(msg="monitoring_role_arn %s: no such IAM role. Create it (trust monitoring.rds.amazonaws.com,"
                                     " policy AmazonRDSEnhancedMonitoringRole) or leave the ARN empty to have one created."
                                     % role_arn)
            else:
                role_arn = ensure_role(module, iam, module.client("sts"), p["monitoring_role_name"], p["tags"], changes)
        log_groups = ensure_log_groups(module, module.client("logs"), p["db_instance_identifier"], p["log_exports"],
                                       p["log_retention_days"], p["tags"], changes)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not ensure the observability of RDS instance %s" % p["db_instance_identifier"])
    result = dict(changed=bool(changes), changes=changes, monitoring_role_arn=role_arn, log_groups=log_groups)
    if module._diff:
        result["diff"] = dict(before="", after="".join(c + "\n" for c in changes))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
