# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Tags and ARNs as the AWS APIs the project's monitoring modules call want them.

One home for the small conversions rds_alarms (SNS topic, event subscription) and
rds_observability (IAM role, log groups) both need: a tag dict as a Key/Value list or a
string map, and the ARN of a resource not created yet (check mode reports it), built from
the caller's partition and account.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def tag_list(tags):
    """{"a": 1} -> [{"Key": "a", "Value": "1"}], sorted by key (SNS, RDS, IAM)."""
    return [{"Key": k, "Value": str(v)} for k, v in sorted((tags or {}).items())]


def tag_map(tags):
    """{"a": 1} -> {"a": "1"} (CloudWatch Logs)."""
    return dict((k, str(v)) for k, v in (tags or {}).items())


def caller_partition_account(sts):
    """(partition, account id) of the credentials in use."""
    ident = sts.get_caller_identity()
    return ident["Arn"].split(":")[1], ident["Account"]


def build_arn(partition, service, region, account, resource):
    """arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE (region empty for IAM)."""
    return "arn:%s:%s:%s:%s:%s" % (partition, service, region, account, resource)
