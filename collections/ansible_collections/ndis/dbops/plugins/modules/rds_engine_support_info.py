#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_engine_support_info
short_description: Warn before AWS forces an engine upgrade - deprecation and end of standard support, with dates
version_added: "0.3.0"
description:
  - Reads the instance's engine version, the region's catalogue (C(DescribeDBEngineVersions)) and the major's
    lifecycle (C(DescribeDBMajorEngineVersions)), and returns C(WARN) when the running minor is deprecated or
    its end of standard support (from AWS's retirement notices, module_utils/rds_catalogue.py) is within
    O(warn_days), or the major's end of standard support is; each warning names the date and the version the
    project would move to (the newest minor of the major the region offers). C(PASS) otherwise, with the dates.
  - Read-only; supports check mode. C(verify.yml) and C(health.yml) show it as one line.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance.
    type: str
    required: true
  warn_days:
    description: Warn this many days or fewer before an end of standard support.
    type: int
    default: 180
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Warn before AWS retires the engine version
  ndis.dbops.rds_engine_support_info:
    db_instance_identifier: ndis-chatbot-prod
    warn_days: 180
"""

RETURN = r"""
status:
  description: C(WARN), C(PASS), or C(INFO) when the instance does not exist.
  returned: always
  type: str
detail:
  description: The warnings with their dates and the target, or the version's status and dates.
  returned: always
  type: str
engine_version:
  description: The running version.
  returned: always
  type: str
target:
  description: The version the project would move to (newest offered minor of the same major).
  returned: always
  type: str
"""

import datetime

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.ndis.dbops.plugins.module_utils import rds_catalogue
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance, major_lifecycle, paginate


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            warn_days=dict(type="int", default=180),
        ),
        supports_check_mode=True,
    )
    p = module.params
    client = module.client("rds")
    out = dict(changed=False, status="INFO", detail="", engine_version="", target="")
    try:
        instance = describe_instance(client, p["db_instance_identifier"])
        if instance is None:
            out["detail"] = "%s does not exist" % p["db_instance_identifier"]
            module.exit_json(**out)
        version = instance["EngineVersion"]
        catalogue = paginate(client, "describe_db_engine_versions", "DBEngineVersions", Engine="postgres", IncludeAll=True)
        newest = client.describe_db_engine_versions(Engine="postgres", DefaultOnly=True)["DBEngineVersions"]
        status, detail, target = rds_catalogue.support_status(
            version, catalogue, major_lifecycle(client, rds_catalogue.major_of(version)),
            datetime.datetime.now(datetime.timezone.utc).date(), p["warn_days"], client.meta.region_name,
            newest_major=rds_catalogue.major_of(newest[0]["EngineVersion"]) if newest else None)
        out.update(status=status, detail=detail, engine_version=version, target=target or "")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not read the engine catalogue for %s; this machine needs "
                                    "rds:DescribeDBInstances, rds:DescribeDBEngineVersions and "
                                    "rds:DescribeDBMajorEngineVersions" % p["db_instance_identifier"])
    module.exit_json(**out)


if __name__ == "__main__":
    main()
