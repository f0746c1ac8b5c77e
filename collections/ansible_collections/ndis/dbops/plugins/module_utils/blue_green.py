# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""A major engine upgrade as an RDS blue/green deployment: names, steps, guardrails.

Pure functions (``ndis.dbops.rds_blue_green`` makes the calls). How far a deployment got lives
in AWS (DescribeBlueGreenDeployments: PROVISIONING, AVAILABLE, SWITCHOVER_IN_PROGRESS,
SWITCHOVER_COMPLETED, ...), so a run stopped at any step resumes from the deployment it finds by
its name. AWS's documented limits (RDS User Guide, "Limitations and considerations for Amazon RDS
blue/green deployments", "Switching a blue/green deployment") are cited in
module_utils/major_upgrade.py; the ones acted on here:
- no RDS-managed master password (Secrets Manager) on the blue;
- for a major version, the blue's group has rds.logical_replication = 1 (static: a reboot);
- before the switchover, both environments are available with no pending modification and the
  green runs the target; RDS then checks replica lag, long-running writes and DDL itself during
  the switchover and rolls back when one fails, within the timeout (30-3600 s);
- after the switchover the old blue stays, renamed ``<name>-old1``, until it is deleted (the
  deployment cannot delete it: DeleteTarget applies to the green before a switchover only).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

NONE = "none"
REBOOT = "outage (a reboot)"
SWITCHOVER = "switchover: writes stop until green takes the endpoint (typically under a minute)"

PROVISIONING = ("PROVISIONING",)
FAILED = ("INVALID_CONFIGURATION", "PROVISIONING_FAILED", "SWITCHOVER_FAILED")
MANAGED_PASSWORD_REFUSAL = (
    "%s: RDS blue/green deployments are not supported for an instance whose master password RDS manages in Secrets "
    "Manager (AWS: \"Limitations for blue/green deployments\"), and this one's is. Nothing was changed. Instead, "
    "either move the password to SSM first: set rds_instance_master_password_mode: ssm and run the site (applied "
    "at once, no restart; docs/secrets-and-tls.md), then run again with blue_green; or upgrade in place: set "
    "rds_instance_major_upgrade_method: in_place (an outage while pg_upgrade runs)")


def family_of(version):
    return "postgres%s" % str(version).split(".")[0]


def deployment_name(ident, target):
    """``<instance>-to-postgres17``: found again by a later run (names are unique per account and region)."""
    return "%s-to-%s" % (ident, family_of(target))


def identifier_of(arn):
    """The instance identifier in an RDS ARN (``arn:aws:rds:...:db:<id>``)."""
    return str(arn or "").split(":db:")[-1]


def logical_replication(parameters):
    """The value of rds.logical_replication in a describe_db_parameters list ("0" when unset)."""
    for p in parameters:
        if p.get("ParameterName") == "rds.logical_replication":
            return str(p.get("ParameterValue", "0"))
    return "0"


def guardrails(deployment, blue, green, target):
    """What stops a switchover before it is asked (each with the fix); empty when it can go."""
    problems = []
    if (deployment or {}).get("Status") != "AVAILABLE":
        problems.append("the deployment is %s, not AVAILABLE" % (deployment or {}).get("Status"))
    for role, inst in (("blue", blue), ("green", green)):
        if not inst:
            problems.append("the %s instance is gone" % role)
            continue
        name = inst.get("DBInstanceIdentifier")
        if inst.get("DBInstanceStatus") != "available":
            problems.append("%s %s is %s, not available: wait for it" % (role, name, inst.get("DBInstanceStatus")))
        if inst.get("PendingModifiedValues"):
            problems.append("%s %s has pending modifications %s: apply them (or wait for them) first"
                            % (role, name, sorted(inst["PendingModifiedValues"])))
    if green and green.get("EngineVersion") != target:
        problems.append("green %s runs %s, not %s" % (green.get("DBInstanceIdentifier"), green.get("EngineVersion"), target))
    return problems


def steps(ident, current, target, group, timeout, logical="1", delete_old_blue=False):
    """The blue/green steps in order, each {step, downtime, when}."""
    out = []
    if str(logical) != "1":
        out.append(dict(step="set rds.logical_replication = 1 in the blue's parameter group and reboot %s" % ident,
                        downtime=REBOOT, when="now (rds_instance_allow_outage)"))
    out += [
        dict(step="create blue/green deployment %s: green on %s with parameter group %s (no schema change until the "
                  "switchover)" % (deployment_name(ident, target), target, group),
             downtime=NONE + " (blue serves; green is copied and catches up)", when="now"),
        dict(step="wait for the deployment AVAILABLE, a line per poll", downtime=NONE, when="now"),
        dict(step="on green: ANALYZE, REINDEX per the rule and ALTER EXTENSION vector UPDATE, recall measured at or "
                  "above the threshold (else stop: blue keeps serving)", downtime=NONE, when="now"),
        dict(step="guardrails: deployment AVAILABLE, both instances available with nothing pending, green on %s, no "
                  "long transaction or prepared transaction on blue" % target, downtime=NONE + " (read-only)", when="now"),
        dict(step="switchover %s -> %s with timeout %d s (RDS rolls back when replica lag, long writes or DDL stop it)"
                  % (current, target, int(timeout)), downtime=SWITCHOVER, when="now"),
        dict(step="keep the old blue %s-old1 (on %s) until a run with rds_instance_blue_green_delete_old_blue: true "
                  "deletes it" % (ident, current), downtime=NONE,
             when="a later run" if not delete_old_blue else "after the switchover"),
    ]
    return out


def table(step_list):
    lines = ["  %-3s %-110s %-60s %s" % ("#", "step", "downtime", "when")]
    for n, s in enumerate(step_list, 1):
        lines.append("  %-3s %-110s %-60s %s" % (n, s["step"], s["downtime"], s["when"]))
    return lines
