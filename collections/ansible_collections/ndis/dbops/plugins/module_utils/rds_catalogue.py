# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Would RDS accept this declaration? Checks of declared values against the region's catalogue.

Pure functions over the answers of DescribeDBEngineVersions, DescribeDBMajorEngineVersions,
DescribeOrderableDBInstanceOptions and DescribeEngineDefaultParameters (the module
``ndis.dbops.rds_preflight`` makes the calls), plus the master user name rules, which no
API call answers. Each check returns a list of problems: sentences that name the value,
why RDS refuses it, and what it offers instead. An empty list means RDS would accept it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import re

from ansible_collections.ndis.dbops.plugins.module_utils.rds_changes import _param_text

# --- Master user name (RDS for PostgreSQL) ------------------------------------------------
# What AWS documents, and what RDS answers:
# - Amazon RDS API Reference, CreateDBInstance, MasterUsername: "Must be 1 to 16 letters,
#   numbers, or underscores. First character must be a letter. Can't be a reserved word for
#   the chosen database engine." The RDS User Guide, "Understanding PostgreSQL roles and
#   permissions", says the same for PostgreSQL: starts with a letter, 1 to 16 alphanumeric
#   characters. (Older API references allowed 63 for PostgreSQL; the documented limit is 16.)
# - Reserved words of the engine: PostgreSQL's reserved key words (PostgreSQL 16
#   documentation, Appendix C "SQL Key Words", the "reserved" ones: a role cannot be named
#   `user` or `select` unquoted); RDS answers "MasterUsername user cannot be used as it is a
#   reserved word used by the engine" (InvalidParameterValue). tests/test_preflight.py checks
#   this list against the embedded PostgreSQL 16's pg_get_keywords().
# - `admin`: RDS refuses it for PostgreSQL with the same error (reported by aws/aws-cdk #10579
#   and #10597, which changed CDK's PostgreSQL default away from it, and verified against real
#   deployments in aws-cloudformation/cfn-lint #4425).
# - `rdsadmin` is the role RDS manages the instance with, and the rds_* roles below exist on
#   every RDS for PostgreSQL instance (RDS User Guide, "Understanding PostgreSQL roles and
#   permissions"; cfn-lint #4425 blocks rdsadmin on every engine).
# - Role names starting with `pg_` are reserved by PostgreSQL (CREATE ROLE: "role names
#   beginning with pg_ are reserved"); RDS answers "role names starting with "pg_" are
#   reserved by the PostgreSQL engine".
MASTER_USERNAME_MAX = 16
POSTGRES_RESERVED_KEYWORDS = frozenset("""
all analyse analyze and any array as asc asymmetric both case cast check collate column
constraint create current_catalog current_date current_role current_time current_timestamp
current_user default deferrable desc distinct do else end except false fetch for foreign from
grant group having in initially intersect into lateral leading limit localtime localtimestamp
not null offset on only or order placing primary references returning select session_user
some symmetric system_user table then to trailing true union unique user using variadic when
where window with
""".split())
RDS_RESERVED_USERNAMES = frozenset((
    "admin", "rdsadmin", "rdsrepladmin", "rdstopmgr", "rds_superuser", "rds_replication",
    "rds_password", "rds_iam", "rds_ad", "rds_extension",
))


def check_master_username(name):
    """Problems with a PostgreSQL master user name, as RDS's CreateDBInstance would refuse it."""
    name = "" if name is None else str(name)
    lowered = name.lower()
    problems = []
    if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name) or len(name) > MASTER_USERNAME_MAX:
        problems.append(
            "master user name %r: RDS needs 1 to %d letters, digits or underscores, starting with a letter"
            % (name, MASTER_USERNAME_MAX))
    if lowered in POSTGRES_RESERVED_KEYWORDS:
        problems.append("master user name %r is a reserved word of PostgreSQL, which RDS refuses" % name)
    elif lowered in RDS_RESERVED_USERNAMES:
        problems.append("master user name %r is reserved by RDS for PostgreSQL (RDS's own roles and "
                        "`admin` are refused)" % name)
    if lowered.startswith("pg_"):
        problems.append("master user name %r starts with pg_, which PostgreSQL reserves" % name)
    if problems:
        problems[-1] += "; choose another name, e.g. dbadmin"
    return problems


# --- Engine versions -----------------------------------------------------------------------

def version_key(version):
    """Sort key: '16.10' after '16.9'; a non-numeric part sorts as text."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.-]", str(version)))


def major_of(version):
    return str(version).split(".")[0]


def resolve_engine_version(declared, family, running, default):
    """The full version a declaration means, and a sentence saying which when it was not full.

    ``declared`` '' or a major alone ('16') keeps the running minor when the instance runs
    that major (a major version alone says nothing about the minor, so nothing moves), and
    otherwise takes ``default`` (the region's default minor for that major). Returns
    (version or None, note).
    """
    declared = "" if declared is None else str(declared).strip()
    if declared and "." in declared:
        return declared, ""
    major = declared or re.sub(r"^\D+", "", family or "")
    shown = repr(declared) if declared else "empty"
    if running and major_of(running) == major:
        return running, ("engine version %s: keeps %s, the version the instance runs (the region's default "
                         "minor for PostgreSQL %s is %s)" % (shown, running, major, default or "unknown"))
    if default:
        return default, "engine version %s: %s, the region's default minor for PostgreSQL %s" % (shown, default, major)
    return None, ""


def _list(versions):
    return ", ".join(sorted(versions, key=version_key)) or "none"


def check_engine_version(version, family, catalogue, region, running=None, lifecycle=None, today=None):
    """Problems with running ``version``: catalogue is DescribeDBEngineVersions(IncludeAll) entries.

    running: the version the instance runs now (None when it does not exist yet).
    lifecycle: DescribeDBMajorEngineVersions' SupportedEngineLifecycles for the major, or None.
    today: a datetime.date, to compare with the end of standard support.
    """
    by_version = dict((v["EngineVersion"], v) for v in catalogue)
    major = major_of(version)
    offered = [v for v, e in by_version.items() if major_of(v) == major and e.get("Status", "available") == "available"]
    problems = []
    entry = by_version.get(version)
    if entry is None:
        problems.append("engine version %s is not offered in %s; PostgreSQL %s versions offered there: %s"
                        % (version, region, major, _list(offered)))
        return problems
    if entry.get("Status", "available") != "available":
        problems.append("engine version %s is %s in %s (past its end of standard support: RDS creates no new "
                        "instance on it and upgrades running ones); PostgreSQL %s versions offered: %s"
                        % (version, entry.get("Status"), region, major, _list(offered)))
    if family and entry.get("DBParameterGroupFamily") and entry["DBParameterGroupFamily"] != family:
        problems.append("engine version %s needs parameter group family %s, not %s"
                        % (version, entry["DBParameterGroupFamily"], family))
    if running and running != version:
        current = by_version.get(running)
        if current is not None:
            targets = [t["EngineVersion"] for t in current.get("ValidUpgradeTarget") or []]
            if version not in targets:
                minor = [t for t in targets if major_of(t) == major_of(running)]
                problems.append("engine version %s is not a valid upgrade target from %s, the version the "
                                "instance runs (RDS never downgrades); declare %s to keep it, or one of its valid "
                                "targets: %s%s" % (version, running, running, _list(targets),
                                                   " (same major: %s)" % _list(minor) if minor else ""))
    end = standard_support_end(lifecycle)
    if end is not None and today is not None and end.date() < today:
        problems.append("PostgreSQL %s is past its RDS end of standard support (%s): RDS charges Extended "
                        "Support for it; move to a major version under standard support"
                        % (major, end.date().isoformat()))
    return problems


def standard_support_end(lifecycle):
    """The end of RDS standard support from SupportedEngineLifecycles, or None."""
    for item in lifecycle or []:
        if item.get("LifecycleSupportName") == "open-source-rds-standard-support":
            return item.get("LifecycleSupportEndDate")
    return None


# --- Orderable instance options ------------------------------------------------------------

def check_orderable(declared, options, region, all_options=None):
    """Problems with class, storage type, Multi-AZ, storage size and IOPS.

    declared: db_instance_class, engine_version, storage_type, multi_az, allocated_storage,
    max_allocated_storage, iops (None: not declared). options: DescribeOrderableDBInstanceOptions
    entries for the engine version and class; all_options: the same for every class (only
    needed to name alternatives when the class is not orderable).
    """
    klass, version, storage = declared["db_instance_class"], declared["engine_version"], declared["storage_type"]
    if not options:
        classes = sorted(set(o["DBInstanceClass"] for o in all_options or []
                             if o.get("StorageType") == storage and (o.get("MultiAZCapable") or not declared["multi_az"])))
        return ["instance class %s is not orderable for postgres %s in %s; classes orderable there with %s%s: %s"
                % (klass, version, region, storage, " and Multi-AZ" if declared["multi_az"] else "",
                   ", ".join(classes) or "none")]
    with_storage = [o for o in options if o.get("StorageType") == storage]
    if not with_storage:
        return ["instance class %s is not orderable with storage type %s for postgres %s in %s; its storage types: %s"
                % (klass, storage, version, region, ", ".join(sorted(set(str(o.get("StorageType")) for o in options))))]
    option = with_storage[0]
    problems = []
    if declared["multi_az"] and not any(o.get("MultiAZCapable") for o in with_storage):
        problems.append("instance class %s with %s storage cannot run Multi-AZ for postgres %s in %s; set "
                        "multi_az false or choose a Multi-AZ capable class" % (klass, storage, version, region))
    low, high = option.get("MinStorageSize"), option.get("MaxStorageSize")
    for what in ("allocated_storage", "max_allocated_storage"):
        value = declared.get(what)
        if value is not None and low is not None and high is not None and not low <= int(value) <= high:
            problems.append("%s %s GiB is outside %s's range for %s: %s to %s GiB"
                            % (what, value, storage, klass, low, high))
    iops = declared.get("iops")
    if iops is not None:
        if not option.get("SupportsIops"):
            problems.append("iops %s: %s storage on %s has no provisioned IOPS; leave iops unset or use gp3, io1 or io2"
                            % (iops, storage, klass))
        else:
            ilow, ihigh = option.get("MinIopsPerDbInstance"), option.get("MaxIopsPerDbInstance")
            if ilow is not None and ihigh is not None and not ilow <= int(iops) <= ihigh:
                problems.append("iops %s is outside %s's range on %s: %s to %s%s"
                                % (iops, storage, klass, ilow, ihigh,
                                   " (gp3 takes provisioned IOPS from 400 GiB; below it the baseline is 3000)"
                                   if storage == "gp3" else ""))
            size = declared.get("allocated_storage")
            plow, phigh = option.get("MinIopsPerGib"), option.get("MaxIopsPerGib")
            if size and plow is not None and phigh is not None and not plow <= int(iops) / float(size) <= phigh:
                problems.append("iops %s on %s GiB is %.2f IOPS per GiB, outside %s's %s to %s per GiB; at %s GiB "
                                "that is %d to %d IOPS" % (iops, size, int(iops) / float(size), storage, plow, phigh,
                                                            size, int(plow * int(size)), int(phigh * int(size))))
    return problems


# --- Parameters ----------------------------------------------------------------------------

def _allowed_tokens(allowed):
    return [t.strip() for t in str(allowed or "").split(",") if t.strip()]


def _range(token):
    match = re.match(r"^(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)$", token)
    return (float(match.group(1)), float(match.group(2))) if match else None


def _value_allowed(text, param):
    """Whether RDS accepts ``text`` for the parameter, by its DataType and AllowedValues."""
    allowed = param.get("AllowedValues")
    tokens = _allowed_tokens(allowed)
    if not tokens or "{" in text:  # nothing stated, or a formula ({DBInstanceClassMemory/...})
        return True
    ranges = [r for r in (_range(t) for t in tokens) if r is not None]
    words = [t for t in tokens if _range(t) is None]
    if ranges and param.get("DataType") in ("integer", "float", "real", "double"):
        try:
            number = float(text)
        except ValueError:
            return False
        return any(low <= number <= high for low, high in ranges) or text in words
    if param.get("DataType") == "list":
        return all(item.strip().lower() in [w.lower() for w in words] for item in text.split(",") if item.strip())
    if any(t.startswith("^") or "*" in t for t in words):  # a pattern, not a list
        return True
    return text.lower() in [w.lower() for w in words]


def check_parameters(declared, family_parameters, family):
    """Problems with declared parameters: family_parameters is the family's parameter list."""
    lookup = dict((p["ParameterName"], p) for p in family_parameters)
    problems = []
    for name in sorted(declared):
        param = lookup.get(name)
        if param is None:
            close = difflib.get_close_matches(name, list(lookup), n=3, cutoff=0.6)
            problems.append("parameter %s is not a parameter of family %s%s" % (
                name, family, "; did you mean %s?" % " or ".join(close) if close else
                "; `aws rds describe-engine-default-parameters --db-parameter-group-family %s` lists them" % family))
            continue
        if not param.get("IsModifiable", True):
            problems.append("parameter %s cannot be modified in family %s (RDS sets it); remove it from the parameters"
                            % (name, family))
            continue
        text = _param_text(declared[name], param.get("DataType"))
        if param.get("DataType") == "list" and not _value_allowed(text, param):
            words = [w.lower() for w in _allowed_tokens(param.get("AllowedValues"))]
            bad = [item.strip() for item in text.split(",") if item.strip() and item.strip().lower() not in words]
            problems.append("parameter %s = %s: %s %s not allowed; %s takes a list of %s"
                            % (name, text, ", ".join(bad), "is" if len(bad) == 1 else "are", name,
                               param.get("AllowedValues")))
        elif not _value_allowed(text, param):
            problems.append("parameter %s = %s is not allowed: %s takes %s (%s)"
                            % (name, text, name, param.get("AllowedValues"), param.get("DataType")))
    return problems


# --- Support lifecycle: warn before AWS forces an upgrade ----------------------------------
# DescribeDBEngineVersions says only that a minor is `deprecated`, not when it will be; AWS
# announces minor retirements in AWS Health notices. The 2026 notice for RDS for PostgreSQL
# (quoted in public runbooks): 14.14-14.17, 15.9-15.12, 16.5-16.8 and 17.1-17.4 reach the end of
# standard support on 2026-05-31, no new instance from 2026-05-01, and are then upgraded in the
# maintenance window (to 14.20, 15.15, 16.11, 17.7 or later). Add a notice's versions here.
MINOR_END_OF_STANDARD_SUPPORT = dict(
    [("14.%d" % m, "2026-05-31") for m in range(14, 18)] + [("15.%d" % m, "2026-05-31") for m in range(9, 13)]
    + [("16.%d" % m, "2026-05-31") for m in range(5, 9)] + [("17.%d" % m, "2026-05-31") for m in range(1, 5)])


def upgrade_target(version, catalogue):
    """The version the project would move to: the newest minor the region offers in the same major."""
    major = major_of(version)
    offered = [e["EngineVersion"] for e in catalogue
               if major_of(e["EngineVersion"]) == major and e.get("Status", "available") == "available"]
    return max(offered, key=version_key) if offered else None


def support_status(version, catalogue, lifecycle, today, warn_days, region, newest_major=None):
    """(status, detail, target) for the running ``version``: WARN when it is deprecated, or its minor's or
    major's end of standard support is within ``warn_days`` of ``today`` (a datetime.date), naming the
    date and the target; PASS with the dates otherwise."""
    import datetime

    by_version = dict((e["EngineVersion"], e) for e in catalogue)
    entry = by_version.get(version) or {}
    target = upgrade_target(version, catalogue)
    major = major_of(version)
    minor_end = MINOR_END_OF_STANDARD_SUPPORT.get(version)
    major_end = standard_support_end(lifecycle)
    warnings, facts = [], []
    move = ("move to %s: declare rds_instance_engine_version: \"%s\" and run the site (docs/upgrades.md)"
            % (target, target) if target and target != version else "no newer %s minor is offered" % major)
    if entry.get("Status", "available") != "available" or minor_end:
        end = minor_end and datetime.date.fromisoformat(minor_end)
        if entry.get("Status", "available") != "available" or (end and (end - today).days <= warn_days):
            when = ("its end of standard support was %s" % minor_end if end and end < today else
                    "its end of standard support is %s, in %d days" % (minor_end, (end - today).days) if end else
                    "RDS gives no date")
            warnings.append("PostgreSQL %s is %s in %s (%s): RDS upgrades it in a maintenance window of its own "
                            "choosing, with an outage; %s" % (version, entry.get("Status", "retiring"), region, when, move))
    if major_end is not None:
        days = (major_end.date() - today).days
        facts.append("PostgreSQL %s standard support until %s" % (major, major_end.date().isoformat()))
        if days <= warn_days:
            warnings.append("PostgreSQL %s reaches its RDS end of standard support on %s (%s): RDS then charges "
                            "Extended Support; plan the major upgrade%s (docs/upgrades.md)"
                            % (major, major_end.date().isoformat(),
                               "in %d days" % days if days >= 0 else "%d days ago" % -days,
                               " to %s" % newest_major if newest_major and newest_major != major else ""))
    if warnings:
        return "WARN", "; ".join(warnings), target
    return "PASS", "%s %s; %s" % (version, entry.get("Status", "available"), "; ".join(facts) or "no lifecycle dates"), target
