#!/usr/bin/python
# -*- coding: utf-8 -*-
# Read-only probe of one SSM parameter. community.aws.ssm_parameter only writes and the
# amazon.aws.ssm_parameter lookup returns the value alone (no type, version or key), and
# lookups ignore module_defaults, so a play could not point them at its endpoint once.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ssm_parameter_info
short_description: Read an SSM parameter's metadata, and its value only when asked
description:
  - Returns whether an AWS Systems Manager parameter exists, with its type, version,
    KMS key, tier, description, tags and last modification date.
  - The value is returned only with O(with_decryption=true); set C(no_log) on that task.
  - Read-only; supports check mode. AWS connection options come from the C(aws) module
    defaults group, like every amazon.aws module.
version_added: 0.1.0
author:
  - pgvector-rds-ops maintainers
options:
  name:
    description: Full name of the parameter, for example C(/ndis-chatbot/prod/DATABASE_URL).
    type: str
    required: true
  with_decryption:
    description:
      - Also return the (decrypted) value in RV(value).
    type: bool
    default: false
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read the app connection string's metadata
  ndis.dbops.ssm_parameter_info:
    name: /ndis-chatbot/prod/DATABASE_URL
  register: __url_meta

- name: Read a stored password
  ndis.dbops.ssm_parameter_info:
    name: /ndis-chatbot/prod/rds/master_password
    with_decryption: true
  register: __stored
  no_log: true
"""

RETURN = r"""
exists:
  description: Whether the parameter exists.
  returned: always
  type: bool
name:
  description: The parameter's name.
  returned: always
  type: str
type:
  description: C(String), C(StringList) or C(SecureString).
  returned: when the parameter exists
  type: str
version:
  description: The parameter's version number.
  returned: when the parameter exists
  type: int
key_id:
  description: KMS key of a SecureString (an alias or key id), else null.
  returned: when the parameter exists
  type: str
description:
  description: The parameter's description, or an empty string.
  returned: when the parameter exists
  type: str
tags:
  description: The parameter's tags.
  returned: when the parameter exists
  type: dict
tier:
  description: C(Standard), C(Advanced) or C(Intelligent-Tiering).
  returned: when the parameter exists
  type: str
last_modified_date:
  description: When the parameter last changed (ISO 8601).
  returned: when the parameter exists
  type: str
value:
  description: The decrypted value.
  returned: when the parameter exists and O(with_decryption=true)
  type: str
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def describe(client, name):
    """The DescribeParameters entry for name (KeyId, Tier, ...), or None."""
    pages = client.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
    )
    for page in pages:
        for entry in page.get("Parameters", []):
            if entry.get("Name") == name:
                return entry
    return None


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            with_decryption=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    client = module.client("ssm")
    try:
        param = client.get_parameter(Name=name, WithDecryption=module.params["with_decryption"])["Parameter"]
    except is_boto3_error_code("ParameterNotFound"):
        module.exit_json(changed=False, exists=False, name=name)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg=f"Could not read SSM parameter {name}")

    try:
        meta = describe(client, name) or {}
        tags = client.list_tags_for_resource(ResourceType="Parameter", ResourceId=name).get("TagList", [])
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Could not describe SSM parameter {name}")

    modified = param.get("LastModifiedDate")
    result = dict(
        changed=False,
        exists=True,
        name=name,
        type=param["Type"],
        version=param["Version"],
        key_id=meta.get("KeyId"),
        tier=meta.get("Tier", "Standard"),
        description=meta.get("Description", ""),
        tags={t["Key"]: t["Value"] for t in tags},
        last_modified_date=modified.isoformat() if modified else None,
    )
    if module.params["with_decryption"]:
        result["value"] = param["Value"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
