# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reads of an RDS instance and of the region's engine catalogue the project's RDS modules share."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.ndis.dbops.plugins.module_utils.aws_denied import ACCESS_DENIED


def describe_instance(client, identifier):
    """The instance's DescribeDBInstances entry, or None when it does not exist."""
    try:
        return client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except is_boto3_error_code("DBInstanceNotFound"):
        return None


def paginate(client, operation, key, **kwargs):
    pages = client.get_paginator(operation).paginate(**kwargs)
    out = []
    for page in pages:
        value = page
        for part in key.split("."):
            value = value.get(part) or {}
        out.extend(value or [])
    return out


def major_lifecycle(client, major):
    """SupportedEngineLifecycles of the major, or None where the region does not answer."""
    try:
        majors = client.describe_db_major_engine_versions(Engine="postgres", MajorEngineVersion=major)
    except is_boto3_error_code(ACCESS_DENIED):
        raise  # a refusal is the credentials' gap (the job's IAM policy), not a region without the call
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, AttributeError):  # pylint: disable=duplicate-except
        return None
    for entry in majors.get("DBMajorEngineVersions") or []:
        if entry.get("MajorEngineVersion") == major:
            return entry.get("SupportedEngineLifecycles")
    return None
