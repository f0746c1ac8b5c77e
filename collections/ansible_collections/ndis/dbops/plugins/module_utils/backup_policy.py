# -*- coding: utf-8 -*-
# Copyright: pgvector-rds-ops maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Load and validate the backup policy (configs/backup/backup.rules.json).

Pure Python apart from jsonschema. ``load_policy`` returns the normalized policy
or raises ``PolicyError`` carrying every problem found, one readable message each.

SCHEMA below is the same document as configs/backup/backup.rules.schema.json
(tests/test_backup_policy.py checks they stay identical): the module runs from an
AnsiballZ payload, which cannot read files of the repository, so it carries its copy.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import re

try:
    from jsonschema import Draft202012Validator
    HAS_JSONSCHEMA = True
except ImportError:  # reported by the module through missing_required_lib
    HAS_JSONSCHEMA = False

_KMS = {
    "description": "KMS key for encryption: null (AWS-managed key), a key ARN, an alias ARN, a key id "
                   "(UUID or mrk- multi-Region id) or alias/NAME.",
    "type": ["string", "null"],
    "pattern": r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+)"
               r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}"
               r"|alias/[A-Za-z0-9/_-]+)$",
    "examples": [None, "alias/ndis-chatbot-backups", "1234abcd-12ab-34cd-56ef-1234567890ab"],
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "NDIS chatbot database backup rules",
    "description": "Backup policy for the PostgreSQL 16 + pgvector RDS instance: RDS automated backups, "
                   "nightly logical dumps to S3 and (optionally) AWS Backup. Times are UTC.",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "rds", "logical_dumps", "aws_backup"],
    "properties": {
        "$schema": {"description": "Path of this schema, for editors.", "type": "string"},
        "description": {"description": "Free text for people reading the file.", "type": "string"},
        "version": {"description": "Format version of this file.", "const": 1},
        "rds": {
            "description": "RDS automated backups (point-in-time recovery).",
            "type": "object",
            "additionalProperties": False,
            "required": ["backup_retention_days", "preferred_backup_window", "copy_tags_to_snapshot",
                         "delete_automated_backups", "final_snapshot_on_delete"],
            "properties": {
                "backup_retention_days": {
                    "description": "Days RDS keeps automated backups; policy minimum 7, RDS maximum 35.",
                    "type": "integer", "minimum": 7, "maximum": 35,
                },
                "preferred_backup_window": {
                    "description": "Daily backup window HH:MM-HH:MM in UTC, at least 30 minutes, "
                                   "not overlapping the maintenance window.",
                    "type": "string", "pattern": r"^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$",
                    "examples": ["15:30-16:00"],
                },
                "copy_tags_to_snapshot": {"description": "Copy instance tags to snapshots.", "type": "boolean"},
                "delete_automated_backups": {
                    "description": "Delete automated backups when the instance is deleted.", "type": "boolean",
                },
                "final_snapshot_on_delete": {
                    "description": "Take a final snapshot when the instance is deleted.", "type": "boolean",
                },
            },
        },
        "logical_dumps": {
            "description": "Nightly pg_dump of the database to S3.",
            "type": "object",
            "additionalProperties": False,
            "required": ["enabled", "schedule", "timezone", "format", "retention_days", "s3_bucket",
                         "s3_prefix", "kms_key_id"],
            "properties": {
                "enabled": {"description": "Run the nightly dumps.", "type": "boolean"},
                "schedule": {
                    "description": "5-field cron (minute hour day-of-month month day-of-week) in `timezone`.",
                    "type": "string", "examples": ["0 16 * * *"],
                },
                "timezone": {
                    "description": "Time zone of `schedule` (IANA name).",
                    "type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$",
                    "examples": ["UTC"],
                },
                "format": {"description": "pg_dump --format.", "enum": ["custom", "directory", "tar", "plain"]},
                "retention_days": {
                    "description": "Days the S3 lifecycle rule keeps dumps.",
                    "type": "integer", "minimum": 1, "maximum": 3650,
                },
                "s3_bucket": {
                    "description": "S3 bucket for the dumps; must be a valid S3 bucket name "
                                   "(3-63 lowercase letters, digits, hyphens, dots).",
                    "type": "string", "examples": ["ndis-chatbot-db-dumps"],
                },
                "s3_prefix": {
                    "description": "Key prefix inside the bucket, no leading slash; empty for the bucket root.",
                    "type": "string", "pattern": r"^([A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]*)?$",
                    "examples": ["logical/"],
                },
                "kms_key_id": _KMS,
                "restore_test_every_days": {
                    "description": "Cadence of restore tests of the newest dump (playbooks/restore_test.yml): health "
                                   "fails when none has passed for this many days (plus the grace). Default 7.",
                    "type": "integer", "minimum": 1, "maximum": 366, "default": 7,
                },
            },
        },
        "aws_backup": {
            "description": "AWS Backup plan for the instance.",
            "type": "object",
            "additionalProperties": False,
            "required": ["enabled", "vault_name", "schedule", "delete_after_days", "kms_key_id"],
            "properties": {
                "enabled": {"description": "Create the backup plan.", "type": "boolean"},
                "vault_name": {
                    "description": "Backup vault name: 2-50 letters, digits, hyphens, underscores.",
                    "type": "string", "pattern": r"^[A-Za-z0-9_-]{2,50}$", "examples": ["ndis-chatbot"],
                },
                "schedule": {
                    "description": "AWS schedule expression "
                                   "cron(minute hour day-of-month month day-of-week year), UTC.",
                    "type": "string", "examples": ["cron(0 16 * * ? *)"],
                },
                "delete_after_days": {
                    "description": "Days AWS Backup keeps recovery points.",
                    "type": "integer", "minimum": 7, "maximum": 36500,
                },
                "kms_key_id": _KMS,
            },
        },
    },
}


class PolicyError(Exception):
    """The policy is unusable; ``errors`` lists every problem found."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# ---------------------------------------------------------------- schema errors

_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"), (type(None), "null"))


def _json_type(value):
    return next(name for cls, name in _JSON_TYPES if isinstance(value, cls))


def _show(value):
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def _schema_message(err):
    path, value, sub, kind = err.json_path, err.instance, err.schema, err.validator
    if kind == "type":
        expected = " or ".join(sub["type"]) if isinstance(sub["type"], list) else sub["type"]
        return ["%s: found %s (%s), expected %s" % (path, _show(value), _json_type(value), expected)]
    if kind in ("minimum", "maximum"):
        if "minimum" in sub and "maximum" in sub:
            expected = "a value from %s to %s" % (sub["minimum"], sub["maximum"])
        else:
            expected = "at least %s" % sub["minimum"] if kind == "minimum" else "at most %s" % sub["maximum"]
        return ["%s: found %s, expected %s" % (path, _show(value), expected)]
    if kind == "pattern":
        hint = (", e.g. %s" % _show(next(e for e in sub["examples"] if e is not None))) if sub.get("examples") else ""
        return ["%s: found %s, which does not match the expected format %s%s"
                % (path, _show(value), sub["pattern"], hint)]
    if kind == "enum":
        return ["%s: found %s, expected one of %s" % (path, _show(value), ", ".join(map(_show, sub["enum"])))]
    if kind == "const":
        return ["%s: found %s, expected %s" % (path, _show(value), _show(sub["const"]))]
    if kind == "required":
        return ["%s: missing required key %r" % (path, key) for key in sub["required"] if key not in value]
    if kind == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        return ["%s: unknown key %r (allowed keys: %s)" % (path, key, ", ".join(allowed))
                for key in value if key not in allowed]
    return ["%s: %s" % (path, err.message)]


# ---------------------------------------------------------------- windows

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK = 7 * 1440


def _minutes(hhmm):
    hours, minutes = (int(part) for part in hhmm.split(":"))
    if hours > 23 or minutes > 59:
        raise ValueError("%s is not a valid time (HH 00-23, MM 00-59)" % hhmm)
    return hours * 60 + minutes


def _parse_backup_window(text):
    """'HH:MM-HH:MM' -> (start minute of day, duration in minutes); may wrap midnight."""
    if not re.match(r"^\d{2}:\d{2}-\d{2}:\d{2}$", text):
        raise ValueError("expected HH:MM-HH:MM in UTC, e.g. '15:30-16:00'")
    start, end = (_minutes(part) for part in text.split("-"))
    return start, (end - start) % 1440


def _parse_maintenance_window(text):
    """'ddd:HH:MM-ddd:HH:MM' -> (start minute of week, duration in minutes); may wrap the week."""
    match = re.match(r"^([a-z]{3}):(\d{2}:\d{2})-([a-z]{3}):(\d{2}:\d{2})$", text.strip().lower())
    if not match or match.group(1) not in _DAYS or match.group(3) not in _DAYS:
        raise ValueError("expected ddd:HH:MM-ddd:HH:MM in UTC, e.g. 'sun:17:00-sun:17:30'")
    start = _DAYS.index(match.group(1)) * 1440 + _minutes(match.group(2))
    end = _DAYS.index(match.group(3)) * 1440 + _minutes(match.group(4))
    return start, (end - start) % _WEEK


def _segments(start, length):
    """Split [start, start+length) on the weekly circle into non-wrapping half-open segments."""
    end = start + length
    return [(start, end)] if end <= _WEEK else [(start, _WEEK), (0, end - _WEEK)]


def _overlap_days(backup, maintenance):
    """Days (mon..sun) on which the daily backup window intersects the weekly maintenance window."""
    maint = _segments(*maintenance)
    days = []
    for day in range(7):
        daily = _segments(day * 1440 + backup[0], backup[1])
        if any(a < d and c < b for a, b in daily for c, d in maint):
            days.append(_DAYS[day])
    return days


# ---------------------------------------------------------------- cron

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, low, high, names, first number the names map to)
_UNIX_FIELDS = (("minute", 0, 59, None, 0), ("hour", 0, 23, None, 0), ("day-of-month", 1, 31, None, 1),
                ("month", 1, 12, _MONTHS, 1), ("day-of-week", 0, 7, _CRON_DAYS, 0))
_AWS_FIELDS = (("minutes", 0, 59, None, 0), ("hours", 0, 23, None, 0), ("day-of-month", 1, 31, None, 1),
               ("month", 1, 12, _MONTHS, 1), ("day-of-week", 1, 7, _CRON_DAYS, 1),
               ("year", 1970, 2199, None, 0))


def _cron_value(token, field):
    name, low, high, names, base = field
    if names and token.lower() in names:
        return names.index(token.lower()) + base
    if not token.isdigit():
        raise ValueError("%s value %r is not a number%s" % (name, token, " or name" if names else ""))
    if not low <= int(token) <= high:
        raise ValueError("%s value %s is out of range %d-%d" % (name, token, low, high))
    return int(token)


def _check_cron_field(text, field):
    """Raise ValueError unless text is *, N, N-M, with optional /STEP, or a comma list of those."""
    name = field[0]
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError("%s step %r must be a positive number" % (name, step))
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        if not first or (dash and not last):
            raise ValueError("%s item %r is not *, N, N-M or one of those with /STEP" % (name, item))
        low = _cron_value(first, field)
        if dash and _cron_value(last, field) < low:
            raise ValueError("%s range %r runs backwards" % (name, base))


def _check_unix_cron(expr):
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("expected 5 fields (minute hour day-of-month month day-of-week), found %d" % len(fields))
    for text, field in zip(fields, _UNIX_FIELDS):
        _check_cron_field(text, field)
    return fields


def _check_aws_cron(expr):
    match = re.match(r"^cron\((.*)\)$", expr.strip())
    if not match:
        raise ValueError("expected cron(minutes hours day-of-month month day-of-week year)")
    fields = match.group(1).split()
    if len(fields) != 6:
        raise ValueError("expected 6 fields inside cron(...) "
                         "(minutes hours day-of-month month day-of-week year), found %d" % len(fields))
    dom, dow = fields[2], fields[4]
    if (dom == "?") == (dow == "?"):
        raise ValueError("exactly one of day-of-month and day-of-week must be '?'")
    for text, field in zip(fields, _AWS_FIELDS):
        if text == "?" and field[0] in ("day-of-month", "day-of-week"):
            continue
        if field[0] == "day-of-month" and re.match(r"^(L|LW|\d{1,2}W)$", text):
            continue
        if field[0] == "day-of-week" and re.match(r"^(L|[1-7]L|[1-7]#[1-5])$", text, re.I):
            continue
        _check_cron_field(text, field)


def _systemd_calendar(fields, timezone):
    """OnCalendar equivalent of a cron that fires at fixed times every day, else None."""
    minute, hour, dom, month, dow = fields
    if (dom, month, dow) != ("*", "*", "*") or not re.match(r"^\d+(,\d+)*$", minute + "," + hour):
        return None
    hours = ",".join("%02d" % int(h) for h in hour.split(","))
    minutes = ",".join("%02d" % int(m) for m in minute.split(","))
    return "*-*-* %s:%s:00 %s" % (hours, minutes, timezone)


# ---------------------------------------------------------------- S3

def _bucket_problems(name):
    problems = []
    if not 3 <= len(name) <= 63:
        problems.append("must be 3 to 63 characters long (found %d)" % len(name))
    if not re.match(r"^[a-z0-9.-]*$", name):
        problems.append("may contain only lowercase letters, digits, hyphens and dots")
    if name[:1] in ("-", ".") or name[-1:] in ("-", "."):
        problems.append("must start and end with a lowercase letter or digit")
    if ".." in name:
        problems.append("must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(name)
        problems.append("must not be formatted as an IP address")
    except ValueError:
        pass
    problems += ["must not start with %r" % p for p in ("xn--", "sthree-") if name.startswith(p)]
    problems += ["must not end with %r" % s for s in ("-s3alias", "--ol-s3") if name.endswith(s)]
    return problems


# ---------------------------------------------------------------- loading

def _read(path):
    """Parse the file, or raise PolicyError; duplicate keys are returned as errors, not lost."""
    duplicates = []

    def no_duplicates(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append("Backup policy file %s has the key %r twice; keep one" % (path, key))
            seen[key] = value
        return seen

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise PolicyError(["Backup policy file %s does not exist; create it (see configs/backup/backup.rules.json "
                           "in the repository) or set the variable backup_policy_file to its path" % path])
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(["Backup policy file %s cannot be read: %s"
                           % (path, getattr(exc, "strerror", None) or exc)])
    try:
        return json.loads(text, object_pairs_hook=no_duplicates), duplicates
    except json.JSONDecodeError as exc:
        raise PolicyError(["Backup policy file %s is not valid JSON: line %d, column %d: %s"
                           % (path, exc.lineno, exc.colno, exc.msg)])


def load_policy(path, maintenance_window=None):
    """Load, validate and normalize the backup policy at ``path``.

    ``maintenance_window`` is the instance's RDS maintenance window (ddd:HH:MM-ddd:HH:MM, UTC);
    when given, the backup window must not overlap it. Raises PolicyError listing every problem.
    """
    if not HAS_JSONSCHEMA:
        raise PolicyError(["The Python library jsonschema is required to validate %s" % path])
    doc, errors = _read(path)
    schema_errors = sorted(Draft202012Validator(SCHEMA).iter_errors(doc), key=lambda e: e.json_path)
    bad = {e.json_path for e in schema_errors}
    for err in schema_errors:
        errors.extend(_schema_message(err))

    def value(section, key):
        """The value at $.section.key if the schema accepted it, else None."""
        path_ = "$.%s.%s" % (section, key)
        if not isinstance(doc, dict) or not isinstance(doc.get(section), dict) or path_ in bad:
            return None
        return doc[section].get(key)

    backup = None
    window = value("rds", "preferred_backup_window")
    if isinstance(window, str):
        try:
            backup = _parse_backup_window(window)
            if backup[1] < 30:
                errors.append("$.rds.preferred_backup_window: %r lasts %d minutes, expected at least 30 minutes"
                              % (window, backup[1]))
                backup = None
        except ValueError as exc:
            errors.append("$.rds.preferred_backup_window: %r is invalid: %s" % (window, exc))
    if maintenance_window:
        try:
            maintenance = _parse_maintenance_window(maintenance_window)
            days = _overlap_days(backup, maintenance) if backup else []
            if days:
                errors.append("$.rds.preferred_backup_window: %r overlaps the maintenance window %r (on %s); "
                              "expected a window that does not intersect it"
                              % (window, maintenance_window, ", ".join(days)))
        except ValueError as exc:
            errors.append("maintenance window %r is invalid: %s" % (maintenance_window, exc))

    cron_fields = None
    schedule = value("logical_dumps", "schedule")
    if isinstance(schedule, str):
        try:
            cron_fields = _check_unix_cron(schedule)
        except ValueError as exc:
            errors.append("$.logical_dumps.schedule: %r is not a valid cron expression: %s" % (schedule, exc))
    aws_schedule = value("aws_backup", "schedule")
    if isinstance(aws_schedule, str):
        try:
            _check_aws_cron(aws_schedule)
        except ValueError as exc:
            errors.append("$.aws_backup.schedule: %r is not a valid AWS Backup schedule expression: %s"
                          % (aws_schedule, exc))
    bucket = value("logical_dumps", "s3_bucket")
    if isinstance(bucket, str):
        problems = _bucket_problems(bucket)
        if problems:
            errors.append("$.logical_dumps.s3_bucket: %r is not a valid S3 bucket name: %s"
                          % (bucket, "; ".join(problems)))

    if errors:
        raise PolicyError(list(dict.fromkeys(errors)))

    policy = copy.deepcopy(doc)
    policy.pop("$schema", None)
    dumps = policy["logical_dumps"]
    if dumps["s3_prefix"] and not dumps["s3_prefix"].endswith("/"):
        dumps["s3_prefix"] += "/"
    dumps["s3_uri"] = "s3://%s/%s" % (dumps["s3_bucket"], dumps["s3_prefix"])
    dumps.setdefault("restore_test_every_days", 7)
    dumps["schedule_systemd"] = _systemd_calendar(cron_fields, dumps["timezone"])
    policy["rds"]["backup_window_minutes"] = backup[1]
    return policy
