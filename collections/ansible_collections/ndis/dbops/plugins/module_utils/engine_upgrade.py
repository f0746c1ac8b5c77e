# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""An RDS engine upgrade as steps: what runs, in which order, with what downtime.

Pure functions (``ndis.dbops.rds_engine_upgrade`` makes the calls). The state that says how far
an upgrade got lives where AWS and PostgreSQL keep it, so a run stopped at any step resumes:
the snapshot exists (or not), the instance runs the target version (or is ``upgrading``, or has
it in PendingModifiedValues), and each database's pgvector is updated (or not,
module_utils/vector_upgrade.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# Downtime classes, as the change plan names them (module_utils/rds_changes.py).
NONE = "none"
IO_PAUSE = "none (Multi-AZ) / a brief I/O pause (Single-AZ)"
OUTAGE = "outage"
READ_ONLY = "none (read-only)"


def snapshot_identifier(instance, current, target):
    """The manual snapshot taken before the upgrade, named for it: ``<instance>-before-16-11-to-16-14``.

    RDS snapshot identifiers take letters, digits and hyphens, 1 to 255, no two hyphens in a row."""
    text = "%s-before-%s-to-%s" % (instance, current, target)
    text = re.sub(r"[^A-Za-z0-9-]", "-", text)
    return re.sub(r"-{2,}", "-", text).strip("-")[:255]


def is_major(current, target):
    return str(current).split(".")[0] != str(target).split(".")[0]


def rollback_command(instance, snapshot, region=""):
    """Rolling back is restoring the pre-upgrade snapshot into a new instance (RDS never downgrades)."""
    return ("aws rds restore-db-instance-from-db-snapshot --db-instance-identifier %s-rollback "
            "--db-snapshot-identifier %s%s  (a new instance on the old version; point the app's URL at it)"
            % (instance, snapshot, " --region " + region if region else ""))


def steps(instance, current, target, apply_immediately, maintenance_window, snapshot=True, multi_az=False):
    """The upgrade's steps in order, each {step, downtime, when}."""
    snap = snapshot_identifier(instance, current, target)
    when = "now" if apply_immediately else "in the maintenance window %s" % maintenance_window
    out = []
    if snapshot:
        out.append(dict(step="snapshot %s (manual, kept; the rollback point)" % snap,
                        downtime=NONE if multi_az else IO_PAUSE, when="now"))
    out.append(dict(step="modify %s engine version %s -> %s%s" % (
        instance, current, target, " (major: allow_major_version_upgrade, target family parameter group)"
        if is_major(current, target) else ""),
        downtime=OUTAGE + (": the engine stops and starts on the new version (minutes%s)"
                           % ("; Multi-AZ upgrades both at once" if multi_az else "")), when=when))
    out.append(dict(step="wait for %s to be available on %s, a line per poll" % (instance, target),
                    downtime=OUTAGE + " (the same one)", when=when if apply_immediately else "the first run after it"))
    out.append(dict(step="in every database with pgvector: REINDEX INDEX CONCURRENTLY the indexes the rule names, "
                         "then ALTER EXTENSION vector UPDATE", downtime=NONE + " (concurrent rebuild; catalog update)",
                    when="the same run" if apply_immediately else "the first run after the window"))
    out.append(dict(step="re-measure recall (tuning) and verify", downtime=READ_ONLY,
                    when="the same run" if apply_immediately else "the first run after the window"))
    return out


def table(step_list):
    """Printable lines: step, downtime, when."""
    lines = ["  %-3s %-100s %-48s %s" % ("#", "step", "downtime", "when")]
    for n, s in enumerate(step_list, 1):
        lines.append("  %-3s %-100s %-48s %s" % (n, s["step"], s["downtime"], s["when"]))
    return lines
