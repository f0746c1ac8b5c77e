#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# Read-only: the checks of playbooks/health.yml that AWS answers, in one call (the *_info
# modules would be one task each, with the verdicts in Jinja).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_health_info
short_description: Health checks AWS answers for an RDS instance (alarms, status, maintenance, storage, backups)
version_added: "0.1.0"
description:
  - CloudWatch alarms in ALARM whose name starts with O(alarm_prefix), named; the instance's status;
    pending maintenance actions, pending modifications and a parameter group waiting for a reboot;
    storage headroom (free storage from CloudWatch, allocated storage against the autoscaling ceiling);
    the age of the latest restorable time (RPO); the age of the newest logical dump against its
    schedule; the result and age of the last restore test (recorded next to the dumps by C(dbops-dump restore-test)).
  - Reads only; supports check mode. AWS connection options come from the C(aws) module defaults group.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance.
    type: str
    required: true
  alarm_prefix:
    description: Alarms whose name starts with this belong to the instance; default the identifier and a dash.
    type: str
  rpo_max_minutes:
    description: Oldest acceptable latest restorable time, in minutes.
    type: int
    default: 15
  dump_bucket:
    description: Bucket of the logical dumps; empty skips the dump and restore test checks.
    type: str
    default: ""
  dump_prefix:
    description: Key prefix of the dumps.
    type: str
    default: ""
  dump_database:
    description: Database whose dumps are checked.
    type: str
    default: ""
  dump_schedule:
    description: 5-field cron of the dumps; the newest may be as old as the longest gap between two runs plus O(dump_grace_minutes).
    type: str
    default: "0 16 * * *"
  dump_grace_minutes:
    description: Minutes a dump may take beyond its schedule.
    type: int
    default: 120
  restore_test_max_age_days:
    description: A restore test older than this is a warning.
    type: int
    default: 8
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read the instance's health from AWS
  ndis.dbops.rds_health_info:
    db_instance_identifier: ndis-chatbot-prod
    dump_bucket: ndis-chatbot-prod-dumps
    dump_database: ndis_chatbot
  register: aws_health
"""

RETURN = r"""
checks:
  description: One per check - name, status (PASS, WARN, FAIL, INFO) and detail.
  returned: always
  type: list
  elements: dict
alarms_in_alarm:
  description: Names of the instance's alarms in ALARM.
  returned: always
  type: list
  elements: str
"""

import datetime
import json

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import health

RESTORE_RECORD = "restore-test.json"  # next to the dumps, written by dbops-dump restore-test


def _age(now, when):
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0, int((now - when).total_seconds()))


def alarm_checks(cw, prefix):
    pages = cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
    alarms = [a for page in pages for a in page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])]
    firing = sorted(a["AlarmName"] for a in alarms if a.get("StateValue") == "ALARM")
    if not alarms:
        return [health.check("CloudWatch alarms", health.FAIL, "no alarms named %s*: run site.yml (monitoring)" % prefix)], []
    if firing:
        reasons = dict((a["AlarmName"], a.get("StateReason", "")) for a in alarms)
        return [health.check("CloudWatch alarms", health.FAIL, "%d of %d in ALARM: %s" % (
            len(firing), len(alarms), "; ".join("%s (%s)" % (n, health.short(reasons[n], 50)) for n in firing)))], firing
    states = {}
    for a in alarms:
        states[a.get("StateValue")] = states.get(a.get("StateValue"), 0) + 1
    return [health.check("CloudWatch alarms", health.PASS, "none in ALARM (%s)" % ", ".join(
        "%d %s" % (n, s) for s, n in sorted(states.items())))], []


def instance_checks(rds, cw, inst, now):
    out = []
    status = inst.get("DBInstanceStatus")
    out.append(health.check("RDS instance", health.PASS if status == "available" else health.FAIL,
                            "%s: %s, %s %s, %s%s" % (inst["DBInstanceIdentifier"], status, inst.get("Engine"),
                                                     inst.get("EngineVersion"), inst.get("DBInstanceClass"),
                                                     ", Multi-AZ" if inst.get("MultiAZ") else "")))
    pending = []
    try:
        actions = rds.describe_pending_maintenance_actions(ResourceIdentifier=inst["DBInstanceArn"])
        for res in actions.get("PendingMaintenanceActions", []):
            for a in res.get("PendingMaintenanceActionDetails", []):
                when = a.get("CurrentApplyDate") or a.get("AutoAppliedAfterDate") or a.get("ForcedApplyDate")
                pending.append("%s%s" % (a.get("Action"), " from %s" % when.strftime("%Y-%m-%d") if when else ""))
    except is_boto3_error_code(["InvalidParameterValue", "ResourceNotFoundFault"]):
        pass
    modified = sorted((inst.get("PendingModifiedValues") or {}).keys())
    if modified:
        pending.append("pending modifications: " + ", ".join(modified))
    if any(g.get("ParameterApplyStatus") == "pending-reboot" for g in inst.get("DBParameterGroups") or []):
        pending.append("parameter group waits for a reboot")
    out.append(health.check("Pending maintenance", health.WARN if pending else health.PASS,
                            "; ".join(pending) or "none; window %s" % inst.get("PreferredMaintenanceWindow")))
    allocated, ceiling = int(inst.get("AllocatedStorage") or 0), int(inst.get("MaxAllocatedStorage") or 0)
    stats = cw.get_metric_statistics(Namespace="AWS/RDS", MetricName="FreeStorageSpace", Statistics=["Minimum"],
                                     Dimensions=[{"Name": "DBInstanceIdentifier", "Value": inst["DBInstanceIdentifier"]}],
                                     StartTime=now - datetime.timedelta(minutes=30), EndTime=now, Period=300)
    points = sorted(stats.get("Datapoints", []), key=lambda d: d["Timestamp"])
    free = points[-1]["Minimum"] if points else None
    autoscaling = ceiling > allocated
    at_ceiling = not autoscaling or allocated >= 0.9 * ceiling
    detail = "%s GiB allocated, ceiling %s" % (allocated, ("%d GiB" % ceiling) if autoscaling else "none (no autoscaling)")
    if free is None:
        detail = "free space: no datapoints in 30 min; " + detail
        status = health.WARN if autoscaling and allocated >= 0.9 * ceiling else health.INFO
    else:
        share = free / float(allocated * 1024 ** 3) if allocated else 0.0
        detail = "%.1f GiB free (%d%%); %s" % (free / 1024.0 ** 3, round(share * 100), detail)
        status = health.FAIL if share < 0.1 and at_ceiling else health.WARN if share < 0.2 or (autoscaling and at_ceiling) else health.PASS
    out.append(health.check("Storage headroom", status, detail))
    return out


def dump_checks(module, s3, p, now):
    base = "%s%s/" % (p["dump_prefix"] if not p["dump_prefix"] or p["dump_prefix"].endswith("/") else p["dump_prefix"] + "/",
                      p["dump_database"])
    newest = None
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=p["dump_bucket"], Prefix=base):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".manifest.json") and (newest is None or obj["Key"] > newest["Key"]):
                    newest = obj
    except is_boto3_error_code("NoSuchBucket"):
        return [health.check("Newest logical dump", health.FAIL, "bucket %s does not exist: run site.yml" % p["dump_bucket"])]
    try:
        dumps = health.dump_age_check(_age(now, newest["LastModified"]) if newest else None, p["dump_schedule"],
                                      p["dump_grace_minutes"])
    except ValueError as e:
        module.fail_json(msg="dump_schedule: %s" % e)
    if newest:
        dumps["detail"] += " (%s)" % newest["Key"].rsplit("/", 1)[-1]
    try:
        obj = s3.get_object(Bucket=p["dump_bucket"], Key=base + RESTORE_RECORD)
        record, age = json.loads(obj["Body"].read()), _age(now, obj["LastModified"])
    except is_boto3_error_code(["NoSuchKey", "404"]):
        record, age = None, None
    return [dumps, health.restore_test_check(record, age, p["restore_test_max_age_days"])]


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            alarm_prefix=dict(type="str"),
            rpo_max_minutes=dict(type="int", default=15),
            dump_bucket=dict(type="str", default=""),
            dump_prefix=dict(type="str", default=""),
            dump_database=dict(type="str", default=""),
            dump_schedule=dict(type="str", default="0 16 * * *"),
            dump_grace_minutes=dict(type="int", default=120),
            restore_test_max_age_days=dict(type="int", default=8),
        ),
        supports_check_mode=True,
    )
    p = module.params
    ident = p["db_instance_identifier"]
    now = datetime.datetime.now(datetime.timezone.utc)
    checks, firing = [], []
    try:
        rds, cw = module.client("rds"), module.client("cloudwatch")
        alarms, firing = alarm_checks(cw, p["alarm_prefix"] or ident + "-")
        checks.extend(alarms)
        try:
            inst = rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
        except is_boto3_error_code("DBInstanceNotFound"):
            inst = None
        if inst is None:
            checks.append(health.check("RDS instance", health.FAIL, "%s does not exist" % ident))
        else:
            checks.extend(instance_checks(rds, cw, inst, now))
            checks.append(health.rpo_check(_age(now, inst.get("LatestRestorableTime"))
                                           if inst.get("BackupRetentionPeriod") else None, p["rpo_max_minutes"]))
        if p["dump_bucket"]:
            checks.extend(dump_checks(module, module.client("s3"), p, now))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not read the health of RDS instance %s" % ident)
    module.exit_json(changed=False, checks=checks, alarms_in_alarm=firing)


if __name__ == "__main__":
    main()
