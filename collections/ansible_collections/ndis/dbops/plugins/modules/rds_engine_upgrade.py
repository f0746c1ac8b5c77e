#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_engine_upgrade
short_description: Move an RDS instance to a new engine version - snapshot first, then the upgrade, waited for with progress
version_added: "0.3.0"
description:
  - When the instance runs another engine version than O(engine_version), in order - a manual snapshot named for
    the upgrade (C(<instance>-before-16-11-to-16-14)), waited for; C(ModifyDBInstance) with the new version, now
    (O(apply_immediately)) or queued for the maintenance window; then, applied now, a wait until the instance is
    C(available) on the new version, one progress line per poll in O(progress_file).
  - Resumes where a stopped run left off - an existing snapshot is waited for or kept, an instance already
    C(upgrading) is only waited for, a version already pending for the window is not asked again.
  - The version is assumed valid (the validate play's ndis.dbops.rds_preflight refuses a version that is not a
    valid upgrade target, or a class not orderable on it, before anything changes). A new major version without
    O(allow_major_version_upgrade) is refused here, before any change.
  - Check mode changes nothing and returns the steps with their downtime class (RV(steps), RV(table)).
  - Rolling back is restoring the snapshot into a new instance (RV(rollback)); RDS never downgrades.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance.
    type: str
    required: true
  engine_version:
    description: The full engine version to run (for example C(16.14)).
    type: str
    required: true
  apply_immediately:
    description: Upgrade now (an outage now); else queue it for the maintenance window.
    type: bool
    default: false
  allow_major_version_upgrade:
    description: Allow a new major version (RDS's C(AllowMajorVersionUpgrade)).
    type: bool
    default: false
  db_parameter_group_name:
    description: Parameter group to use with the new version (a new major needs one of its family); empty keeps the instance's.
    type: str
    default: ""
  snapshot:
    description: Take the manual snapshot first.
    type: bool
    default: true
  snapshot_tags:
    description: Tags of the snapshot.
    type: dict
    default: {}
  wait_timeout:
    description: Seconds to wait for the snapshot and for the upgrade each.
    type: int
    default: 3600
  poll_interval:
    description: Seconds between two reads of the instance (or snapshot) while waiting.
    type: float
    default: 15
  progress_file:
    description: File the waits append a progress line to per poll (for ndis.dbops.progress_wait).
    type: str
    default: ""
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Upgrade now, printing a line per poll
  ndis.dbops.rds_engine_upgrade:
    db_instance_identifier: ndis-chatbot-prod
    engine_version: "16.14"
    apply_immediately: true
    progress_file: /tmp/upgrade.progress
  async: 7500
  poll: 0
  register: job
"""

RETURN = r"""
current_version:
  description: The version the instance ran when the module started.
  returned: always
  type: str
engine_version:
  description: The version it runs when the module returns.
  returned: always
  type: str
state:
  description: C(in_step) (nothing to do), C(absent) (no instance), C(planned) (check mode), C(queued) (for the
    maintenance window), C(upgraded).
  returned: always
  type: str
steps:
  description: The steps in order, each with step, downtime and when; seconds where it ran.
  returned: always
  type: list
  elements: dict
table:
  description: RV(steps) as printable lines.
  returned: always
  type: list
  elements: str
snapshot_identifier:
  description: The pre-upgrade snapshot.
  returned: always
  type: str
rollback:
  description: The command that restores the pre-upgrade snapshot.
  returned: always
  type: str
message:
  description: One sentence on what happened and what comes next.
  returned: always
  type: str
"""

import time

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import engine_upgrade as eu
from ansible_collections.ndis.dbops.plugins.module_utils import progress as prog
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance


def _snapshot(client, ident):
    try:
        return client.describe_db_snapshots(DBSnapshotIdentifier=ident)["DBSnapshots"][0]
    except is_boto3_error_code("DBSnapshotNotFound"):
        return None


def run(module, client):
    p = module.params
    ident, target = p["db_instance_identifier"], p["engine_version"]
    out = dict(changed=False, current_version="", engine_version="", state="absent", steps=[], table=[],
               snapshot_identifier="", rollback="", message="")
    inst = describe_instance(client, ident)
    if inst is None:
        out["message"] = "%s does not exist: it is created on %s, nothing to upgrade" % (ident, target)
        return out
    current, status = inst["EngineVersion"], inst.get("DBInstanceStatus")
    pending = (inst.get("PendingModifiedValues") or {}).get("EngineVersion")
    window = inst.get("PreferredMaintenanceWindow") or "?"
    snap = eu.snapshot_identifier(ident, current, target)
    out.update(current_version=current, engine_version=current, snapshot_identifier=snap,
               rollback=eu.rollback_command(ident, snap, module.region))
    if current == target and status == "available":
        out.update(state="in_step", message="%s runs %s" % (ident, target))
        return out
    if eu.is_major(current, target) and not p["allow_major_version_upgrade"]:
        module.fail_json(msg="%s: %s -> %s is a major version upgrade. Declare it on purpose: set "
                             "rds_instance_allow_major_version_upgrade: true and a parameter group of family postgres%s "
                             "(docs/upgrades.md). Nothing was changed." % (ident, current, target, target.split(".")[0]),
                         **out)
    out["steps"] = eu.steps(ident, current, target, p["apply_immediately"], window, p["snapshot"],
                            bool(inst.get("MultiAZ")))
    out["table"] = eu.table(out["steps"])
    if pending == target and not p["apply_immediately"] and status == "available":
        out.update(state="queued", message="%s: %s is queued for the maintenance window %s (UTC); the database steps "
                   "run on the first run after it" % (ident, target, window))
        return out
    if module.check_mode:
        out.update(changed=True, state="planned", message="would upgrade %s from %s to %s %s" % (
            ident, current, target, "now" if p["apply_immediately"] else "in the maintenance window " + window))
        return out

    progress = prog.ProgressFile(p["progress_file"])
    seconds = {}
    if p["snapshot"]:
        started = time.monotonic()
        found = _snapshot(client, snap)
        if found is None and status != "upgrading":
            progress.line("snapshot " + snap, "creating")
            tags = [{"Key": k, "Value": str(v)} for k, v in (p["snapshot_tags"] or {}).items()]
            client.create_db_snapshot(DBSnapshotIdentifier=snap, DBInstanceIdentifier=ident, Tags=tags)
            out["changed"] = True
        while found is None or found.get("Status") != "available":
            found = _snapshot(client, snap)
            if found is None and status == "upgrading":
                break  # an upgrade already under way (started by hand or by RDS): nothing to snapshot now
            if found is not None and found.get("Status") == "available":
                break
            if time.monotonic() - started > p["wait_timeout"]:
                module.fail_json(msg="snapshot %s is still %s after %d s; the next run waits for it again, and "
                                     "upgrades only once it is available" % (snap, (found or {}).get("Status"),
                                                                            p["wait_timeout"]), **out)
            progress.line("snapshot " + snap, (found or {}).get("Status") or "requested",
                          (found or {}).get("PercentProgress"), 100 if found else None)
            time.sleep(p["poll_interval"])
        seconds["snapshot"] = round(time.monotonic() - started, 1)
        progress.line("snapshot " + snap, "available")

    started = time.monotonic()
    if status != "upgrading" and (pending != target or p["apply_immediately"]):
        kwargs = dict(DBInstanceIdentifier=ident, EngineVersion=target, ApplyImmediately=p["apply_immediately"])
        if p["allow_major_version_upgrade"]:
            kwargs["AllowMajorVersionUpgrade"] = True
        if p["db_parameter_group_name"]:
            kwargs["DBParameterGroupName"] = p["db_parameter_group_name"]
        client.modify_db_instance(**kwargs)
        out["changed"] = True
        progress.line("engine upgrade %s %s -> %s" % (ident, current, target),
                      "requested (%s)" % ("now" if p["apply_immediately"] else "maintenance window " + window))
    if not p["apply_immediately"]:
        out.update(state="queued", message="%s: %s is queued for the maintenance window %s (UTC): RDS applies it "
                   "then, with an outage; the database steps run on the first run after it" % (ident, target, window))
        return out
    what = "engine upgrade %s %s -> %s" % (ident, current, target)
    while True:
        inst = describe_instance(client, ident) or {}
        if inst.get("DBInstanceStatus") == "available" and inst.get("EngineVersion") == target:
            break
        if time.monotonic() - started > p["wait_timeout"]:
            module.fail_json(msg="%s is still %s on %s after %d s; the next run waits again (the upgrade goes on in "
                                 "RDS). Its events: aws rds describe-events --source-identifier %s --source-type "
                                 "db-instance" % (ident, inst.get("DBInstanceStatus"), inst.get("EngineVersion"),
                                                  p["wait_timeout"], ident), **out)
        progress.line(what, "%s on %s" % (inst.get("DBInstanceStatus"), inst.get("EngineVersion")))
        time.sleep(p["poll_interval"])
    seconds["upgrade"] = round(time.monotonic() - started, 1)
    progress.line(what, "available on " + target)
    for s in out["steps"]:
        key = "snapshot" if s["step"].startswith("snapshot") else "upgrade" if s["step"].startswith(("modify", "wait")) else None
        if key in seconds:
            s["seconds"] = seconds[key]
    out.update(changed=True, state="upgraded", engine_version=target,
               message="%s runs %s (snapshot %s %.1f s, upgrade %.1f s)" % (
                   ident, target, snap, seconds.get("snapshot", 0), seconds["upgrade"]))
    return out


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            engine_version=dict(type="str", required=True),
            apply_immediately=dict(type="bool", default=False),
            allow_major_version_upgrade=dict(type="bool", default=False),
            db_parameter_group_name=dict(type="str", default=""),
            snapshot=dict(type="bool", default=True),
            snapshot_tags=dict(type="dict", default={}),
            wait_timeout=dict(type="int", default=3600),
            poll_interval=dict(type="float", default=15),
            progress_file=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module, module.client("rds"))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not upgrade %s to %s; nothing after the failed call ran, and the next run "
                                    "resumes from there" % (module.params["db_instance_identifier"],
                                                            module.params["engine_version"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
