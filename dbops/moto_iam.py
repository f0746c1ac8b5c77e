"""IAM enforcement for the local stack's moto server (``--enforce-iam``).

moto evaluates the IAM policies of the caller's access key once its setting
``INITIAL_NO_AUTH_ACTION_COUNT`` is reached: every request is then signed by a
known user and allowed only when one of that user's policies allows its action.
This module turns that on in the server's process, with

* an administrator, ``ndis-local-admin``, holding ``*`` on ``*``, whose access key
  is the stack's usual ``testing``/``testing``: the stack's own tools, the tests'
  boto3 clients and a run without a job's credentials work as before;
* four differences from AWS patched, each documented where it is and tested in
  ``tests/test_moto_compat.py`` (patches I1-I4; the moto_server patches are numbered 1, 2, ...), so that the project's policy
  documents (scoped resources, a condition on ``iam:PassRole``) can be used as
  they are and ``iam:PassRole`` is checked;
* a request log: one JSON line per request (user, action, resource, allowed) in
  the file given, which is how the tests learn what each job really calls.

The job users themselves are created over the IAM API by :mod:`dbops.local_stack`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

ADMIN_USER = "ndis-local-admin"
ADMIN_KEY = "testing"  # the stack's usual key (dbops.local_stack.AWS_KEY)
ADMIN_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

# Services whose SigV4 signing name is not their IAM prefix. moto builds the action it checks from the
# signing name ("monitoring:PutMetricAlarm"); AWS's policies say "cloudwatch:PutMetricAlarm".
IAM_PREFIX_OF_SIGNING_NAME = {"monitoring": "cloudwatch"}
# Operations moto checks under their API name where IAM has no such action: AWS checks these.
IAM_ACTION_OF_OPERATION = {"s3:HeadBucket": "s3:ListBucket"}
# Requests that pass a role to RDS: AWS checks iam:PassRole on it for the caller (its parameter).
PASSES_ROLE = {"rds:CreateDBInstance": "MonitoringRoleArn", "rds:ModifyDBInstance": "MonitoringRoleArn"}

_LOG_LOCK = threading.Lock()


def patch_iam_unevaluated_resources_and_conditions() -> None:
    """Patch I1: a statement's Resource and Condition, where moto has nothing to compare them with.

    AWS: each statement's Resource is matched against the ARN of what the request touches, and its
    Condition against the request's context (iam:PassedToService, aws:RequestTag/..., ...).
    moto 5.2.5: it knows the resource only for S3 (the bucket or object ARN); for every other service it
    passes "*", which a scoped Resource ("arn:aws:rds:...:db:ndis-chatbot-local") never matches, and it has
    no request context, so any Condition fails. A least-privilege policy would deny everything.
    Patched: where moto passes "*" the statement's Resource is taken as matching, and where it has no
    context the Condition as met; the statement is then judged on its Effect and Action, which is what
    moto can check. S3's resources are still compared. What this leaves unchecked is listed in docs/aws.md.
    """
    from moto.iam import access_control

    original = access_control.IAMPolicyStatement.is_action_permitted
    if getattr(original, "_ndis_patched", False):
        return

    def is_action_permitted(self: Any, action: str, resource: str = "*", principal: str | None = None,
                            incoming_condition_values: dict[str, str] | None = None) -> Any:
        statement = self._statement
        view = dict(statement)
        if resource == "*" and "Resource" in view:
            view["Resource"] = "*"
        if incoming_condition_values is None:
            view.pop("Condition", None)
        if view != statement:
            return original(access_control.IAMPolicyStatement(view), action, resource, principal,
                            incoming_condition_values)
        return original(self, action, resource, principal, incoming_condition_values)

    is_action_permitted._ndis_patched = True  # type: ignore[attr-defined]
    access_control.IAMPolicyStatement.is_action_permitted = is_action_permitted


def patch_iam_action_names() -> None:
    """Patch I2: the IAM action a request is checked against.

    AWS: CloudWatch's actions are "cloudwatch:PutMetricAlarm", ... (its signing name is "monitoring"), and
    S3's HeadBucket is allowed by s3:ListBucket (IAM has no s3:HeadBucket).
    moto 5.2.5: builds the action from the request's signing name and operation, "monitoring:PutMetricAlarm"
    and "s3:HeadBucket", which no real policy names. Patched: the signing name is mapped to the IAM prefix
    (IAM_PREFIX_OF_SIGNING_NAME) and those operations to their action (IAM_ACTION_OF_OPERATION).
    """
    from moto.iam import access_control

    original = access_control.IAMRequestBase.__init__
    if getattr(original, "_ndis_patched", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        service, _, name = self._action.partition(":")
        if service in IAM_PREFIX_OF_SIGNING_NAME:
            self._action = f"{IAM_PREFIX_OF_SIGNING_NAME[service]}:{name}"
        self._action = IAM_ACTION_OF_OPERATION.get(self._action, self._action)

    __init__._ndis_patched = True  # type: ignore[attr-defined]
    access_control.IAMRequestBase.__init__ = __init__


def _passed_role(request: Any) -> str:
    value = (request._data or {}).get(PASSES_ROLE.get(request._action, ""), "")
    return (value[0] if isinstance(value, list) and value else value) or ""


def patch_iam_pass_role(path: str | None = None) -> None:
    """Patch I3: iam:PassRole, and the request log.

    AWS: a request that hands a role to a service (CreateDBInstance / ModifyDBInstance with
    MonitoringRoleArn) is allowed only when the caller may also iam:PassRole that role (the role's ARN is
    the resource, so a policy scoped to the monitoring role is checked for real).
    moto 5.2.5: checks only the request's own action. Patched: for the requests in PASSES_ROLE, iam:PassRole
    on the role is checked as well, the same way. With PATH, every check (the request's action, and
    iam:PassRole) is appended to PATH as a JSON line: user, action, resource, allowed.
    """
    from moto.iam import access_control

    original = access_control.IAMRequestBase.check_action_permitted

    def record(request: Any, action: str, resource: str, allowed: bool) -> None:
        if path:
            entry = {"user": request._access_key.arn.rsplit("/", 1)[-1], "action": action,
                     "resource": resource, "allowed": allowed}
            with _LOG_LOCK, open(path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    def check(request: Any, resource: str) -> None:
        allowed = False
        try:
            original(request, resource)
            allowed = True
        finally:
            record(request, request._action, resource, allowed)

    def check_action_permitted(self: Any, resource: str) -> None:
        check(self, resource)
        role = _passed_role(self)
        if role:
            action, self._action = self._action, "iam:PassRole"
            try:
                check(self, role)
            finally:
                self._action = action

    access_control.IAMRequestBase.check_action_permitted = check_action_permitted


def patch_admin_signature() -> None:
    """Patch I4: the administrator's requests are not signature-checked.

    AWS: checks every request's SigV4 signature. moto 5.2.5: recomputes it from the request as it
    parsed it, and for some REST calls gets another one than botocore sent (a GET whose query moto
    passes as the body: AWS Backup's ListBackupVaults answers SignatureDoesNotMatch). The stack's
    administrator (key ``testing``, what the tests use to look at the stack) is therefore trusted on its
    key alone; the job users' requests are still checked, and none of the jobs calls AWS Backup.
    """
    from moto.iam import access_control

    original = access_control.IAMRequestBase.check_signature
    if getattr(original, "_ndis_patched", False):
        return

    def check_signature(self: Any) -> None:
        if self._access_key.create_credentials().access_key != ADMIN_KEY:
            original(self)

    check_signature._ndis_patched = True  # type: ignore[attr-defined]
    access_control.IAMRequestBase.check_signature = check_signature


def create_admin(account_id: str) -> None:
    """The stack's administrator, whose access key is the stack's usual one."""
    from moto.iam.models import iam_backends

    backend = iam_backends[account_id]["aws"]
    backend.create_user(region_name="us-east-1", user_name=ADMIN_USER, path="/", tags=[])
    backend.put_user_policy(ADMIN_USER, "administrator", json.dumps(ADMIN_POLICY))
    key = backend.create_access_key(ADMIN_USER)
    key.access_key_id = ADMIN_KEY
    key.secret_access_key = ADMIN_KEY


def enforce(request_log: str | None = None) -> None:
    """Make moto (in this process) enforce IAM from the next request on."""
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.authorization import ActionAuthenticatorMixin

    patch_iam_unevaluated_resources_and_conditions()
    patch_iam_action_names()
    patch_iam_pass_role(request_log)
    patch_admin_signature()
    create_admin(DEFAULT_ACCOUNT_ID)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
