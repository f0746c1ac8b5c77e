# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""CloudWatch alarm thresholds derived from an RDS instance, not constants.

Pure functions (no AWS calls), unit-tested in tests/test_alarms.py; the module
ndis.dbops.rds_alarms reads the instance and writes what differs.

Sources: Amazon EC2 / RDS instance type pages (memory per class, the burstable
classes' CPU credits earned per hour), the RDS for PostgreSQL default of
``max_connections`` (``LEAST({DBInstanceClassMemory/9531392}, 5000)``), and the
CloudWatch metrics of AWS/RDS (FreeStorageSpace and FreeableMemory in bytes,
latencies in seconds).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

GIB = 1024 ** 3

# Memory in GiB of the ``large`` size per family; each size up doubles it
# (xlarge = 2x large, 2xlarge = 4x, Nxlarge = 2N x).
LARGE_MEMORY_GIB = {"t3": 8, "t4g": 8, "m5": 8, "m5d": 8, "m6g": 8, "m6gd": 8, "m6i": 8, "m6id": 8, "m7g": 8,
                    "m7i": 8, "r5": 16, "r5d": 16, "r6g": 16, "r6gd": 16, "r6i": 16, "r6id": 16, "r7g": 16,
                    "r7i": 16, "r8g": 16, "x2g": 32}
SMALL_SIZES_GIB = {"micro": 1, "small": 2, "medium": 4}  # burstable classes only

# Burstable classes: CPU credits earned per hour; the balance caps at 24 hours' worth.
CREDITS_PER_HOUR = {"micro": 12, "small": 24, "medium": 24, "large": 36, "xlarge": 96, "2xlarge": 192}

DEFAULT_THRESHOLDS = {
    "free_storage_share": 0.10,     # FreeStorageSpace under 10% of the allocated storage
    "free_storage_ceiling_share": 0.10,  # with autoscaling: headroom to the ceiling under 10% of the ceiling
    "freeable_memory_share": 0.10,  # FreeableMemory under 10% of the class's memory
    "connections_share": 0.80,      # DatabaseConnections over 80% of max_connections
    "cpu_percent": 80,              # CPUUtilization over 80% ...
    "cpu_minutes": 15,              # ... for 15 minutes
    "cpu_credit_share": 0.10,       # CPUCreditBalance under 10% of the most a burstable class can hold
    "latency_seconds": 0.020,       # Read/WriteLatency over 20 ms
    # ReplicaLag over 10 minutes in two 5-minute periods running. RDS measures a PostgreSQL replica's lag from
    # the time of the last transaction it replayed, so on an idle primary it climbs towards 5 minutes (until the
    # next WAL switch) with nothing wrong: 600 s is twice that, and a replica held back by a recovery conflict
    # (max_standby_streaming_delay, 30 s) stays far below it. A replica this far behind serves stale searches.
    "replica_lag_seconds": 600,
}

GP3_BASELINE_IOPS = 3000
PERIOD = 300  # RDS publishes basic metrics every minute; 5-minute periods smooth one-off spikes
MARKER = "[ndis.dbops]"  # starts the description of every alarm this module owns


class ThresholdError(ValueError):
    pass


def parse_class(instance_class):
    """db.t4g.medium -> ("t4g", "medium")."""
    m = re.match(r"^db\.([a-z0-9-]+)\.([a-z0-9]+)$", str(instance_class or ""))
    if not m:
        raise ThresholdError("instance class %r is not of the form db.<family>.<size>" % instance_class)
    return m.group(1), m.group(2)


def burstable(instance_class):
    return parse_class(instance_class)[0].startswith("t")


def class_memory_gib(instance_class):
    family, size = parse_class(instance_class)
    if size in SMALL_SIZES_GIB and family.startswith("t"):
        return SMALL_SIZES_GIB[size]
    base = LARGE_MEMORY_GIB.get(family)
    if base is None:
        raise ThresholdError("memory of instance class %s is not known here: set monitoring_class_memory_gib" % instance_class)
    if size == "large":
        return base
    if size == "xlarge":
        return base * 2
    m = re.match(r"^(\d+)xlarge$", size)
    if not m:
        raise ThresholdError("size %s of instance class %s is not known here: set monitoring_class_memory_gib"
                             % (size, instance_class))
    return base * 2 * int(m.group(1))


def default_max_connections(memory_gib):
    """RDS for PostgreSQL's default: LEAST({DBInstanceClassMemory/9531392}, 5000).

    DBInstanceClassMemory is the class's memory less what RDS reserves for the OS and
    its agents (a few hundred MiB), so the real value is a little lower: a threshold
    that is a share of this one errs early, not late.
    """
    return min(int(memory_gib * GIB // 9531392), 5000)


def max_credit_balance(instance_class):
    family, size = parse_class(instance_class)
    if not family.startswith("t"):
        return None
    return CREDITS_PER_HOUR.get(size, 0) * 24 or None


def ceiling_threshold_gib(allocated_gib, ceiling_gib, share):
    """FreeStorageSpace (GiB) under which the headroom to the autoscaling ceiling is under ``share`` of it.

    Storage autoscaling grows the allocated storage up to ``ceiling_gib`` and no further, so
    what is left before the instance is full for good is the ceiling less the used storage:
    ``ceiling - (allocated - free)``. That is under ``share * ceiling`` when
    ``free < allocated - (1 - share) * ceiling``. FreeStorageSpace is the only storage metric
    RDS publishes, so the threshold holds the allocated storage as it is now: it is re-derived
    on every run, and 0 (the alarm cannot fire) while the instance is allocated so far below the
    ceiling that even a full disk leaves more than the share of it.
    """
    return max(0.0, float(allocated_gib) - (1 - float(share)) * float(ceiling_gib))


def alarm_specs(identifier, instance_class, allocated_gib, topic_arn, max_connections=None, iops=None,
                storage_type="gp3", memory_gib=None, thresholds=None, max_allocated_gib=None, replicas=None):
    """The declared alarms, as put_metric_alarm keyword arguments, sorted by name.

    ``max_allocated_gib`` above ``allocated_gib`` (storage autoscaling on) adds the
    ``free-storage-ceiling`` alarm (see ceiling_threshold_gib); each of ``replicas`` (read replicas'
    identifiers) a ``<replica>-replica-lag`` alarm on its ReplicaLag."""
    t = dict(DEFAULT_THRESHOLDS)
    t.update(dict((k, v) for k, v in (thresholds or {}).items() if v is not None))
    unknown = sorted(set(t) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ThresholdError("unknown threshold(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(DEFAULT_THRESHOLDS))))
    for key in ("free_storage_share", "free_storage_ceiling_share", "freeable_memory_share", "connections_share",
                "cpu_credit_share"):
        if not 0 < float(t[key]) < 1:
            raise ThresholdError("threshold %s must be a share between 0 and 1 (got %s)" % (key, t[key]))
    memory = float(memory_gib) if memory_gib else class_memory_gib(instance_class)
    conns = int(max_connections) if max_connections else default_max_connections(memory)
    if not iops:
        iops = GP3_BASELINE_IOPS if storage_type == "gp3" else 3 * int(allocated_gib)  # gp2: 3 IOPS per GiB
    cpu_periods = max(1, int(round(float(t["cpu_minutes"]) * 60 / PERIOD)))
    latency = float(t["latency_seconds"])
    specs = [
        _spec(identifier, "free-storage", "FreeStorageSpace", "Minimum", "LessThanThreshold",
              round(float(t["free_storage_share"]) * float(allocated_gib) * GIB), 1, "Bytes",
              "free storage under %d%% of %s GiB allocated" % (_pct(t["free_storage_share"]), _num(allocated_gib))),
        _spec(identifier, "freeable-memory", "FreeableMemory", "Average", "LessThanThreshold",
              round(float(t["freeable_memory_share"]) * memory * GIB), 3, "Bytes",
              "freeable memory under %d%% of the %s GiB of %s" % (_pct(t["freeable_memory_share"]), _num(memory), instance_class)),
        _spec(identifier, "connections", "DatabaseConnections", "Maximum", "GreaterThanThreshold",
              int(float(t["connections_share"]) * conns), 2, "Count",
              "connections over %d%% of max_connections %d" % (_pct(t["connections_share"]), conns)),
        _spec(identifier, "cpu", "CPUUtilization", "Average", "GreaterThanThreshold",
              float(t["cpu_percent"]), cpu_periods, "Percent",
              "CPU over %s%% for %d minutes" % (_num(t["cpu_percent"]), cpu_periods * PERIOD // 60)),
        _spec(identifier, "read-latency", "ReadLatency", "Average", "GreaterThanThreshold", latency, 3, "Seconds",
              "read latency over %d ms" % round(latency * 1000)),
        _spec(identifier, "write-latency", "WriteLatency", "Average", "GreaterThanThreshold", latency, 3, "Seconds",
              "write latency over %d ms" % round(latency * 1000)),
        # Little's law: requests in flight = IOPS x latency. A queue longer than the
        # storage's IOPS at the latency threshold means requests wait longer than that.
        _spec(identifier, "disk-queue", "DiskQueueDepth", "Average", "GreaterThanThreshold",
              round(float(iops) * latency, 1), 3, "Count",
              "disk queue over %s (%d IOPS x %d ms)" % (_num(round(float(iops) * latency, 1)), int(iops), round(latency * 1000))),
    ]
    ceiling = float(max_allocated_gib or 0)
    if ceiling > float(allocated_gib):
        share = float(t["free_storage_ceiling_share"])
        gib = ceiling_threshold_gib(allocated_gib, ceiling, share)
        if gib > 0:
            words = "headroom to the %s GiB autoscaling ceiling under %d%% (free storage under %s GiB of %s GiB allocated)" % (
                _num(ceiling), _pct(share), _num(round(gib, 2)), _num(allocated_gib))
        else:
            words = ("headroom to the %s GiB autoscaling ceiling under %d%%: out of reach until the allocated storage"
                     " (%s GiB) passes %s GiB; each run re-derives the threshold"
                     % (_num(ceiling), _pct(share), _num(allocated_gib), _num(round((1 - share) * ceiling, 2))))
        specs.append(_spec(identifier, "free-storage-ceiling", "FreeStorageSpace", "Minimum", "LessThanThreshold",
                           round(gib * GIB), 1, "Bytes", words))
    credits = max_credit_balance(instance_class)
    if credits:
        specs.append(_spec(identifier, "cpu-credits", "CPUCreditBalance", "Minimum", "LessThanThreshold",
                           round(float(t["cpu_credit_share"]) * credits, 1), 3, "Count",
                           "CPU credit balance under %d%% of the %d a %s holds at most"
                           % (_pct(t["cpu_credit_share"]), credits, instance_class)))
    for replica in replicas or []:
        lag = float(t["replica_lag_seconds"])
        specs.append(_spec(replica, "replica-lag", "ReplicaLag", "Maximum", "GreaterThanThreshold", lag, 2, "Seconds",
                           "read replica of %s over %s s behind for 10 minutes (an idle primary reads up to 300 s)"
                           % (identifier, _num(lag))))
    for s in specs:
        s["AlarmActions"] = [topic_arn] if topic_arn else []
        s["OKActions"] = [topic_arn] if topic_arn else []
    return sorted(specs, key=lambda s: s["AlarmName"])


def _spec(identifier, suffix, metric, statistic, comparison, threshold, periods, unit, words):
    return dict(
        AlarmName="%s-%s" % (identifier, suffix),
        AlarmDescription="%s %s: %s" % (MARKER, identifier, words),
        Namespace="AWS/RDS", MetricName=metric, Statistic=statistic,
        Dimensions=[dict(Name="DBInstanceIdentifier", Value=identifier)],
        Period=PERIOD, EvaluationPeriods=periods, DatapointsToAlarm=periods,
        Threshold=float(threshold), ComparisonOperator=comparison, TreatMissingData="missing",
        ActionsEnabled=True, Unit=unit,
    )


COMPARED = ("AlarmDescription", "Namespace", "MetricName", "Statistic", "Dimensions", "Period", "EvaluationPeriods",
            "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData", "ActionsEnabled",
            "AlarmActions", "OKActions", "Unit")


def alarm_differences(current, desired):
    """Keys of ``desired`` whose value differs in ``current`` (a describe_alarms entry)."""
    diffs = []
    for key in COMPARED:
        have, want = current.get(key), desired.get(key)
        if key in ("AlarmActions", "OKActions"):
            have, want = sorted(have or []), sorted(want or [])
        elif key == "Dimensions":
            have = sorted((d["Name"], d["Value"]) for d in have or [])
            want = sorted((d["Name"], d["Value"]) for d in want or [])
        elif key == "Threshold":
            have = None if have is None else float(have)
        if have != want:
            diffs.append(key)
    return diffs


def summary_line(spec):
    """One line per alarm: name, metric, comparison and threshold in its unit."""
    op = "<" if spec["ComparisonOperator"].startswith("Less") else ">"
    value = spec["Threshold"]
    if spec["Unit"] == "Bytes":
        shown = "%s GiB" % _num(round(value / GIB, 2))
    elif spec["Unit"] == "Seconds":
        shown = "%d ms" % round(value * 1000)
    elif spec["Unit"] == "Percent":
        shown = "%s%%" % _num(value)
    else:
        shown = _num(value)
    minutes = spec["Period"] * spec["EvaluationPeriods"] // 60
    return "%s: %s %s %s %s for %d min" % (spec["AlarmName"], spec["MetricName"], spec["Statistic"].lower(), op, shown, minutes)


def _pct(share):
    return int(round(float(share) * 100))


def _num(value):
    value = float(value)
    return str(int(value)) if value == int(value) else str(value)
