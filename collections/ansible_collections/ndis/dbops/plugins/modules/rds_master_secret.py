#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# amazon.aws.rds_instance (10.x, 11.x) has no ManageMasterUserPassword: it cannot create an
# instance whose master password RDS keeps, nor switch one. This module does only that part;
# amazon.aws.rds_instance converges every other setting afterwards.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rds_master_secret
short_description: Keep an RDS instance's master password in Secrets Manager (RDS-managed), or in SSM
version_added: "0.4.0"
description:
  - With O(mode=managed), an instance that does not exist is created with C(ManageMasterUserPassword)
    from O(create) (CreateDBInstance parameters). RDS draws the password, sets it and keeps it in the
    Secrets Manager secret it names in C(MasterUserSecret). Nothing else keeps a copy.
  - An existing instance in the other mode is switched (ModifyDBInstance, applied at once whatever
    apply_immediately says, no restart). To C(managed), RDS sets a new password and the SSM copy named by
    O(ssm_parameter_name) is deleted; to C(ssm), RDS deletes its secret and O(master_user_password) is set.
  - With O(mode=managed), the secret's rotation schedule is set to O(rotation_days) (Secrets Manager
    RotateSecret with RotateImmediately false, so the password does not change now).
  - O(mode=auto) keeps an existing instance's mode and creates a new one as C(managed).
  - In check mode nothing changes; RV(actions) says what the real run would do.
author:
  - ndis dbops maintainers
options:
  db_instance_identifier:
    description: The instance.
    type: str
    required: true
  mode:
    description: Who keeps the master password.
    type: str
    choices: [auto, managed, ssm]
    default: auto
  create:
    description:
      - CreateDBInstance parameters (boto3 names, C(Tags) as a list of C(Key)/C(Value)) for an instance that
        does not exist yet, in mode C(managed); C(MasterUserPassword) must not be among them.
    type: dict
    default: {}
  kms_key_id:
    description: KMS key of the secret RDS creates; empty for the AWS managed key aws/secretsmanager.
    type: str
    default: ''
  rotation_days:
    description: Days between rotations of the secret (RDS's own default is 7); 0 leaves the schedule alone.
    type: int
    default: 7
  master_user_password:
    description: The password to set when switching an instance to C(ssm).
    type: str
    default: ''
  ssm_parameter_name:
    description: SSM parameter that kept the password before a switch to C(managed); deleted then. Empty for none.
    type: str
    default: ''
  wait:
    description: Wait until a created or switched instance is available.
    type: bool
    default: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Create the instance with an RDS-managed master password
  ndis.dbops.rds_master_secret:
    db_instance_identifier: ndis-chatbot-prod
    mode: auto
    rotation_days: 7
    create:
      Engine: postgres
      EngineVersion: "16.8"
      DBInstanceClass: db.t4g.medium
      AllocatedStorage: 20
      MasterUsername: admin
"""

RETURN = r"""
mode:
  description: Who keeps the master password after the run (in check mode, would keep it).
  returned: always
  type: str
created:
  description: Whether the instance was (in check mode, would be) created here.
  returned: always
  type: bool
secret_arn:
  description: ARN of the secret RDS keeps the password in; empty in mode C(ssm) or before creation.
  returned: always
  type: str
actions:
  description: What was (in check mode, would be) done, in words.
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
from ansible_collections.ndis.dbops.plugins.module_utils import rds_changes
from ansible_collections.ndis.dbops.plugins.module_utils.rds_instance_info import describe_instance as describe


def wait_available(module, client, identifier):
    if module.params["wait"]:
        client.get_waiter("db_instance_available").wait(
            DBInstanceIdentifier=identifier, WaiterConfig=dict(Delay=15, MaxAttempts=240))


def converge(module, client, sm, ssm):
    p = module.params
    ident = p["db_instance_identifier"]
    check = module.check_mode
    actions = []
    instance = describe(client, ident)
    created = False
    if instance is None:
        mode = "managed" if p["mode"] in ("auto", "managed") else "ssm"
        if mode == "ssm":
            return dict(changed=False, mode=mode, created=False, secret_arn="", actions=actions)
        params = dict(p["create"], DBInstanceIdentifier=ident, ManageMasterUserPassword=True)
        if "MasterUserPassword" in params:
            module.fail_json(msg="create must not carry MasterUserPassword: RDS draws the password in mode managed.")
        if p["kms_key_id"]:
            params["MasterUserSecretKmsKeyId"] = p["kms_key_id"]
        actions.append("create %s with its master password kept by RDS in Secrets Manager (KMS key %s)"
                       % (ident, p["kms_key_id"] or "aws/secretsmanager"))
        created = True
        if check:
            return dict(changed=True, mode=mode, created=True, secret_arn="", actions=actions)
        client.create_db_instance(**params)
        wait_available(module, client, ident)
        instance = describe(client, ident)
    have = rds_changes.master_password_mode(instance)
    mode = have if p["mode"] == "auto" else p["mode"]
    if mode != have:
        if mode == "managed":
            actions.append("switch %s to an RDS-managed master password: RDS sets a new one now (no restart)" % ident)
            if p["ssm_parameter_name"]:
                actions.append("delete the SSM copy %s" % p["ssm_parameter_name"])
            args = dict(ManageMasterUserPassword=True)
            if p["kms_key_id"]:
                args["MasterUserSecretKmsKeyId"] = p["kms_key_id"]
        else:
            if len(p["master_user_password"]) < 8:
                module.fail_json(msg="Switching %s to mode ssm needs the password to set (master_user_password): "
                                     "keep it in SSM or supply it. Nothing was changed." % ident)
            actions.append("switch %s to a master password kept in SSM: RDS deletes its secret and sets that "
                           "password now (no restart)" % ident)
            args = dict(ManageMasterUserPassword=False, MasterUserPassword=p["master_user_password"])
        if check:
            return dict(changed=True, mode=mode, created=created, secret_arn="", actions=actions)
        instance = client.modify_db_instance(DBInstanceIdentifier=ident, ApplyImmediately=True, **args)["DBInstance"]
        wait_available(module, client, ident)
        instance = describe(client, ident)
        if mode == "managed" and p["ssm_parameter_name"]:
            try:
                ssm.delete_parameter(Name=p["ssm_parameter_name"])
            except is_boto3_error_code("ParameterNotFound"):
                pass
    secret_arn = ((instance or {}).get("MasterUserSecret") or {}).get("SecretArn", "")
    if mode == "managed" and secret_arn and p["rotation_days"] > 0:
        described = sm.describe_secret(SecretId=secret_arn)
        days = (described.get("RotationRules") or {}).get("AutomaticallyAfterDays")
        if not described.get("RotationEnabled") or days != p["rotation_days"]:
            actions.append("rotate the master password's secret every %d days (was %s)"
                           % (p["rotation_days"], days if described.get("RotationEnabled") else "not scheduled"))
            if not check:
                sm.rotate_secret(SecretId=secret_arn, RotationRules=dict(AutomaticallyAfterDays=p["rotation_days"]),
                                 RotateImmediately=False)
    return dict(changed=bool(actions), mode=mode, created=created, secret_arn=secret_arn, actions=actions)


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            db_instance_identifier=dict(type="str", required=True),
            mode=dict(type="str", default="auto", choices=["auto", "managed", "ssm"]),
            create=dict(type="dict", default={}),
            kms_key_id=dict(type="str", default=""),
            rotation_days=dict(type="int", default=7),
            master_user_password=dict(type="str", default="", no_log=True),
            ssm_parameter_name=dict(type="str", default=""),
            wait=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if not 0 <= module.params["rotation_days"] <= 1000:
        module.fail_json(msg="rotation_days must be 1 to 1000 (Secrets Manager's range), or 0 to leave the schedule alone.")
    client, sm, ssm = module.client("rds"), module.client("secretsmanager"), module.client("ssm")
    try:
        result = converge(module, client, sm, ssm)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError,
            botocore.exceptions.WaiterError) as e:
        module.fail_json_aws(e, msg="Could not keep the master password of %s" % module.params["db_instance_identifier"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
