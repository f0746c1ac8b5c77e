# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one read of an RDS instance the project's RDS modules share."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code


def describe_instance(client, identifier):
    """The instance's DescribeDBInstances entry, or None when it does not exist."""
    try:
        return client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except is_boto3_error_code("DBInstanceNotFound"):
        return None
