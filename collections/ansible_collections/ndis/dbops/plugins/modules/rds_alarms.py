#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# One call for the whole alarm set: community.aws.sns_topic plus one
# amazon.aws.cloudwatch_metric_alarm per alarm plus an event subscription would be ten module
# runs on every no-op run; this reads the topic, its subscriptions, the alarms and the event
# subscription once and writes only the differences.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_alarms
short_description: CloudWatch alarms, their SNS topic and an RDS event subscription for an RDS instance
version_added: "0.1.0"
description:
  - Ensures an SNS topic encrypted with a KMS key, its subscriptions (the declared ones are
    added, others removed), one CloudWatch alarm per health signal of the instance with a
    threshold derived from the instance (class memory, max_connections, allocated storage and
    its autoscaling ceiling, storage IOPS, burstable CPU credits), and an RDS event subscription sending the instance's
    failover, failure, low storage and maintenance events to the topic.
  - Thresholds come from the instance as it runs when it exists (class, allocated storage,
    autoscaling ceiling, IOPS), else from the declared values.
  - With storage autoscaling (a ceiling above the allocated storage) a second storage alarm,
    C(free-storage-ceiling), fires when the headroom to the ceiling (ceiling less used storage)
    is under C(free_storage_ceiling_share) of the ceiling, the point where autoscaling can no
    longer help. RDS publishes only free storage, so its threshold holds the allocated storage
    as described now; a run after autoscaling grew the storage moves both storage thresholds
    (check mode, and so a drift check, reports that as a change).
  - Alarms whose name starts with the instance identifier and whose description starts with
    C([ndis.dbops]) belong to this module; one no longer declared (C(cpu-credits) after a move
    off a burstable class) is deleted.
  - Reads everything first and writes only the differences; in check mode it reports them and
    writes nothing. AWS connection options come from the C(aws) module defaults group.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance the alarms watch.
    type: str
    required: true
  instance_class:
    description: Declared instance class, used until the instance exists.
    type: str
    required: true
  allocated_storage:
    description: Declared allocated storage in GiB, used until the instance exists.
    type: int
    required: true
  max_allocated_storage:
    description:
      - Declared storage autoscaling ceiling in GiB, used until the instance exists; 0 or not above
        O(allocated_storage) means no autoscaling.
    type: int
    default: 0
  storage_type:
    description: Declared storage type, used until the instance exists.
    type: str
    default: gp3
  max_connections:
    description: The instance's max_connections when set in its parameter group; else derived from the class's memory.
    type: int
  class_memory_gib:
    description: Memory of the instance class in GiB, for a class this module does not know.
    type: float
  thresholds:
    description:
      - Overrides of the shares and limits, keys C(free_storage_share), C(free_storage_ceiling_share), C(freeable_memory_share),
        C(connections_share), C(cpu_percent), C(cpu_minutes), C(cpu_credit_share), C(latency_seconds).
    type: dict
    default: {}
  topic_name:
    description: SNS topic the alarms and events notify.
    type: str
    required: true
  topic_kms_key_id:
    description: KMS key encrypting the topic (alias, id or ARN).
    type: str
    default: alias/aws/sns
  subscriptions:
    description: The topic's subscriptions; others are removed (pending confirmations cannot be, and are reported).
    type: list
    elements: dict
    default: []
    suboptions:
      protocol:
        description: SNS protocol (C(email), C(https), C(sqs), C(lambda), C(sms), ...).
        type: str
        required: true
      endpoint:
        description: Address, URL or ARN.
        type: str
        required: true
  event_categories:
    description: RDS event categories sent to the topic; empty removes the event subscription.
    type: list
    elements: str
    default: [failover, failure, low storage, maintenance]
  tags:
    description: Tags on the topic and the event subscription (set on creation).
    type: dict
    default: {}
  replicas:
    description:
      - Identifiers of the instance's read replicas; each gets a C(<replica>-replica-lag) alarm on its ReplicaLag
        (threshold C(replica_lag_seconds), 600 s, twice the lag RDS reports for an idle primary).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Ensure the alarms, their topic and the event subscription
  ndis.dbops.rds_alarms:
    db_instance_identifier: ndis-chatbot-prod
    instance_class: db.t4g.medium
    allocated_storage: 50
    max_allocated_storage: 200
    topic_name: ndis-chatbot-prod-alarms
    subscriptions:
      - {protocol: email, endpoint: dba-oncall@example.com}
"""

RETURN = r"""
topic_arn:
  description: The SNS topic (predicted in check mode before it exists).
  returned: always
  type: str
alarms:
  description: One line per declared alarm, with its threshold in its unit.
  returned: always
  type: list
  elements: str
alarm_names:
  description: The declared alarms' names.
  returned: always
  type: list
  elements: str
changes:
  description: What was (or, in check mode, would be) changed, one line each.
  returned: always
  type: list
  elements: str
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import aws_tags, rds_alarms
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance as read_instance


def ensure_topic(module, sns, arn, name, kms_key, tags, changes):
    try:
        attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    except is_boto3_error_code("NotFound"):
        attrs = None
    if attrs is None:
        changes.append("create SNS topic %s (KMS key %s)" % (name, kms_key))
        if not module.check_mode:
            arn = sns.create_topic(Name=name, Attributes={"KmsMasterKeyId": kms_key},
                                   Tags=aws_tags.tag_list(tags))["TopicArn"]
        return arn, True
    if attrs.get("KmsMasterKeyId") != kms_key:
        changes.append("set the KMS key of SNS topic %s: %s -> %s" % (name, attrs.get("KmsMasterKeyId") or "none", kms_key))
        if not module.check_mode:
            sns.set_topic_attributes(TopicArn=arn, AttributeName="KmsMasterKeyId", AttributeValue=kms_key)
    return arn, False


def ensure_subscriptions(module, sns, arn, desired, new_topic, changes, warnings):
    current = []
    if not new_topic:
        pages = sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn)
        current = [s for page in pages for s in page.get("Subscriptions", [])]
    want = set((s["protocol"], s["endpoint"]) for s in desired)
    have = set((s["Protocol"], s["Endpoint"]) for s in current)
    for protocol, endpoint in sorted(want - have):
        changes.append("subscribe %s %s to %s" % (protocol, endpoint, arn.split(":")[-1]))
        if not module.check_mode:
            sns.subscribe(TopicArn=arn, Protocol=protocol, Endpoint=endpoint)
    for s in current:
        if (s["Protocol"], s["Endpoint"]) in want:
            continue
        if not s["SubscriptionArn"].startswith("arn:"):
            warnings.append("subscription %s %s is pending confirmation and cannot be removed until it is confirmed"
                            " or expires (3 days)" % (s["Protocol"], s["Endpoint"]))
            continue
        changes.append("unsubscribe %s %s from %s" % (s["Protocol"], s["Endpoint"], arn.split(":")[-1]))
        if not module.check_mode:
            sns.unsubscribe(SubscriptionArn=s["SubscriptionArn"])


def ensure_alarms(module, cw, identifier, specs, changes):
    pages = cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=identifier + "-", AlarmTypes=["MetricAlarm"])
    current = dict((a["AlarmName"], a) for page in pages for a in page.get("MetricAlarms", []))
    before, after = [], []
    for spec in specs:
        have = current.get(spec["AlarmName"])
        after.append(rds_alarms.summary_line(spec))
        if have is None:
            changes.append("create alarm " + rds_alarms.summary_line(spec))
        else:
            before.append(rds_alarms.summary_line(dict(spec, Threshold=have.get("Threshold", 0.0),
                                                       EvaluationPeriods=have.get("EvaluationPeriods", 1))))
            diffs = rds_alarms.alarm_differences(have, spec)
            if not diffs:
                continue
            changes.append("update alarm %s (%s)" % (spec["AlarmName"], ", ".join(diffs)))
        if not module.check_mode:
            cw.put_metric_alarm(**spec)
    declared = set(s["AlarmName"] for s in specs)
    stale = sorted(n for n, a in current.items()
                   if n not in declared and (a.get("AlarmDescription") or "").startswith(rds_alarms.MARKER))
    for name in stale:
        before.append(name)
        changes.append("delete alarm %s (no longer declared)" % name)
    if stale and not module.check_mode:
        cw.delete_alarms(AlarmNames=stale)
    return before, after


def ensure_event_subscription(module, rds, identifier, topic_arn, categories, tags, changes):
    name = identifier + "-events"
    try:
        current = rds.describe_event_subscriptions(SubscriptionName=name)["EventSubscriptionsList"][0]
    except is_boto3_error_code("SubscriptionNotFound"):
        current = None
    if not categories:
        if current is not None:
            changes.append("delete RDS event subscription %s" % name)
            if not module.check_mode:
                rds.delete_event_subscription(SubscriptionName=name)
        return
    want = dict(SnsTopicArn=topic_arn, SourceType="db-instance", SourceIds=[identifier],
                EventCategories=sorted(categories), Enabled=True)
    if current is not None:
        have = dict(SnsTopicArn=current.get("SnsTopicArn"), SourceType=current.get("SourceType"),
                    SourceIds=sorted(current.get("SourceIdsList") or []),
                    EventCategories=sorted(current.get("EventCategoriesList") or []), Enabled=current.get("Enabled"))
        if have == want:
            return
        # Source ids and the topic cannot be modified in one call; the subscription is
        # replaced (a few seconds without it).
        changes.append("replace RDS event subscription %s (%s)"
                       % (name, ", ".join(k for k in sorted(want) if want[k] != have[k])))
        if not module.check_mode:
            rds.delete_event_subscription(SubscriptionName=name)
    else:
        changes.append("create RDS event subscription %s: %s of %s to the topic" % (name, ", ".join(want["EventCategories"]), identifier))
    if not module.check_mode:
        rds.create_event_subscription(SubscriptionName=name, Tags=aws_tags.tag_list(tags),
                                      **want)


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            instance_class=dict(type="str", required=True),
            allocated_storage=dict(type="int", required=True),
            max_allocated_storage=dict(type="int", default=0),
            storage_type=dict(type="str", default="gp3"),
            max_connections=dict(type="int"),
            class_memory_gib=dict(type="float"),
            thresholds=dict(type="dict", default={}),
            topic_name=dict(type="str", required=True),
            topic_kms_key_id=dict(type="str", default="alias/aws/sns"),
            subscriptions=dict(type="list", elements="dict", default=[], options=dict(
                protocol=dict(type="str", required=True),
                endpoint=dict(type="str", required=True),
            )),
            event_categories=dict(type="list", elements="str", default=["failover", "failure", "low storage", "maintenance"]),
            tags=dict(type="dict", default={}),
            replicas=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    identifier = p["db_instance_identifier"]
    changes, warnings = [], []
    try:
        rds = module.client("rds")
        instance = read_instance(rds, identifier)
        if instance is not None:  # arn:PARTITION:rds:REGION:ACCOUNT:db:NAME
            partition, region, account = (instance["DBInstanceArn"].split(":")[i] for i in (1, 3, 4))
        else:
            partition, account = aws_tags.caller_partition_account(module.client("sts"))
            region = rds.meta.region_name
        topic_arn = aws_tags.build_arn(partition, "sns", region, account, p["topic_name"])
        source = instance or {}
        try:
            specs = rds_alarms.alarm_specs(
                identifier,
                source.get("DBInstanceClass") or p["instance_class"],
                source.get("AllocatedStorage") or p["allocated_storage"],
                topic_arn,
                max_connections=p["max_connections"],
                iops=source.get("Iops"),
                storage_type=source.get("StorageType") or p["storage_type"],
                memory_gib=p["class_memory_gib"],
                thresholds=p["thresholds"],
                # a running instance without autoscaling reports no MaxAllocatedStorage
                max_allocated_gib=source.get("MaxAllocatedStorage") if instance is not None else p["max_allocated_storage"],
                replicas=p["replicas"],
            )
        except rds_alarms.ThresholdError as e:
            module.fail_json(msg="rds_alarms for %s: %s. Nothing was changed." % (identifier, e))
        sns = module.client("sns")
        topic_arn, new_topic = ensure_topic(module, sns, topic_arn, p["topic_name"], p["topic_kms_key_id"], p["tags"], changes)
        ensure_subscriptions(module, sns, topic_arn, p["subscriptions"], new_topic, changes, warnings)
        before, after = ensure_alarms(module, module.client("cloudwatch"), identifier, specs, changes)
        ensure_event_subscription(module, rds, identifier, topic_arn, p["event_categories"], p["tags"], changes)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not ensure the alarms of RDS instance %s" % identifier)
    for w in warnings:
        module.warn(w)
    result = dict(changed=bool(changes), changes=changes, topic_arn=topic_arn,
                  alarms=[rds_alarms.summary_line(s) for s in specs], alarm_names=[s["AlarmName"] for s in specs])
    if module._diff:
        result["diff"] = dict(before="".join(x + "\n" for x in before), after="".join(x + "\n" for x in after))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
