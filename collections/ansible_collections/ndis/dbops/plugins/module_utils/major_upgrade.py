# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""A major engine upgrade (16 -> 17) planned both ways RDS offers, with the limits AWS documents.

Pure functions over what ``ndis.dbops.rds_major_upgrade_plan`` reads (the instance, the region's
catalogue, the target family's parameters, the blue's parameter group, an existing blue/green
deployment) and what the database says (prepared transactions, logical replication slots,
tables without a primary key, unlogged tables). Each plan is a list of steps with their downtime
class and a list of problems that stop it, each naming the fix.

AWS's documented limits used here (RDS User Guide):
- "Upgrading the PostgreSQL DB engine for Amazon RDS" / "major version upgrades": the upgrade needs
  AllowMajorVersionUpgrade and a parameter group of the new family (a custom group is not carried
  over: create one of the target family with the same parameters first); open prepared transactions
  and logical replication slots make the upgrade fail, so they are checked first; pg_upgrade does not
  carry the optimizer statistics (run ANALYZE after) and RDS does not update extensions (ALTER
  EXTENSION ... UPDATE after); RDS takes a snapshot before and after.
- "Limitations and considerations for Amazon RDS blue/green deployments" (PostgreSQL): a major version
  upgrade replicates blue to green with logical replication, so the blue's parameter group needs
  rds.logical_replication = 1 (static: a reboot) and every table that is updated or deleted from a
  primary key (or replica identity); DDL, large objects and unlogged tables are not replicated, so
  no schema change runs during the deployment; an instance whose master password RDS manages in
  Secrets Manager is not supported; the switchover has a timeout (30-3600 s, default 300) and rolls
  back when a guardrail fails (replica lag, long-running transactions, DDL, an instance not
  available); after it the old blue is kept, renamed, until it is deleted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

NONE = "none"
OUTAGE = "outage"
SWITCHOVER = "switchover: writes stop until green takes the endpoint (typically under a minute)"
REBOOT = "outage (a reboot)"

METHODS = ("in_place", "blue_green")
SWITCHOVER_TIMEOUT_RANGE = (30, 3600)


def family_of(version):
    return "postgres%s" % str(version).split(".")[0]


def split_parameters(declared, target_family_parameters):
    """(kept, dropped): the declared parameters that exist (and are modifiable) in the target family, and the others."""
    known = dict((p["ParameterName"], p) for p in target_family_parameters)
    kept, dropped = {}, []
    for name in sorted(declared):
        if name in known and known[name].get("IsModifiable", True):
            kept[name] = declared[name]
        else:
            dropped.append(name)
    return kept, dropped


def database_problems(db_facts, method):
    """What the database says that stops the method: each with the fix."""
    problems = []
    if db_facts.get("prepared_transactions"):
        problems.append("%d open prepared transaction(s) (pg_prepared_xacts): the upgrade fails with them; COMMIT PREPARED "
                        "or ROLLBACK PREPARED each first" % db_facts["prepared_transactions"])
    if method == "in_place" and db_facts.get("logical_slots"):
        problems.append("logical replication slot(s) %s: an in-place major upgrade fails with them; drop them "
                        "(SELECT pg_drop_replication_slot(name)) after their consumers have moved"
                        % ", ".join(db_facts["logical_slots"]))
    if method == "blue_green":
        if db_facts.get("tables_without_primary_key"):
            problems.append("table(s) without a primary key %s: blue/green replicates logically, and their UPDATEs and "
                            "DELETEs would fail on blue; add a primary key (or REPLICA IDENTITY FULL) first"
                            % ", ".join(db_facts["tables_without_primary_key"]))
        if db_facts.get("unlogged_tables"):
            problems.append("unlogged table(s) %s are not replicated to green: make them logged or accept that green "
                            "starts them empty" % ", ".join(db_facts["unlogged_tables"]))
    return problems


def plan(method, instance, target, valid_targets, target_group, kept, dropped, db_facts, master_mode,
         logical_replication="0", deployment=None, switchover_timeout=300, allow_major=False):
    """{method, steps: [{step, downtime}], problems: [...], notes: [...]}."""
    ident, current = instance["DBInstanceIdentifier"], instance["EngineVersion"]
    steps, problems, notes = [], [], []
    if method not in METHODS:
        problems.append("major upgrade method %r: choose in_place or blue_green" % method)
        return dict(method=method, steps=steps, problems=problems, notes=notes)
    if str(current).split(".")[0] == str(target).split(".")[0]:
        problems.append("%s -> %s is not a major version upgrade" % (current, target))
    if target not in valid_targets:
        problems.append("%s is not a valid upgrade target from %s; its major targets: %s"
                        % (target, current, ", ".join(valid_targets) or "none"))
    if not allow_major:
        problems.append("a major upgrade is declared on purpose: set rds_instance_allow_major_version_upgrade: true")
    problems += database_problems(db_facts, method)
    if dropped:
        notes.append("parameter(s) %s do not exist in %s and are left out of %s" % (", ".join(dropped), family_of(target),
                                                                                  target_group))
    create_group = dict(step="create parameter group %s (family %s) with %s" % (
        target_group, family_of(target), ", ".join("%s=%s" % kv for kv in sorted(kept.items())) or "no parameters"),
        downtime=NONE)
    checks = dict(step="check: no prepared transaction%s%s" % (
        ", no logical replication slot" if method == "in_place" else "",
        ", every replicated table has a primary key" if method == "blue_green" else ""), downtime=NONE)
    after = [dict(step="in every database: ANALYZE (pg_upgrade does not carry the statistics)", downtime=NONE + " (slower plans until it ends)"),
             dict(step="in every database: REINDEX per the rule, ALTER EXTENSION vector UPDATE", downtime=NONE),
             dict(step="re-measure recall and verify", downtime=NONE + " (read-only)")]
    if method == "in_place":
        steps += [checks, create_group,
                  dict(step="snapshot %s-before-%s-to-%s" % (ident, current.replace(".", "-"), target.replace(".", "-")),
                       downtime="a brief I/O pause (Single-AZ)"),
                  dict(step="modify %s: engine %s -> %s, AllowMajorVersionUpgrade, parameter group %s" % (
                      ident, current, target, target_group), downtime=OUTAGE + ": pg_upgrade runs while the instance is "
                      "down (tens of minutes for a large catalog; both Multi-AZ sides at once)"),
                  dict(step="wait for available on %s, a line per poll" % target, downtime=OUTAGE + " (the same one)")]
        steps += after
        notes.append("rollback: restore the pre-upgrade snapshot into a new instance (RDS never downgrades)")
    else:
        if master_mode == "managed":
            problems.append("blue/green deployments are not supported for an instance whose master password RDS manages "
                            "in Secrets Manager (this project's default). Switch it to SSM first: set "
                            "rds_instance_master_password_mode: ssm and run the site (immediate, no restart; docs/secrets-and-tls.md), "
                            "or choose rds_instance_major_upgrade_method: in_place")
        if not SWITCHOVER_TIMEOUT_RANGE[0] <= int(switchover_timeout) <= SWITCHOVER_TIMEOUT_RANGE[1]:
            problems.append("switchover timeout %s s: RDS takes %d to %d" % ((switchover_timeout,) + SWITCHOVER_TIMEOUT_RANGE))
        if str(logical_replication) != "1":
            steps.append(dict(step="set rds.logical_replication = 1 in %s (static) and reboot %s"
                              % (instance.get("DBParameterGroups", [{}])[0].get("DBParameterGroupName", "its group"), ident),
                              downtime=REBOOT))
        steps += [checks, create_group]
        if deployment:
            notes.append("blue/green deployment %s exists (%s): the plan resumes from it"
                         % (deployment.get("BlueGreenDeploymentIdentifier"), deployment.get("Status")))
        steps += [dict(step="create blue/green deployment %s-to-%s: green on %s with %s (no schema change until switchover)"
                       % (ident, family_of(target), target, target_group), downtime=NONE + " (blue serves; green catches up)"),
                  dict(step="wait for green AVAILABLE and replica lag near zero, a line per poll", downtime=NONE),
                  dict(step="on green: ANALYZE, ALTER EXTENSION vector UPDATE, REINDEX per the rule, recall measured "
                            "and at or above the threshold (else stop: blue stays)", downtime=NONE),
                  dict(step="switchover with timeout %d s (guardrails: replica lag, long transactions, DDL; RDS "
                            "rolls back when one fails)" % int(switchover_timeout), downtime=SWITCHOVER),
                  dict(step="verify on the new primary; keep the old blue (%s-old1) until a later run deletes it on purpose"
                       % ident, downtime=NONE)]
        notes.append("rollback before the switchover: delete the deployment (blue never stopped serving); after it: "
                     "the old blue %s-old1 still runs the old version" % ident)
    return dict(method=method, steps=steps, problems=problems, notes=notes)


def table(result):
    lines = ["major upgrade (%s): %d step(s), %d problem(s)" % (result["method"], len(result["steps"]), len(result["problems"]))]
    lines += ["  %d. %s  [%s]" % (n, s["step"], s["downtime"]) for n, s in enumerate(result["steps"], 1)]
    lines += ["  STOP: " + p for p in result["problems"]]
    lines += ["  note: " + n for n in result["notes"]]
    return lines
