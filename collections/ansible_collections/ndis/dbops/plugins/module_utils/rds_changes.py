# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""When does an RDS for PostgreSQL change take effect, and what does it cost?

Pure functions (no AWS calls), so the rules have their own unit tests: moto applies
every modification at once and never reports pending values, so it cannot show them.

Each difference between the declared and the actual instance is classified as one of

- ``immediate``: applied now, no interruption;
- ``next-window``: queued for the next maintenance window (apply_immediately is false);
- ``needs-reboot``: takes effect only after a reboot, which RDS never does on its own;
- ``outage``: the instance restarts or fails over when the change is applied (now with
  apply_immediately, else in the next maintenance window);
- ``replace``: cannot be changed in place (a new instance from a snapshot is needed).

Sources: Amazon RDS User Guide, "Settings for DB instances" (the "Downtime notes" and
"When the change occurs" columns) and "Working with parameter groups" (static parameters
need a reboot; dynamic ones apply at once).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

IMMEDIATE = "immediate"
NEXT_WINDOW = "next-window"
NEEDS_REBOOT = "needs-reboot"
OUTAGE = "outage"
REPLACE = "replace"

# setting -> (describe_db_instances key, kind, note)
# kind:
#   "async"    applied as soon as possible whatever apply_immediately says, no downtime
#   "window"   honours apply_immediately, no downtime
#   "restart"  honours apply_immediately, the instance restarts (or fails over)
#   "reboot"   the change is recorded but takes effect at the next reboot
#   "replace"  not modifiable in place
RULES = {
    "allocated_storage": ("AllocatedStorage", "window",
                          "storage grows online; another storage change is refused for 6 hours"),
    "max_allocated_storage": ("MaxAllocatedStorage", "async", "storage autoscaling ceiling"),
    "storage_type": ("StorageType", "window", "storage converts online; performance may dip while it optimises"),
    "iops": ("Iops", "window", "provisioned IOPS change online"),
    "storage_throughput": ("StorageThroughput", "window", "gp3 throughput changes online"),
    "db_instance_class": ("DBInstanceClass", "restart",
                          "the instance restarts on the new class (a Multi-AZ failover shortens it)"),
    "engine_version": ("EngineVersion", "restart", "the engine restarts on the new version"),
    "multi_az": ("MultiAZ", "window", "a standby is created or removed online; performance may dip"),
    "backup_retention_period": ("BackupRetentionPeriod", "retention", ""),
    "preferred_backup_window": ("PreferredBackupWindow", "async", "no interruption"),
    "preferred_maintenance_window": ("PreferredMaintenanceWindow", "async", "no interruption"),
    "copy_tags_to_snapshot": ("CopyTagsToSnapshot", "async", "no interruption"),
    "deletion_protection": ("DeletionProtection", "async", "no interruption"),
    "auto_minor_version_upgrade": ("AutoMinorVersionUpgrade", "async", "no interruption"),
    "publicly_accessible": ("PubliclyAccessible", "async", "DNS changes; no restart"),
    "vpc_security_group_ids": ("VpcSecurityGroups", "async", "no interruption"),
    "db_subnet_group_name": ("DBSubnetGroup", "restart", "moving subnets moves the instance"),
    "db_parameter_group_name": ("DBParameterGroups", "reboot",
                                "the instance shows the new group as pending-reboot until rebooted"),
    "port": ("Endpoint.Port", "restart", "the instance restarts immediately on the new port"),
    "storage_encrypted": ("StorageEncrypted", "replace",
                          "encryption can only be set when the instance is created: restore a snapshot copy"),
    "kms_key_id": ("KmsKeyId", "replace", "the storage key can only be set when the instance is created"),
    "master_username": ("MasterUsername", "replace", "the master user name cannot be changed"),
    # Observability: each applies at once whatever apply_immediately says, no downtime.
    "monitoring_interval": ("MonitoringInterval", "async", "Enhanced Monitoring; no interruption"),
    "monitoring_role_arn": ("MonitoringRoleArn", "async", "Enhanced Monitoring; no interruption"),
    "enable_performance_insights": ("PerformanceInsightsEnabled", "async", "Performance Insights; no interruption"),
    "performance_insights_retention_period": ("PerformanceInsightsRetentionPeriod", "async",
                                              "Performance Insights; no interruption"),
    "performance_insights_kms_key_id": ("PerformanceInsightsKMSKeyId", "pi-key",
                                        "the Performance Insights key cannot change once set"),
    "enable_cloudwatch_logs_exports": ("EnabledCloudwatchLogsExports", "async", "log exports; no interruption"),
}


def _current_value(instance, key):
    """Read a describe_db_instances value in the shape the module options use."""
    if key == "VpcSecurityGroups":
        return sorted(g["VpcSecurityGroupId"] for g in instance.get(key, []))
    if key == "DBSubnetGroup":
        return (instance.get(key) or {}).get("DBSubnetGroupName")
    if key == "DBParameterGroups":
        groups = instance.get(key) or []
        return groups[0]["DBParameterGroupName"] if groups else None
    if key == "Endpoint.Port":
        return (instance.get("Endpoint") or {}).get("Port")
    return instance.get(key)


def _normalise(setting, value):
    if value is None:
        return None
    if setting in ("vpc_security_group_ids", "enable_cloudwatch_logs_exports"):
        return sorted(value)
    if setting in ("preferred_maintenance_window",):
        return str(value).lower()
    if setting in ("allocated_storage", "max_allocated_storage", "iops", "storage_throughput",
                   "backup_retention_period", "port",
                   "monitoring_interval", "performance_insights_retention_period"):
        return int(value)
    return value


def _when(kind, apply_immediately, current=None, desired=None):
    if kind == "async":
        return IMMEDIATE
    if kind == "window":
        return IMMEDIATE if apply_immediately else NEXT_WINDOW
    if kind == "restart":
        return OUTAGE
    if kind == "reboot":
        return NEEDS_REBOOT
    if kind == "replace":
        return REPLACE
    if kind == "pi-key":
        # Set with Performance Insights turned on; once set, RDS refuses another key.
        return IMMEDIATE if current is None else REPLACE
    if kind == "retention":
        # 0 <-> non-zero turns automated backups (and point-in-time recovery) on or off:
        # the instance restarts. Between two non-zero values it applies at once.
        if (int(current or 0) == 0) != (int(desired or 0) == 0):
            return OUTAGE
        return IMMEDIATE
    raise ValueError("unknown rule kind %r" % kind)


def classify_instance(current, desired, apply_immediately=False):
    """Differences between a describe_db_instances entry and the declared options.

    ``desired`` uses amazon.aws.rds_instance option names; options it omits (or sets to
    None) are not compared. Returns a list of dicts: setting, current, desired, when,
    applies (now / next maintenance window / at reboot / never), note.
    """
    changes = []
    for setting in sorted(desired):
        if setting not in RULES or desired[setting] is None:
            continue
        key, kind, note = RULES[setting]
        have = _normalise(setting, _current_value(current, key))
        want = _normalise(setting, desired[setting])
        if setting == "engine_version" and have is not None and want is not None:
            if str(have).split(".")[0] != str(want).split(".")[0]:
                note = "major version upgrade: needs allow_major_version_upgrade and a compatible parameter group"
        if setting in ("kms_key_id", "performance_insights_kms_key_id") and have and want and (str(have).endswith(str(want)) or str(want).endswith(str(have))):
            continue  # an alias or key id naming the same key ARN
        if have == want:
            continue
        when = _when(kind, apply_immediately, have, want)
        if kind == "retention" and when == OUTAGE:
            note = "turning automated backups on or off restarts the instance"
        elif kind == "retention":
            note = "applied as soon as possible, no interruption"
        changes.append(dict(
            setting=setting, current=have, desired=want, when=when,
            applies=_applies(kind, when, apply_immediately), note=note,
        ))
    return changes


def _applies(kind, when, apply_immediately):
    if when == REPLACE:
        return "never in place"
    if when == NEEDS_REBOOT:
        return "at the next reboot"
    if kind in ("async", "retention", "pi-key") and when == IMMEDIATE:
        return "now"
    return "now" if apply_immediately else "next maintenance window"


def classify_parameters(current_params, desired_params):
    """Parameter changes: current_params is describe_db_parameters' list of dicts.

    Dynamic parameters apply at once (``immediate``); static ones only after a reboot
    (``needs-reboot``). Unknown names are reported with when=``unknown``.
    """
    lookup = {p["ParameterName"]: p for p in current_params}
    changes = []
    for name in sorted(desired_params):
        want = _param_text(desired_params[name], lookup.get(name, {}).get("DataType"))
        param = lookup.get(name)
        if param is None:
            changes.append(dict(setting="parameter " + name, current=None, desired=want, when="unknown",
                                applies="never", note="not a parameter of this family"))
            continue
        have = param.get("ParameterValue")
        if have == want:
            continue
        static = param.get("ApplyType") == "static"
        changes.append(dict(
            setting="parameter " + name, current=have, desired=want,
            when=NEEDS_REBOOT if static else IMMEDIATE,
            applies="at the next reboot" if static else "now",
            note="static parameter" if static else "dynamic parameter",
        ))
    return changes


def _param_text(value, data_type=None):
    """The ParameterValue string RDS stores for a declared value."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if data_type == "boolean" and str(value).lower() in ("true", "on", "yes"):
        return "1"
    if data_type == "boolean" and str(value).lower() in ("false", "off", "no"):
        return "0"
    return str(value)


def pending_reboot(instance):
    """True when the instance waits for a reboot to apply its parameter group."""
    return any(g.get("ParameterApplyStatus") == "pending-reboot" for g in instance.get("DBParameterGroups") or [])


def table(changes):
    """Fixed-width lines for a person to read; empty list when nothing differs."""
    if not changes:
        return []
    rows = [("setting", "current", "declared", "when", "applies", "note")]
    for c in changes:
        rows.append((c["setting"], _show(c["current"]), _show(c["desired"]), c["when"], c["applies"], c["note"]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] for r in rows]


def _show(value):
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


# Who may connect, and how: the server certificate's CA, IAM authentication, who keeps the
# master password. Their own rules, because whether a CA change restarts the instance depends
# on the engine version (SupportsCertificateRotationWithoutRestart in DescribeDBEngineVersions).
# Sources: "Settings for DB instances" (Certificate authority: apply_immediately or the next
# window, downtime only if the engine cannot rotate without a restart; IAM DB authentication:
# apply_immediately or the next window, no downtime; Manage master credentials in AWS Secrets
# Manager: turning it on or off occurs immediately whatever apply_immediately says, no downtime).
MASTER_PASSWORD_MODES = ("managed", "ssm")


def master_password_mode(instance):
    """``managed`` when RDS keeps the master password in Secrets Manager, else ``ssm``."""
    return "managed" if (instance or {}).get("MasterUserSecret") else "ssm"


def classify_access(current, desired, apply_immediately=False, rotation_without_restart=None):
    """Differences in ca_certificate_identifier, enable_iam_database_authentication and
    master_password_mode (``managed``/``ssm``; ``auto`` or None: not compared).

    ``rotation_without_restart``: what DescribeDBEngineVersions says of the instance's engine
    version (True, False, or None when it could not be read: a restart is then assumed).
    Same dict shape as :func:`classify_instance`.
    """
    changes = []
    window_when = IMMEDIATE if apply_immediately else NEXT_WINDOW
    window_applies = "now" if apply_immediately else "next maintenance window"
    want = desired.get("ca_certificate_identifier")
    have = current.get("CACertificateIdentifier")
    if want and have != want:
        if rotation_without_restart:
            when, note = window_when, "the engine loads the new certificate without a restart"
        elif rotation_without_restart is False:
            when, note = OUTAGE, "the instance restarts to load the new certificate (this engine version cannot rotate without one)"
        else:
            when, note = OUTAGE, ("a restart is assumed: the engine version's SupportsCertificateRotationWithoutRestart "
                                  "could not be read")
        changes.append(dict(setting="ca_certificate_identifier", current=have, desired=want, when=when,
                            applies=window_applies, note=note + "; apps must trust the new CA first"))
    want = desired.get("enable_iam_database_authentication")
    have = bool(current.get("IAMDatabaseAuthenticationEnabled"))
    if want is not None and bool(want) != have:
        changes.append(dict(setting="enable_iam_database_authentication", current=have, desired=bool(want),
                            when=window_when, applies=window_applies, note="no interruption"))
    want = desired.get("master_password_mode")
    have = master_password_mode(current)
    if want in MASTER_PASSWORD_MODES and want != have:
        if want == "managed":
            note = ("RDS sets a new master password and keeps it in Secrets Manager; the SSM copy is deleted; "
                    "open sessions stay")
        else:
            note = "RDS deletes its secret and sets the password kept in SSM (or supplied); open sessions stay"
        changes.append(dict(setting="master_password_mode", current=have, desired=want, when=IMMEDIATE,
                            applies="now", note=note))
    return changes
