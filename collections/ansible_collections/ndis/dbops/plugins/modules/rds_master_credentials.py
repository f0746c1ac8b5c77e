#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# One read for everything that connects as the admin: the endpoint, and the master password
# from wherever the instance keeps it (its RDS-managed secret, or the SSM parameter), so no
# playbook reads the password another way.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_master_credentials
short_description: Read an RDS instance's endpoint and its master password, wherever it is kept
version_added: "0.4.0"
description:
  - Describes the instance. When RDS manages its master password (C(MasterUserSecret)), reads the
    password from that Secrets Manager secret; otherwise from the SSM SecureString O(ssm_parameter_name),
    unless O(supplied_password) is given (from Vault, say), which is returned as it is.
  - Read-only; never reports a change and runs the same in check mode. Run the task with C(no_log).
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance.
    type: str
    required: true
  ssm_parameter_name:
    description: SSM SecureString that keeps the master password when RDS does not; empty for none.
    type: str
    default: ''
  supplied_password:
    description: A master password supplied by the caller (mode C(ssm) only).
    type: str
    default: ''
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read the admin credentials
  ndis.dbops.rds_master_credentials:
    db_instance_identifier: ndis-chatbot-prod
    ssm_parameter_name: /ndis-chatbot/prod/rds/master_password
  register: creds
  no_log: true
"""

RETURN = r"""
exists:
  description: Whether the instance exists.
  returned: always
  type: bool
endpoint_address:
  description: The instance's endpoint host; empty when it does not exist (yet).
  returned: always
  type: str
endpoint_port:
  description: The endpoint's port.
  returned: always
  type: int
username:
  description: The master user name.
  returned: always
  type: str
password:
  description: The master password; empty when none is found.
  returned: always
  type: str
mode:
  description: C(managed) (RDS keeps it in Secrets Manager) or C(ssm).
  returned: always
  type: str
source:
  description: Where the password came from, without the value (secret ARN, SSM name, supplied, none).
  returned: always
  type: str
secret_arn:
  description: ARN of the RDS-managed secret; empty in mode C(ssm).
  returned: always
  type: str
"""

import json

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import rds_changes


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            ssm_parameter_name=dict(type="str", default=""),
            supplied_password=dict(type="str", default="", no_log=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    ident = p["db_instance_identifier"]
    out = dict(changed=False, exists=False, endpoint_address="", endpoint_port=5432, username="", password="",
               mode="", source="none", secret_arn="")
    try:
        try:
            instance = module.client("rds").describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
        except is_boto3_error_code("DBInstanceNotFound"):
            instance = None
        if instance is not None:
            endpoint = instance.get("Endpoint") or {}
            out.update(exists=True, endpoint_address=endpoint.get("Address") or "",
                       endpoint_port=endpoint.get("Port") or 5432, username=instance.get("MasterUsername") or "",
                       mode=rds_changes.master_password_mode(instance))
        if out["mode"] == "managed":
            arn = instance["MasterUserSecret"]["SecretArn"]
            value = module.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
            out.update(password=json.loads(value).get("password") or "", source="Secrets Manager secret " + arn,
                       secret_arn=arn)
        elif p["supplied_password"]:
            out.update(password=p["supplied_password"], source="supplied", mode=out["mode"] or "ssm")
        elif p["ssm_parameter_name"]:
            try:
                value = module.client("ssm").get_parameter(Name=p["ssm_parameter_name"], WithDecryption=True)
                out.update(password=value["Parameter"]["Value"], source="SSM " + p["ssm_parameter_name"])
            except is_boto3_error_code("ParameterNotFound"):
                pass
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ValueError, KeyError) as e:
        module.fail_json(msg="Could not read the master credentials of %s: %s. Check the instance exists and that "
                             "this machine may call rds:DescribeDBInstances and secretsmanager:GetSecretValue "
                             "(or ssm:GetParameter)." % (ident, e))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
