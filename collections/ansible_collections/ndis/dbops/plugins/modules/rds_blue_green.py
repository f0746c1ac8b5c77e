#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_blue_green
short_description: A major engine upgrade as an RDS blue/green deployment - create, switch over, delete the old blue
version_added: "0.4.0"
description:
  - O(phase=deploy) - refuses an instance whose master password RDS manages (AWS does not support blue/green
    deployments with it), sets C(rds.logical_replication = 1) in the blue's parameter group and reboots it when
    needed and allowed (O(allow_reboot)), creates the deployment C(<instance>-to-postgres<major>) with the green on
    O(engine_version) and O(target_parameter_group_name), and waits until it is C(AVAILABLE), a line per poll.
  - O(phase=switchover) - checks the guardrails AWS documents that can be read before asking (deployment
    C(AVAILABLE), both instances available with nothing pending, green on the target), switches over with
    O(switchover_timeout) and waits for C(SWITCHOVER_COMPLETED). RDS rolls back on its own when replica lag, long
    writes or DDL stop it; the module then fails saying blue still serves.
  - O(phase=cleanup) - after a switchover, the old blue (C(<instance>-old1)) is kept; with O(delete_old_blue) it is
    deleted (its deletion protection turned off, a final snapshot C(<old blue>-final) taken) and the deployment
    record with it. Without it, the module only says what is kept.
  - Every phase reads the deployment by its name first, so a run stopped anywhere resumes. Check mode changes
    nothing and returns the steps with their downtime class.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance (blue), by the name the app's endpoint carries.
    type: str
    required: true
  engine_version:
    description: The target version of the green (for example C(17.7)); for O(phase=cleanup) it may be empty.
    type: str
    default: ""
  target_parameter_group_name:
    description: The green's parameter group (of the target family, created beforehand).
    type: str
    default: ""
  phase:
    description: Which part to run.
    type: str
    choices: [deploy, switchover, cleanup]
    required: true
  switchover_timeout:
    description: Seconds RDS may take to switch over before it rolls back (30-3600).
    type: int
    default: 300
  allow_reboot:
    description: Reboot the blue when rds.logical_replication must be turned on (an outage now).
    type: bool
    default: false
  delete_old_blue:
    description: With O(phase=cleanup), delete the old blue left by a switchover, and the deployment record.
    type: bool
    default: false
  tags:
    description: Tags of the deployment.
    type: dict
    default: {}
  wait_timeout:
    description: Seconds to wait for the deployment, the reboot and the switchover, each.
    type: int
    default: 7200
  poll_interval:
    description: Seconds between two reads while waiting.
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
- name: Create the green on PostgreSQL 17 and wait for it
  ndis.dbops.rds_blue_green:
    db_instance_identifier: ndis-chatbot-prod
    engine_version: "17.7"
    target_parameter_group_name: ndis-chatbot-prod-postgres17
    phase: deploy

- name: Switch over once the green is checked
  ndis.dbops.rds_blue_green:
    db_instance_identifier: ndis-chatbot-prod
    engine_version: "17.7"
    phase: switchover
    switchover_timeout: 300

- name: Delete the old blue, on purpose
  ndis.dbops.rds_blue_green:
    db_instance_identifier: ndis-chatbot-prod
    phase: cleanup
    delete_old_blue: true
"""

RETURN = r"""
state:
  description: C(absent) (no instance), C(in_step) (nothing to do), C(planned) (check mode), C(green_available),
    C(switched), C(kept) (an old blue is kept), C(deleted).
  returned: always
  type: str
deployment:
  description: The deployment as AWS describes it (identifier, name, status, source and target ARNs); empty when none.
  returned: always
  type: dict
green:
  description: The green instance (identifier, endpoint address and port, engine version); empty when none.
  returned: always
  type: dict
old_blue:
  description: The old blue kept after a switchover (its identifier); empty when none.
  returned: always
  type: str
steps:
  description: The steps in order, each with step, downtime and when.
  returned: always
  type: list
  elements: dict
table:
  description: RV(steps) as printable lines.
  returned: always
  type: list
  elements: str
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
from ansible_collections.ndis.dbops.plugins.module_utils import blue_green as bg
from ansible_collections.ndis.dbops.plugins.module_utils import progress as prog
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance, paginate


def find_deployment(client, ident, target=""):
    """The deployment of this instance: by name when the target is known, else any named <ident>-to-postgres*."""
    if target:
        name = bg.deployment_name(ident, target)
        found = client.describe_blue_green_deployments(Filters=[dict(Name="blue-green-deployment-name", Values=[name])])
        found = [d for d in found.get("BlueGreenDeployments", []) if d.get("BlueGreenDeploymentName") == name]
    else:
        found = client.describe_blue_green_deployments().get("BlueGreenDeployments", [])
        found = [d for d in found if d.get("BlueGreenDeploymentName", "").startswith(ident + "-to-postgres")]
    return found[0] if found else None


def _summary(d):
    return dict((k, d.get(k)) for k in ("BlueGreenDeploymentIdentifier", "BlueGreenDeploymentName", "Status", "Source",
                                        "Target", "StatusDetails")) if d else {}


def _green(client, deployment):
    inst = describe_instance(client, bg.identifier_of(deployment.get("Target"))) if deployment else None
    if not inst:
        return {}
    endpoint = inst.get("Endpoint") or {}
    return dict(identifier=inst["DBInstanceIdentifier"], address=endpoint.get("Address", ""),
                port=endpoint.get("Port"), engine_version=inst.get("EngineVersion"), status=inst.get("DBInstanceStatus"))


class Waiter(object):
    def __init__(self, module, progress):
        self.module, self.progress = module, progress

    def until(self, what, read, done, failed=None):
        """Poll read() until done(value); a line per poll; fail on failed(value) or the timeout."""
        p, started = self.module.params, time.monotonic()
        while True:
            value, phase = read()
            if done(value):
                self.progress.line(what, phase)
                return value
            if failed and failed(value):
                return value
            if time.monotonic() - started > p["wait_timeout"]:
                self.module.fail_json(msg="%s: still %s after %d s; the next run waits for it again (it goes on in RDS)"
                                          % (what, phase, p["wait_timeout"]))
            self.progress.line(what, phase)
            time.sleep(p["poll_interval"])


def deploy(module, client, out, waiter):
    p = module.params
    ident, target = p["db_instance_identifier"], p["engine_version"]
    blue = describe_instance(client, ident)
    if blue is None:
        out["message"] = "%s does not exist: it is created on %s, nothing to upgrade" % (ident, target)
        return out
    deployment = find_deployment(client, ident, target)
    if deployment and deployment.get("Status") == "SWITCHOVER_COMPLETED":
        out.update(state="switched", deployment=_summary(deployment), old_blue=bg.identifier_of(deployment.get("Source")),
                   message="%s was switched over to %s" % (ident, target))
        return out
    if not deployment and blue.get("EngineVersion") == target:
        out.update(state="in_step", message="%s runs %s" % (ident, target))
        return out
    group = ((blue.get("DBParameterGroups") or [{}])[0]).get("DBParameterGroupName")
    params = paginate(client, "describe_db_parameters", "Parameters", DBParameterGroupName=group) if group else []
    logical = bg.logical_replication(params)
    out["steps"] = bg.steps(ident, blue["EngineVersion"], target, p["target_parameter_group_name"], p["switchover_timeout"],
                            logical="1" if deployment else logical)
    out["table"] = bg.table(out["steps"])
    if not deployment:
        if blue.get("MasterUserSecret"):
            module.fail_json(msg=bg.MANAGED_PASSWORD_REFUSAL % ident, **out)
        if logical != "1" and not p["allow_reboot"]:
            module.fail_json(msg="%s: a blue/green major upgrade replicates logically, so rds.logical_replication must be 1 "
                                 "in %s (static: the blue reboots, an outage of a minute or two). Allow it for this run "
                                 "with rds_instance_allow_outage: true, or set it in a quiet hour (rds_instance_parameters "
                                 "on the 16 group, rds_instance_allow_reboot: true). Nothing was changed." % (ident, group),
                             **out)
        if p["target_parameter_group_name"] and not module.check_mode:
            try:
                client.describe_db_parameter_groups(DBParameterGroupName=p["target_parameter_group_name"])
                found = True
            except is_boto3_error_code("DBParameterGroupNotFound"):
                found = False
            if not found:
                module.fail_json(msg="%s: the green's parameter group %s does not exist (the network step creates it from "
                                     "rds_instance_parameter_group_name)" % (ident, p["target_parameter_group_name"]),
                                 **out)
    if module.check_mode:
        out.update(changed=True, state="planned", deployment=_summary(deployment),
                   message="would %s blue/green deployment %s: green on %s, then switch over" % (
                       "resume" if deployment else "create", bg.deployment_name(ident, target), target))
        return out
    what = "blue/green %s" % bg.deployment_name(ident, target)
    if not deployment:
        if logical != "1":
            waiter.progress.line(what, "setting rds.logical_replication = 1 in %s, rebooting %s" % (group, ident))
            client.modify_db_parameter_group(DBParameterGroupName=group, Parameters=[dict(
                ParameterName="rds.logical_replication", ParameterValue="1", ApplyMethod="pending-reboot")])
            client.reboot_db_instance(DBInstanceIdentifier=ident)
            out["changed"] = True
            time.sleep(min(p["poll_interval"], 1))
            waiter.until("reboot %s" % ident, lambda: (lambda i: (i, (i or {}).get("DBInstanceStatus")))(
                describe_instance(client, ident)), lambda i: (i or {}).get("DBInstanceStatus") == "available")
        arn = blue["DBInstanceArn"]
        kwargs = dict(BlueGreenDeploymentName=bg.deployment_name(ident, target), Source=arn, TargetEngineVersion=target,
                      Tags=[{"Key": k, "Value": str(v)} for k, v in (p["tags"] or {}).items()])
        if p["target_parameter_group_name"]:
            kwargs["TargetDBParameterGroupName"] = p["target_parameter_group_name"]
        waiter.progress.line(what, "creating (green on %s)" % target)
        deployment = client.create_blue_green_deployment(**kwargs)["BlueGreenDeployment"]
        out["changed"] = True

    def read():
        d = find_deployment(client, ident, target)
        tasks = ", ".join("%s %s" % (t.get("Name"), t.get("Status")) for t in (d or {}).get("Tasks", []))
        return d, "%s%s" % ((d or {}).get("Status"), " (%s)" % tasks if tasks else "")

    deployment = waiter.until(what, read, lambda d: (d or {}).get("Status") == "AVAILABLE",
                              lambda d: (d or {}).get("Status") in bg.FAILED)
    if deployment.get("Status") != "AVAILABLE":
        module.fail_json(msg="%s is %s: %s. Blue keeps serving. Delete the deployment (aws rds delete-blue-green-deployment "
                             "--blue-green-deployment-identifier %s --delete-target), fix the cause and run again"
                             % (what, deployment.get("Status"), deployment.get("StatusDetails"),
                                deployment.get("BlueGreenDeploymentIdentifier")), **out)
    out.update(state="green_available", deployment=_summary(deployment), green=_green(client, deployment),
               message="%s: green %s is available on %s; blue %s keeps serving until the switchover" % (
                   what, bg.identifier_of(deployment.get("Target")), target, ident))
    return out


def switchover(module, client, out, waiter):
    p = module.params
    ident, target = p["db_instance_identifier"], p["engine_version"]
    deployment = find_deployment(client, ident, target)
    if not deployment:
        module.fail_json(msg="%s: no blue/green deployment %s to switch over (the deploy phase creates it)"
                             % (ident, bg.deployment_name(ident, target)), **out)
    what = "switchover %s" % deployment["BlueGreenDeploymentName"]
    out["deployment"] = _summary(deployment)
    if deployment.get("Status") == "SWITCHOVER_COMPLETED":
        out.update(state="switched", old_blue=bg.identifier_of(deployment.get("Source")),
                   message="%s runs %s; the old blue %s is kept" % (ident, target, bg.identifier_of(deployment.get("Source"))))
        return out
    if deployment.get("Status") != "SWITCHOVER_IN_PROGRESS":
        blue = describe_instance(client, bg.identifier_of(deployment.get("Source")))
        green = describe_instance(client, bg.identifier_of(deployment.get("Target")))
        problems = bg.guardrails(deployment, blue, green, target)
        if problems:
            module.fail_json(msg="%s: not switching over, blue keeps serving (nothing was changed): %s"
                                 % (what, " | ".join(problems)), **out)
        if module.check_mode:
            out.update(changed=True, state="planned", message="would switch %s over to %s (timeout %d s)"
                       % (ident, target, p["switchover_timeout"]))
            return out
        waiter.progress.line(what, "requested (timeout %d s)" % p["switchover_timeout"])
        client.switchover_blue_green_deployment(BlueGreenDeploymentIdentifier=deployment["BlueGreenDeploymentIdentifier"],
                                                SwitchoverTimeout=p["switchover_timeout"])
        out["changed"] = True
    elif module.check_mode:
        out.update(state="planned", message="%s is under way; the real run waits for it" % what)
        return out

    def read():
        d = find_deployment(client, ident, target) or {}
        return d, d.get("Status")

    deployment = waiter.until(what, read, lambda d: d.get("Status") == "SWITCHOVER_COMPLETED",
                              lambda d: d.get("Status") in bg.FAILED)
    if deployment.get("Status") != "SWITCHOVER_COMPLETED":
        module.fail_json(msg="%s: %s (%s). RDS rolled back: blue still serves on the old version. Fix the cause (replica "
                             "lag, long transactions, DDL), then run again" % (what, deployment.get("Status"),
                                                                              deployment.get("StatusDetails")), **out)
    old = bg.identifier_of(deployment.get("Source"))
    out.update(changed=True, state="switched", deployment=_summary(deployment), old_blue=old,
               message="%s runs %s (the green took its name and endpoint); the old blue %s is kept until a run with "
                       "rds_instance_blue_green_delete_old_blue: true deletes it" % (ident, target, old))
    return out


def cleanup(module, client, out, waiter):
    p = module.params
    ident = p["db_instance_identifier"]
    deployment = find_deployment(client, ident, p["engine_version"])
    if not deployment or deployment.get("Status") != "SWITCHOVER_COMPLETED":
        out.update(state="in_step", deployment=_summary(deployment), message="%s: no old blue to keep or delete" % ident)
        return out
    old = bg.identifier_of(deployment.get("Source"))
    old_inst = describe_instance(client, old)
    out.update(deployment=_summary(deployment), old_blue=old if old_inst else "")
    if not p["delete_old_blue"]:
        out.update(state="kept", message="%s: the old blue %s (%s) is kept; delete it on purpose with "
                   "rds_instance_blue_green_delete_old_blue: true" % (ident, old, (old_inst or {}).get("EngineVersion", "gone")))
        return out
    if module.check_mode:
        out.update(changed=True, state="planned", message="would delete the old blue %s (final snapshot %s-final) and "
                   "the deployment %s" % (old, old, deployment["BlueGreenDeploymentName"]))
        return out
    if old_inst:
        if old_inst.get("DeletionProtection"):
            client.modify_db_instance(DBInstanceIdentifier=old, DeletionProtection=False, ApplyImmediately=True)
        waiter.progress.line("old blue " + old, "deleting (final snapshot %s-final)" % old)
        client.delete_db_instance(DBInstanceIdentifier=old, FinalDBSnapshotIdentifier=old + "-final",
                                  DeleteAutomatedBackups=False)
    client.delete_blue_green_deployment(BlueGreenDeploymentIdentifier=deployment["BlueGreenDeploymentIdentifier"])
    out.update(changed=True, state="deleted", message="%s: the old blue %s is deleted (final snapshot %s-final) and the "
               "deployment %s with it" % (ident, old, old, deployment["BlueGreenDeploymentName"]))
    return out


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            engine_version=dict(type="str", default=""),
            target_parameter_group_name=dict(type="str", default=""),
            phase=dict(type="str", required=True, choices=["deploy", "switchover", "cleanup"]),
            switchover_timeout=dict(type="int", default=300),
            allow_reboot=dict(type="bool", default=False),
            delete_old_blue=dict(type="bool", default=False),
            tags=dict(type="dict", default={}),
            wait_timeout=dict(type="int", default=7200),
            poll_interval=dict(type="float", default=15),
            progress_file=dict(type="str", default=""),
        ),
        required_if=[("phase", "deploy", ["engine_version"]), ("phase", "switchover", ["engine_version"])],
        supports_check_mode=True,
    )
    p = module.params
    if not 30 <= p["switchover_timeout"] <= 3600:
        module.fail_json(msg="switchover_timeout %d s: RDS takes 30 to 3600" % p["switchover_timeout"])
    out = dict(changed=False, state="absent", deployment={}, green={}, old_blue="", steps=[], table=[], message="")
    waiter = Waiter(module, prog.ProgressFile(p["progress_file"] if not module.check_mode else ""))
    try:
        result = dict(deploy=deploy, switchover=switchover, cleanup=cleanup)[p["phase"]](module, module.client("rds"), out, waiter)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not run the %s phase of the blue/green upgrade of %s; nothing after the failed "
                                    "call ran, and the next run resumes from the deployment AWS keeps"
                                    % (p["phase"], p["db_instance_identifier"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
