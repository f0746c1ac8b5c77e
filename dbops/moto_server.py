"""Run moto's server with a small, documented compatibility layer.

``python -m dbops.moto_server --host 127.0.0.1 --port 55500``

moto (5.2.5) is close to AWS but not close enough for a few calls that the
Ansible modules in amazon.aws 10.1.2 / community.aws 10.0.0 rely on.  Each
``patch_*`` function below fixes one difference; every patch states what real
AWS does and which Ansible module needs it, and has one test in
``tests/test_moto_compat.py`` that exercises it through boto3 over HTTP.

Known difference that is deliberately *not* patched:

* CreateDBInstance without EngineVersion: moto defaults to 9.3.3 for postgres
  (real AWS picks the current default minor version).  Callers must always
  pass ``engine_version`` (e.g. "16.4") so that both behave the same.

The patches are applied in this process only (the server runs in-process via
werkzeug), so importing this module has no effect until :func:`apply_patches`
is called.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
import uuid
from typing import Any

PATCHES_APPLIED = False

# --------------------------------------------------------------------------
# Parameter metadata for the postgres16 family (patch 3).  Values mirror what
# AWS returns for the default.postgres16 group.
# --------------------------------------------------------------------------
POSTGRES16_PARAMETERS: dict[str, dict[str, Any]] = {
    "rds.force_ssl": {
        "ParameterValue": "1",
        "Description": "Force SSL connections.",
        "Source": "system",
        "ApplyType": "dynamic",
        "DataType": "boolean",
        "AllowedValues": "0,1",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "log_min_duration_statement": {
        "Description": "Sets the minimum execution time above which statements will be logged.",
        "Source": "engine-default",
        "ApplyType": "dynamic",
        "DataType": "integer",
        "AllowedValues": "-1-2147483647",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "maintenance_work_mem": {
        "ParameterValue": "GREATEST({DBInstanceClassMemory*1024/63963136},65536)",
        "Description": "Sets the maximum memory to be used for maintenance operations.",
        "Source": "system",
        "ApplyType": "dynamic",
        "DataType": "integer",
        "AllowedValues": "1024-2147483647",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "shared_preload_libraries": {
        "ParameterValue": "pg_stat_statements",
        "Description": "Lists shared libraries to preload into server.",
        "Source": "system",
        "ApplyType": "static",
        "DataType": "list",
        "AllowedValues": "auto_explain,orafce,pg_cron,pg_hint_plan,pg_prewarm,"
        "pg_similarity,pg_stat_statements,pg_tle,pg_transport,pgaudit,"
        "pglogical,pgtt,plprofiler",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "statement_timeout": {
        "Description": "Sets the maximum allowed duration of any statement.",
        "Source": "engine-default",
        "ApplyType": "dynamic",
        "DataType": "integer",
        "AllowedValues": "0-2147483647",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "idle_in_transaction_session_timeout": {
        "Description": "Sets the maximum allowed idle time between queries, when in a transaction.",
        "Source": "engine-default",
        "ApplyType": "dynamic",
        "DataType": "integer",
        "AllowedValues": "0-2147483647",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "log_connections": {
        "Description": "Logs each successful connection.",
        "Source": "engine-default",
        "ApplyType": "dynamic",
        "DataType": "boolean",
        "AllowedValues": "0,1",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "work_mem": {
        "Description": "Sets the maximum memory to be used for query workspaces.",
        "Source": "engine-default",
        "ApplyType": "dynamic",
        "DataType": "integer",
        "AllowedValues": "64-2147483647",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
    "password_encryption": {
        "ParameterValue": "scram-sha-256",
        "Description": "Encrypt passwords.",
        "Source": "system",
        "ApplyType": "dynamic",
        "DataType": "string",
        "AllowedValues": "md5,scram-sha-256",
        "IsModifiable": True,
        "ApplyMethod": "pending-reboot",
    },
}


# --------------------------------------------------------------------------
# Patch 1: gp3 Iops / StorageThroughput
# --------------------------------------------------------------------------
def patch_gp3_baseline() -> None:
    """Real AWS: a gp3 DB instance always reports Iops and StorageThroughput;
    below 400 GiB the baseline is 3000 IOPS / 125 MiB/s.  moto leaves both
    out, and amazon.aws.rds_instance (update path, ``instance["Iops"]`` /
    ``instance["StorageThroughput"]``) raises KeyError on the second run.
    Fix: report 3000/125 for gp3 when nothing explicit was set."""
    from moto.rds.models import DBInstance

    def _get_iops(self: Any) -> Any:
        value = self.__dict__.get("_ndis_iops")
        if value is None and getattr(self, "storage_type", None) == "gp3":
            return 3000
        return value

    def _set_iops(self: Any, value: Any) -> None:
        self.__dict__["_ndis_iops"] = value

    def _get_throughput(self: Any) -> Any:
        value = self.__dict__.get("_storage_throughput")
        if value is None and getattr(self, "storage_type", None) == "gp3":
            return 125
        return value

    orig_throughput = DBInstance.__dict__["storage_throughput"]
    DBInstance.iops = property(_get_iops, _set_iops)  # type: ignore[attr-defined]
    DBInstance.storage_throughput = property(  # type: ignore[assignment]
        _get_throughput, orig_throughput.fset
    )


# --------------------------------------------------------------------------
# Patch 2: DescribeDBParameterGroups on a missing name
# --------------------------------------------------------------------------
def patch_describe_db_parameter_groups_not_found() -> None:
    """Real AWS: DescribeDBParameterGroups with a DBParameterGroupName that
    does not exist fails with DBParameterGroupNotFound.  moto returns an
    empty list, and amazon.aws.rds_instance_param_group then indexes
    ``response["DBParameterGroups"][0]`` and crashes (IndexError)."""
    from moto.rds.exceptions import DBParameterGroupNotFoundError
    from moto.rds.models import RDSBackend

    orig = RDSBackend.describe_db_parameter_groups

    def describe_db_parameter_groups(self: Any, kwargs: dict[str, Any]) -> Any:
        result = orig(self, kwargs)
        name = kwargs.get("db_parameter_group_name")
        if name and not result:
            raise DBParameterGroupNotFoundError(name)
        return result

    RDSBackend.describe_db_parameter_groups = describe_db_parameter_groups  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 3: DescribeDBParameters metadata
# --------------------------------------------------------------------------
def patch_describe_db_parameters_metadata() -> None:
    """Real AWS: DescribeDBParameters lists every parameter of the family with
    DataType, AllowedValues, ApplyType, IsModifiable and Source (``user`` for
    the ones set in this group).  moto only returns what the user set, with no
    metadata, so amazon.aws.rds_instance_param_group fails with
    "Parameter rds.force_ssl is not an available parameter" (it looks up each
    desired name, reads ``DataType`` to convert the value, compares with
    ``ParameterValue`` and checks ``IsModifiable``).
    Fix: for postgres16-family groups merge the user's values over
    :data:`POSTGRES16_PARAMETERS` (Source=user for user values)."""
    from moto.core.responses import ActionResult
    from moto.rds.exceptions import DBParameterGroupNotFoundError
    from moto.rds.responses import RDSResponse

    def describe_db_parameters(self: Any) -> Any:
        name = self.params.get("DBParameterGroupName")
        groups = self.backend.describe_db_parameter_groups({"db_parameter_group_name": name})
        if not groups:
            raise DBParameterGroupNotFoundError(name)
        group = groups[0]
        user = {k: dict(v) for k, v in group.parameters.items()}
        merged: dict[str, dict[str, Any]] = {}
        if (group.family or "").lower() == "postgres16":
            for pname, meta in POSTGRES16_PARAMETERS.items():
                merged[pname] = {"ParameterName": pname, **meta}
        for pname, value in user.items():
            entry = merged.setdefault(pname, {"ParameterName": pname, "IsModifiable": True,
                                              "ApplyType": "dynamic", "DataType": "string"})
            entry.update({k: v for k, v in value.items() if v is not None})
            entry["Source"] = "user"
        source = self.params.get("Source")
        params = [p for p in merged.values() if not source or p.get("Source") == source]
        return ActionResult({"Parameters": params})

    RDSResponse.describe_db_parameters = describe_db_parameters  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 4a: DescribeBackupVault on a missing vault
# --------------------------------------------------------------------------
def patch_backup_vault_access_denied() -> None:
    """Real AWS: DescribeBackupVault on a vault that does not exist answers
    AccessDeniedException (HTTP 403), not ResourceNotFoundException.
    amazon.aws.backup_vault only tolerates AccessDeniedException before it
    creates the vault; moto's ResourceNotFoundException makes it fail."""
    from moto.backup.models import BackupBackend
    from moto.core.exceptions import JsonRESTError

    class AccessDeniedException(JsonRESTError):
        code = 403

        def __init__(self, name: str) -> None:
            super().__init__(
                "AccessDeniedException",
                f"Insufficient privileges to perform this action. (vault {name})",
            )

    orig = BackupBackend.describe_backup_vault

    def describe_backup_vault(self: Any, backup_vault_name: str) -> Any:
        if backup_vault_name not in self.vaults:
            raise AccessDeniedException(backup_vault_name)
        return orig(self, backup_vault_name)

    BackupBackend.describe_backup_vault = describe_backup_vault  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 4b: backup selections (Create/Get/List/Delete)
# --------------------------------------------------------------------------
_DEFAULT_CONDITIONS = {"StringEquals": [], "StringLike": [], "StringNotEquals": [], "StringNotLike": []}


def patch_backup_selections() -> None:
    """Real AWS: backup plans have selections (CreateBackupSelection,
    GetBackupSelection, ListBackupSelections, DeleteBackupSelection).  moto
    5.2.5 implements none of them and stores no selections, yet
    amazon.aws.backup_plan / backup_plan_info / backup_selection call
    ListBackupSelections for every plan they look at.  Fix: keep selections
    per plan on the backup backend and implement the four calls.  Like AWS,
    GetBackupSelection returns the default empty Conditions block."""
    from moto.backup.models import BackupBackend
    from moto.backup.responses import BackupResponse
    from moto.core.exceptions import JsonRESTError

    class _NotFound(JsonRESTError):
        code = 404

        def __init__(self, msg: str) -> None:
            super().__init__("ResourceNotFoundException", msg)

    def _store(backend: BackupBackend, plan_id: str) -> dict[str, dict[str, Any]]:
        if plan_id not in backend.plans or backend.plans[plan_id].deletion_date:
            raise _NotFound(f"Failed reading backup plan {plan_id}")
        all_sel = backend.__dict__.setdefault("_ndis_selections", {})
        return all_sel.setdefault(plan_id, {})

    def _plan_id(self: Any) -> str:
        uri = getattr(self, "uri_match", None) or {}
        if uri.get("BackupPlanId"):
            return uri["BackupPlanId"]
        return self.path.split("/plans/")[1].split("/")[0]

    def _selection_id(self: Any) -> str:
        uri = getattr(self, "uri_match", None) or {}
        if uri.get("SelectionId"):
            return uri["SelectionId"]
        return self.path.rstrip("/").split("/selections/")[1].split("/")[0]

    def create_backup_selection(self: Any) -> str:
        plan_id = _plan_id(self)
        body = json.loads(self.body or "{}")
        store = _store(self.backup_backend, plan_id)
        sel_id = str(uuid.uuid4())
        store[sel_id] = {
            "SelectionId": sel_id,
            "BackupPlanId": plan_id,
            "CreationDate": time.time(),
            "CreatorRequestId": body.get("CreatorRequestId"),
            "BackupSelection": body.get("BackupSelection", {}),
        }
        return json.dumps({"SelectionId": sel_id, "BackupPlanId": plan_id,
                           "CreationDate": store[sel_id]["CreationDate"]})

    def get_backup_selection(self: Any) -> str:
        plan_id = _plan_id(self)
        sel_id = _selection_id(self)
        store = _store(self.backup_backend, plan_id)
        if sel_id not in store:
            raise _NotFound(f"Failed reading backup selection {sel_id}")
        item = json.loads(json.dumps(store[sel_id]))
        item["BackupSelection"].setdefault("Conditions", dict(_DEFAULT_CONDITIONS))
        return json.dumps({k: v for k, v in item.items() if v is not None})

    def list_backup_selections(self: Any) -> str:
        store = _store(self.backup_backend, _plan_id(self))
        out = []
        for item in store.values():
            sel = item["BackupSelection"]
            entry = {
                "SelectionId": item["SelectionId"],
                "SelectionName": sel.get("SelectionName"),
                "BackupPlanId": item["BackupPlanId"],
                "CreationDate": item["CreationDate"],
                "CreatorRequestId": item["CreatorRequestId"],
                "IamRoleArn": sel.get("IamRoleArn"),
            }
            out.append({k: v for k, v in entry.items() if v is not None})
        return json.dumps({"BackupSelectionsList": out})

    def delete_backup_selection(self: Any) -> str:
        store = _store(self.backup_backend, _plan_id(self))
        sel_id = _selection_id(self)
        if sel_id not in store:
            raise _NotFound(f"Failed reading backup selection {sel_id}")
        del store[sel_id]
        return "{}"

    BackupResponse.create_backup_selection = create_backup_selection  # type: ignore[attr-defined]
    BackupResponse.get_backup_selection = get_backup_selection  # type: ignore[attr-defined]
    BackupResponse.list_backup_selections = list_backup_selections  # type: ignore[attr-defined]
    BackupResponse.delete_backup_selection = delete_backup_selection  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Patch 5: PutParameter checks the SecureString's KMS key
# --------------------------------------------------------------------------
def patch_ssm_secure_string_kms_key() -> None:
    """Real AWS: PutParameter of a SecureString encrypts with the KeyId given
    (default alias/aws/ssm) and fails with InvalidKeyId when that key does not
    exist or is not enabled (disabled, pending deletion).  moto stores any
    KeyId unchecked.  tests/test_secrets.py relies on it: the rotation
    playbook's restore path is exercised by disabling the project key, so the
    SSM write fails for real after the database password has changed."""
    from moto.kms.models import kms_backends
    from moto.ssm.exceptions import SSMException
    from moto.ssm.models import SimpleSystemManagerBackend

    orig = SimpleSystemManagerBackend.put_parameter

    def put_parameter(self: Any, name: str, description: str, value: str, parameter_type: str,
                      allowed_pattern: str, keyid: str, overwrite: bool, *args: Any, **kwargs: Any) -> Any:
        if parameter_type == "SecureString":
            kms = kms_backends[self.account_id][self.region_name]
            wanted = keyid or "alias/aws/ssm"
            try:
                key = kms.describe_key(wanted)
            except Exception:  # moto raises NotFoundException / a KeyError depending on the form
                key = None
            if key is None or getattr(key, "key_state", "Enabled") != "Enabled":
                state = "does not exist" if key is None else f"is {key.key_state}"
                raise SSMException("InvalidKeyId", f"Invalid keyId {wanted}: the KMS key {state}.")
        return orig(self, name, description, value, parameter_type, allowed_pattern, keyid, overwrite,
                    *args, **kwargs)

    SimpleSystemManagerBackend.put_parameter = put_parameter  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 6: Performance Insights on DB instances
# --------------------------------------------------------------------------
def patch_rds_performance_insights() -> None:
    """Real AWS: CreateDBInstance / ModifyDBInstance with
    EnablePerformanceInsights record it, and DescribeDBInstances reports
    PerformanceInsightsEnabled, PerformanceInsightsRetentionPeriod (default 7
    days) and PerformanceInsightsKMSKeyId (default the aws/rds key) while it
    is on.  moto accepts the parameters and drops them, so describe never
    reports them and amazon.aws.rds_instance (and the change plan) see a
    difference on every run.  Fix: keep the three values on the instance and
    report them as AWS does."""
    from moto.rds.models import DBInstance

    def _get(self: Any, key: str) -> Any:
        return self.__dict__.get("_ndis_pi", {}).get(key)

    def _record(self: Any, values: dict[str, Any]) -> None:
        state = self.__dict__.setdefault("_ndis_pi", {"enabled": False})
        lookup = {_snake(k): v for k, v in values.items() if v is not None}
        if "enable_performance_insights" in lookup:
            state["enabled"] = str(lookup["enable_performance_insights"]).lower() == "true"
        if "performance_insights_retention_period" in lookup:
            state["retention"] = int(lookup["performance_insights_retention_period"])
        if "performance_insights_kms_key_id" in lookup:
            state["kms"] = lookup["performance_insights_kms_key_id"]
        if state["enabled"]:
            state.setdefault("retention", 7)
            state.setdefault("kms", f"arn:aws:kms:{self.region}:{self.account_id}:key/"
                                    "00000000-0000-4000-8000-00000000a75d")

    orig_init = DBInstance.__init__
    orig_update = DBInstance.update

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        _record(self, kwargs)

    def update(self: Any, *args: Any, **db_kwargs: Any) -> None:
        pi = {k: v for k, v in db_kwargs.items() if "performance_insights" in _snake(k)}
        rest = {k: v for k, v in db_kwargs.items() if k not in pi}
        orig_update(self, *args, **rest)
        _record(self, pi)

    DBInstance.__init__ = __init__  # type: ignore[method-assign]
    DBInstance.update = update  # type: ignore[method-assign]
    DBInstance.performance_insights_enabled = property(  # type: ignore[attr-defined]
        lambda self: bool(_get(self, "enabled")))
    DBInstance.performance_insights_retention_period = property(  # type: ignore[attr-defined]
        lambda self: _get(self, "retention") if _get(self, "enabled") else None)
    DBInstance.performance_insights_kms_key_id = property(  # type: ignore[attr-defined]
        lambda self: _get(self, "kms") if _get(self, "enabled") else None)


def _snake(name: str) -> str:
    """EnablePerformanceInsights -> enable_performance_insights (moto passes either form)."""
    if "_" in name or name.islower():
        return name.lower()
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.replace("KMS", "Kms")).lower()


# --------------------------------------------------------------------------
# Patch 7: the AWS managed policy of the Enhanced Monitoring role
# --------------------------------------------------------------------------
RDS_MONITORING_POLICY = "AmazonRDSEnhancedMonitoringRole"


def patch_iam_rds_monitoring_policy() -> None:
    """Real AWS: every account can attach the AWS managed policy
    arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole, the
    one an Enhanced Monitoring role needs.  moto knows the AWS managed
    policies only when its config loads all of them (a second or more per
    account backend), so AttachRolePolicy fails with NoSuchEntity.  Fix: when
    the full set is not loaded, load just this one policy."""
    from moto.iam.models import AWSManagedPolicy, IAMBackend, aws_managed_policies_data

    orig = IAMBackend._init_aws_policies

    def _init_aws_policies(self: Any) -> Any:
        policies = orig(self)
        if not any(p.name == RDS_MONITORING_POLICY for p in policies):
            data = json.loads(aws_managed_policies_data)[RDS_MONITORING_POLICY]
            policies.append(AWSManagedPolicy.from_data(RDS_MONITORING_POLICY, self.account_id,
                                                        self.region_name, data))
        return policies

    IAMBackend._init_aws_policies = _init_aws_policies  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 8: DescribePendingMaintenanceActions
# --------------------------------------------------------------------------
def patch_rds_pending_maintenance_actions() -> None:
    """Real AWS: DescribePendingMaintenanceActions lists the maintenance
    actions (system-update, os-upgrade, ...) waiting for each resource, an
    empty list when none.  moto 5.2.5 does not implement it and answers HTTP
    500, which botocore cannot parse; playbooks/health.yml reads it.  Fix:
    answer as AWS does for an instance with nothing pending (moto never
    schedules maintenance); a ResourceIdentifier that is no instance's ARN is
    refused like AWS refuses it."""
    from moto.core.responses import ActionResult
    from moto.rds.exceptions import RDSClientError
    from moto.rds.responses import RDSResponse

    def describe_pending_maintenance_actions(self: Any) -> Any:
        arn = self.params.get("ResourceIdentifier")
        if arn and not any(db.db_instance_arn == arn for db in self.backend.databases.values()):
            raise RDSClientError("InvalidParameterValue", f"The resource {arn} does not exist.")
        return ActionResult({"PendingMaintenanceActions": []})

    RDSResponse.describe_pending_maintenance_actions = describe_pending_maintenance_actions  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Patch 3 (continued): metadata of the production parameter defaults
# --------------------------------------------------------------------------
# The observability parameters the rds_instance role sets by default, as AWS
# describes them in default.postgres16 (added to patch 3's table).
POSTGRES16_PARAMETERS.update({
    name: {"Description": desc, "Source": "engine-default", "ApplyType": apply_type, "DataType": dtype,
           "AllowedValues": allowed, "IsModifiable": True, "ApplyMethod": "pending-reboot"}
    for name, desc, apply_type, dtype, allowed in (
        ("log_lock_waits", "Logs long lock waits.", "dynamic", "boolean", "0,1"),
        ("log_autovacuum_min_duration", "Sets the minimum execution time above which autovacuum actions "
         "will be logged.", "dynamic", "integer", "-1-2147483647"),
        ("log_temp_files", "Log the use of temporary files larger than this number of kilobytes.",
         "dynamic", "integer", "-1-2147483647"),
        ("track_io_timing", "Collects timing statistics for database I/O activity.", "dynamic", "boolean", "0,1"),
        ("pg_stat_statements.track", "Selects which statements are tracked by pg_stat_statements.",
         "dynamic", "string", "all,none,top"),
        ("pg_stat_statements.max", "Sets the maximum number of statements tracked by pg_stat_statements.",
         "static", "integer", "100-2147483647"),
    )
})


ALL_PATCHES = (
    patch_gp3_baseline,
    patch_describe_db_parameter_groups_not_found,
    patch_describe_db_parameters_metadata,
    patch_backup_vault_access_denied,
    patch_backup_selections,
    patch_ssm_secure_string_kms_key,
    patch_rds_performance_insights,
    patch_iam_rds_monitoring_policy,
    patch_rds_pending_maintenance_actions,
)


def apply_patches() -> None:
    """Apply every compatibility patch once (idempotent)."""
    global PATCHES_APPLIED
    if PATCHES_APPLIED:
        return
    for patch in ALL_PATCHES:
        patch()
    PATCHES_APPLIED = True


def make_app() -> Any:
    """The patched moto WSGI application."""
    apply_patches()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moto server with dbops compatibility patches")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=55500)
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    def _exit(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    app = make_app()
    print(f"dbops moto server on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
