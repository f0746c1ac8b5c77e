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
    description:
      - 5-field cron of the dumps, in O(dump_timezone). A run is due each time it fires after the newest dump (before
        the first dump, after O(dumps_since)); a run not written O(dump_grace_minutes) after it was due is a FAIL
        naming how late it is. Before the first run is due, the check is INFO and says when it is due.
    type: str
    default: "0 16 * * *"
  dump_timezone:
    description: IANA time zone of O(dump_schedule) (the policy's C($.logical_dumps.timezone)).
    type: str
    default: UTC
  dump_grace_minutes:
    description: Minutes a dump (and a restore test) may take beyond the time it was due.
    type: int
    default: 120
  dumps_since:
    description:
      - When dumps were set up, as an ISO 8601 time (for example C(2026-12-01T16:00:00Z)). The first run is due at
        the first time the schedule fires after it. Empty takes the dump bucket's creation time (C(s3:ListAllMyBuckets)).
    type: str
    default: ""
  restore_test_every_days:
    description:
      - Cadence of restore tests (the policy's C($.logical_dumps.restore_test_every_days)). One is due this many
        days after the last (before the first, after O(dumps_since)); overdue by more than O(dump_grace_minutes)
        is a FAIL, and so is a test that did not pass.
    type: int
    default: 7
  url_parameter:
    description:
      - SSM name of the app's DATABASE_URL. Its age (the parameter's LastModifiedDate, read with
        C(ssm:DescribeParameters), so the value is not decrypted) is judged against O(url_rotation_every_days).
        Empty skips the check.
    type: str
    default: ""
  url_rotation_every_days:
    description:
      - Rotation cadence of the app's password (the inventory's C(rotate_app_password_every_days)); 0 for none (the
        age is INFO). The rotation is due this many days after the URL was written; overdue by more than
        O(url_rotation_grace_hours) is a FAIL naming how late.
    type: int
    default: 0
  url_rotation_grace_hours:
    description: Hours a due rotation may take to happen (the runner's daily tick and a retry).
    type: int
    default: 48
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


def _aware(when):
    return when if when is None or when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def dumps_since(module, s3, p):
    """When dumps were set up: O(dumps_since), else the dump bucket's creation time (None if neither is known)."""
    if p["dumps_since"]:
        try:
            return _aware(datetime.datetime.fromisoformat(p["dumps_since"].replace("Z", "+00:00")))
        except ValueError:
            module.fail_json(msg="dumps_since: %r is not an ISO 8601 time (for example 2026-12-01T16:00:00Z)" % p["dumps_since"])
    kwargs = {}
    while True:
        page = s3.list_buckets(**kwargs)
        for bucket in page.get("Buckets", []):
            if bucket["Name"] == p["dump_bucket"]:
                return _aware(bucket.get("CreationDate"))
        if not page.get("ContinuationToken"):
            return None
        kwargs["ContinuationToken"] = page["ContinuationToken"]


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
    since = dumps_since(module, s3, p)
    try:
        dumps = health.dump_freshness_check(_aware(newest["LastModified"]) if newest else None, p["dump_schedule"], now,
                                            since, p["dump_grace_minutes"], p["dump_timezone"])
    except (ValueError, LookupError) as e:  # zoneinfo raises a LookupError subclass for an unknown zone
        module.fail_json(msg="dump_schedule %r in %r: %s" % (p["dump_schedule"], p["dump_timezone"], e))
    if newest:
        dumps["detail"] += " (%s)" % newest["Key"].rsplit("/", 1)[-1]
    try:
        obj = s3.get_object(Bucket=p["dump_bucket"], Key=base + RESTORE_RECORD)
        record, tested_at = json.loads(obj["Body"].read()), _aware(obj["LastModified"])
    except is_boto3_error_code(["NoSuchKey", "404"]):
        record, tested_at = None, None
    return [dumps, health.restore_test_check(record, tested_at, now, since, p["restore_test_every_days"],
                                             p["dump_grace_minutes"])]


def url_check(ssm, p, now):
    """The app's DATABASE_URL age against the rotation cadence (metadata only: nothing is decrypted)."""
    found = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [p["url_parameter"]]}])
    params = found.get("Parameters", [])
    written = _aware(params[0]["LastModifiedDate"]) if params else None
    return health.url_age_check(written, now, p["url_rotation_every_days"], p["url_rotation_grace_hours"])


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
            dump_timezone=dict(type="str", default="UTC"),
            dump_grace_minutes=dict(type="int", default=120),
            dumps_since=dict(type="str", default=""),
            restore_test_every_days=dict(type="int", default=7),
            url_parameter=dict(type="str", default=""),
            url_rotation_every_days=dict(type="int", default=0),
            url_rotation_grace_hours=dict(type="int", default=48),
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
        if p["url_parameter"]:
            checks.append(url_check(module.client("ssm"), p, now))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not read the health of RDS instance %s" % ident)
    module.exit_json(changed=False, checks=checks, alarms_in_alarm=firing)


if __name__ == "__main__":
    main()
