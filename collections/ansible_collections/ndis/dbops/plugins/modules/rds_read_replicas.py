#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# amazon.aws.rds_instance can create a read replica, but it passes the parameter group at creation (a
# same-Region PostgreSQL replica takes the source's and needs a modify afterwards), has no notion of
# "the replicas of this instance" (so nothing can tell an undeclared one) and its check mode cannot say
# which settings would change. This module does the replicas of one instance, and only that.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_read_replicas
short_description: Converge the read replicas of an RDS for PostgreSQL instance
version_added: "0.9.0"
description:
  - Each replica in O(replicas) that does not exist is created (CreateDBInstanceReadReplica) from
    O(source_db_instance_identifier), which must exist with automated backups on (RDS refuses a replica
    otherwise). Its parameter group, when it is not the one the replica got (the source's), is set by a
    ModifyDBInstance afterwards, since RDS takes none at creation for a same-Region PostgreSQL replica.
  - An existing replica is converged (instance class, parameter group, Enhanced Monitoring interval
    (ModifyDBInstance with O(apply_immediately)) and tags (exactly the declared ones)). Its Availability Zone
    cannot change in place, so a difference fails, naming it.
  - A replica of the source that is not declared is deleted (no final snapshot; its data is the source's)
    only with O(remove_undeclared); otherwise it is reported in RV(undeclared) and left alone.
  - In check mode nothing changes; RV(changes) lists each change the real run would make, one per setting.
author:
  - ndis dbops maintainers
options:
  source_db_instance_identifier:
    description: The instance the replicas copy.
    type: str
    required: true
  replicas:
    description: The declared replicas.
    type: list
    elements: dict
    default: []
    suboptions:
      identifier:
        description: DB instance identifier of the replica.
        type: str
        required: true
      instance_class:
        description: Instance class.
        type: str
        required: true
      availability_zone:
        description: Availability Zone at creation; empty for RDS's choice. Cannot change afterwards.
        type: str
        default: ''
      parameter_group:
        description: DB parameter group; empty for the one the replica gets (the source's).
        type: str
        default: ''
      monitoring_interval:
        description: Enhanced Monitoring interval in seconds (0 off).
        type: int
        default: 0
      monitoring_role_arn:
        description: Enhanced Monitoring role, required when O(replicas[].monitoring_interval) is not 0.
        type: str
        default: ''
      tags:
        description: Tags of the replica (exactly these).
        type: dict
        default: {}
  remove_undeclared:
    description: Delete the replicas of the source that O(replicas) does not name.
    type: bool
    default: false
  apply_immediately:
    description: Apply a class or monitoring change now rather than in the replica's maintenance window.
    type: bool
    default: false
  wait:
    description: Wait until a created replica is available and a deleted one is gone.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for each.
    type: int
    default: 3600
  poll_interval:
    description: Seconds between two reads while waiting.
    type: int
    default: 15
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Keep one read replica of the instance
  ndis.dbops.rds_read_replicas:
    source_db_instance_identifier: ndis-chatbot-prod
    replicas:
      - identifier: ndis-chatbot-prod-replica-1
        instance_class: db.t4g.medium
        availability_zone: ap-southeast-2b
        parameter_group: ndis-chatbot-prod-replica-postgres16
        tags: {Name: ndis-chatbot-prod-replica-1}
"""

RETURN = r"""
changes:
  description: Each change made (in check mode, that would be made), one per replica and setting.
  returned: always
  type: list
  elements: dict
  contains:
    replica: {description: The replica., type: str}
    setting: {description: "C(create), C(delete), or the setting that changes.", type: str}
    current: {description: Its value now (empty for a create)., type: raw}
    declared: {description: The declared value (empty for a delete)., type: raw}
table:
  description: RV(changes) as lines of a table, for a person.
  returned: always
  type: list
  elements: str
undeclared:
  description: Replicas of the source that are not declared (deleted only with O(remove_undeclared)).
  returned: always
  type: list
  elements: str
replicas:
  description: The declared replicas after the run, each with its identifier, status, endpoint address and port (empty before creation).
  returned: always
  type: list
  elements: dict
"""

import time

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils.aws_tags import tag_list
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance as describe


def current_settings(inst):
    groups = inst.get("DBParameterGroups") or [{}]
    return {
        "instance_class": inst.get("DBInstanceClass"),
        "parameter_group": groups[0].get("DBParameterGroupName", ""),
        "monitoring_interval": int(inst.get("MonitoringInterval") or 0),
        "tags": dict((t["Key"], t["Value"]) for t in inst.get("TagList") or []),
    }


def plan(source, declared, existing, remove_undeclared):
    """[(replica, setting, current, declared)]: what differs between the declaration and ``existing``
    ({identifier: DescribeDBInstances entry or None}); raises ValueError for what cannot be done."""
    changes = []
    for rep in declared:
        name, inst = rep["identifier"], existing.get(rep["identifier"])
        want = {"instance_class": rep["instance_class"], "monitoring_interval": rep["monitoring_interval"],
                "tags": dict((k, str(v)) for k, v in (rep["tags"] or {}).items())}
        if rep["parameter_group"]:
            want["parameter_group"] = rep["parameter_group"]
        if inst is None:
            changes.append((name, "create", "", rep["instance_class"]))
            if rep["parameter_group"] and source is not None:
                have = current_settings(source)["parameter_group"]
                if have != rep["parameter_group"]:
                    changes.append((name, "parameter_group", have, rep["parameter_group"]))
            continue
        if inst.get("ReadReplicaSourceDBInstanceIdentifier") != source["DBInstanceIdentifier"]:
            raise ValueError("%s exists and is not a read replica of %s; choose another identifier or remove it"
                             % (name, source["DBInstanceIdentifier"]))
        if rep["availability_zone"] and inst.get("AvailabilityZone") not in (None, "", rep["availability_zone"]):
            raise ValueError("%s is in %s, declared in %s: a replica's Availability Zone cannot change in place. "
                             "Declare %s, or delete it (remove it from the list, run with the removal switch) and "
                             "declare it again." % (name, inst.get("AvailabilityZone"), rep["availability_zone"],
                                                    inst.get("AvailabilityZone")))
        have = current_settings(inst)
        for setting in ("instance_class", "parameter_group", "monitoring_interval", "tags"):
            if setting in want and have[setting] != want[setting]:
                changes.append((name, setting, have[setting], want[setting]))
    undeclared = []
    if source is not None:
        names = set(r["identifier"] for r in declared)
        undeclared = sorted(r for r in source.get("ReadReplicaDBInstanceIdentifiers") or [] if r not in names)
        if remove_undeclared:
            changes.extend((r, "delete", "replica of %s" % source["DBInstanceIdentifier"], "") for r in undeclared)
    return changes, undeclared


def wait_for(module, client, name, gone):
    params = module.params
    deadline = time.monotonic() + params["wait_timeout"]
    while True:
        inst = describe(client, name)
        if (inst is None) if gone else (inst is not None and inst["DBInstanceStatus"] == "available"):
            return inst
        if inst is not None and inst["DBInstanceStatus"] in ("failed", "incompatible-parameters", "storage-full"):
            module.fail_json(msg="%s is %s; see its events (aws rds describe-events --source-identifier %s)"
                             % (name, inst["DBInstanceStatus"], name))
        if time.monotonic() > deadline:
            module.fail_json(msg="%s was not %s within %d s" % (name, "gone" if gone else "available",
                                                              params["wait_timeout"]))
        time.sleep(params["poll_interval"])


def apply(module, client, source, declared, changes):
    params = module.params
    by_name = dict((r["identifier"], r) for r in declared)
    for name in sorted(set(c[0] for c in changes if c[1] == "create")):
        rep = by_name[name]
        request = dict(DBInstanceIdentifier=name, SourceDBInstanceIdentifier=source["DBInstanceIdentifier"],
                       DBInstanceClass=rep["instance_class"], Tags=tag_list(rep["tags"]),
                       PubliclyAccessible=False, MonitoringInterval=rep["monitoring_interval"])
        if rep["availability_zone"]:
            request["AvailabilityZone"] = rep["availability_zone"]
        if rep["monitoring_interval"]:
            request["MonitoringRoleArn"] = rep["monitoring_role_arn"]
        client.create_db_instance_read_replica(**request)
        if params["wait"] or rep["parameter_group"]:
            wait_for(module, client, name, gone=False)
    modify = {}
    for name, setting, _current, want in changes:
        rep = by_name.get(name)
        if setting == "instance_class":
            modify.setdefault(name, {})["DBInstanceClass"] = want
        elif setting == "parameter_group":
            modify.setdefault(name, {})["DBParameterGroupName"] = want
        elif setting == "monitoring_interval":
            modify.setdefault(name, {}).update(MonitoringInterval=want)
            if want:
                modify[name]["MonitoringRoleArn"] = rep["monitoring_role_arn"]
        elif setting == "tags":
            inst = describe(client, name)
            arn, have = inst["DBInstanceArn"], current_settings(inst)["tags"]
            gone = [k for k in have if k not in want]
            if gone:
                client.remove_tags_from_resource(ResourceName=arn, TagKeys=gone)
            fresh = dict((k, v) for k, v in want.items() if have.get(k) != v)
            if fresh:
                client.add_tags_to_resource(ResourceName=arn, Tags=tag_list(fresh))
    for name, request in sorted(modify.items()):
        # a parameter group alone applies at once (its static parameters at the next reboot); the class waits
        # for the window unless apply_immediately
        client.modify_db_instance(DBInstanceIdentifier=name, ApplyImmediately=params["apply_immediately"]
                                  or set(request) == {"DBParameterGroupName"}, **request)
    for name in sorted(c[0] for c in changes if c[1] == "delete"):
        client.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True)
        if params["wait"]:
            wait_for(module, client, name, gone=True)


def table(changes):
    rows = [("replica", "setting", "current", "declared")] + [
        (r, s, str(c) if c != "" else "-", str(d) if d != "" else "-") for r, s, c, d in changes]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            source_db_instance_identifier=dict(type="str", required=True),
            replicas=dict(type="list", elements="dict", default=[], options=dict(
                identifier=dict(type="str", required=True),
                instance_class=dict(type="str", required=True),
                availability_zone=dict(type="str", default=""),
                parameter_group=dict(type="str", default=""),
                monitoring_interval=dict(type="int", default=0),
                monitoring_role_arn=dict(type="str", default=""),
                tags=dict(type="dict", default={}),
            )),
            remove_undeclared=dict(type="bool", default=False),
            apply_immediately=dict(type="bool", default=False),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=3600),
            poll_interval=dict(type="int", default=15),
        ),
        supports_check_mode=True,
    )
    params = module.params
    client = module.client("rds")
    declared = params["replicas"]
    try:
        source = describe(client, params["source_db_instance_identifier"])
        if source is None and declared and not module.check_mode:
            module.fail_json(msg="%s does not exist: its replicas are created after it (run the rds_instance role)"
                             % params["source_db_instance_identifier"])
        if source is not None and declared and not int(source.get("BackupRetentionPeriod") or 0):
            module.fail_json(msg="%s has automated backups off (BackupRetentionPeriod 0); RDS makes no read replica "
                             "of it. Set rds_instance_backup_retention_days to 1 or more." % source["DBInstanceIdentifier"])
        existing = dict((r["identifier"], describe(client, r["identifier"]) if source is not None else None)
                        for r in declared)
        try:
            changes, undeclared = plan(source, declared, existing, params["remove_undeclared"])
        except ValueError as e:
            module.fail_json(msg=str(e))
        if changes and not module.check_mode:
            apply(module, client, source, declared, changes)
        after = []
        for rep in declared:
            inst = describe(client, rep["identifier"]) if source is not None else None
            endpoint = (inst or {}).get("Endpoint") or {}
            after.append({"identifier": rep["identifier"], "status": (inst or {}).get("DBInstanceStatus", ""),
                          "address": endpoint.get("Address", ""), "port": endpoint.get("Port", 0)})
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not converge the read replicas of %s" % params["source_db_instance_identifier"])
    rows = [{"replica": r, "setting": s, "current": c, "declared": d} for r, s, c, d in changes]
    module.exit_json(changed=bool(changes), changes=rows, table=table(changes) if changes else [],
                     undeclared=undeclared, replicas=after)


if __name__ == "__main__":
    main()
