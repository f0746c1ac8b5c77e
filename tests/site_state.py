"""The site's shared stack and its one recording, for tests/test_site.py and tests/test_iam_enforced.py.

The stack (conftest's ``site_stack``, NDIS_TEST_SITE_STACK_DIR / _PG_PORT / _MOTO_PORT / _TLS_PORT, else a
fresh directory and free ports) is one on which moto enforces IAM: every run of a job there uses the user of
that job, holding its iam/local/<job>.json alone (tests/playbook_runner.py). ``record_site`` runs site.yml four
times on it while it is fresh (check mode as the read-only job, converge and the same again as the deploy job,
check mode again) and keeps each run's output, recap, exit code, the AWS calls its user made and, around the
check-mode runs, a snapshot of everything the site manages (``snapshot``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg2
import pytest

from conftest import make_dsn
from playbook_runner import iam_calls, recap, run_playbook


def catalog(local_stack) -> dict:
    """Roles, memberships, grants, default privileges, extensions, indexes, history, settings."""
    def rows(cur, sql):
        cur.execute(sql)
        return [list(r) for r in cur.fetchall()]

    out = {}
    conn = psycopg2.connect(make_dsn(local_stack, "postgres"))
    with conn.cursor() as cur:
        out["databases"] = rows(cur, "SELECT datname, datdba::regrole::text, datacl::text FROM pg_database ORDER BY 1")
        out["roles"] = rows(cur, "SELECT rolname, rolsuper, rolcanlogin, rolcreatedb, rolcreaterole, rolconnlimit, "
                                 "rolconfig::text FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")
        out["memberships"] = rows(cur, "SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members "
                                       "WHERE roleid::regrole::text !~ '^pg_' ORDER BY 1, 2")
        out["db_settings"] = rows(cur, "SELECT coalesce(d.datname, '*'), setrole::regrole::text, setconfig::text "
                                       "FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase "
                                       "ORDER BY 1, 2")
        app_db = [d[0] for d in out["databases"] if d[0] == "ndis_chatbot"]
    conn.close()
    if app_db:
        conn = psycopg2.connect(make_dsn(local_stack, "ndis_chatbot"))
        with conn.cursor() as cur:
            out["schemas"] = rows(cur, "SELECT nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace "
                                       "WHERE nspname !~ '^(pg_|information_schema)' ORDER BY 1")
            out["relations"] = rows(cur, "SELECT c.oid::regclass::text, c.relkind, c.relowner::regrole::text, "
                                         "c.relacl::text, obj_description(c.oid, 'pg_class') FROM pg_class c "
                                         "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                                         "ORDER BY 1")
            out["indexes"] = rows(cur, "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), indisvalid "
                                       "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                                       "WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1")
            out["default_acls"] = rows(cur, "SELECT defaclrole::regrole::text, defaclobjtype, defaclacl::text "
                                            "FROM pg_default_acl ORDER BY 1, 2")
            out["extensions"] = rows(cur, "SELECT extname, extversion FROM pg_extension ORDER BY 1")
            cur.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
            if cur.fetchone()[0]:
                out["history"] = rows(cur, "SELECT version, name, checksum FROM public.schema_migrations ORDER BY 1")
        conn.close()
    return out


def aws_state(boto3_client) -> dict:
    """The AWS resources the site manages, without timestamps."""
    rds, ssm, s3, kms, backup = (boto3_client(n) for n in ("rds", "ssm", "s3", "kms", "backup"))
    keep = ("DBInstanceIdentifier", "DBInstanceClass", "EngineVersion", "AllocatedStorage", "StorageType",
            "MultiAZ", "BackupRetentionPeriod", "PreferredBackupWindow", "PreferredMaintenanceWindow",
            "CopyTagsToSnapshot", "DeletionProtection", "PubliclyAccessible", "StorageEncrypted",
            "DBParameterGroups", "DBSubnetGroup", "TagList")
    state = {
        "instances": [{k: i.get(k) for k in keep} for i in rds.describe_db_instances()["DBInstances"]],
        "subnet_groups": sorted(g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]),
        "parameters": {},
        "ssm": sorted((p["Name"], p["Type"], p["Version"], p.get("KeyId")) for p in ssm.describe_parameters()["Parameters"]),
        "kms_aliases": sorted(a["AliasName"] for a in kms.list_aliases()["Aliases"]),
        "buckets": {},
        "backup": {
            "vaults": sorted(v["BackupVaultName"] for v in backup.list_backup_vaults()["BackupVaultList"]),
            "plans": sorted(p["BackupPlanName"] for p in backup.list_backup_plans()["BackupPlansList"]),
        },
    }
    for group in rds.describe_db_parameter_groups()["DBParameterGroups"]:
        name = group["DBParameterGroupName"]
        if not name.startswith("default."):
            params = rds.describe_db_parameters(DBParameterGroupName=name, Source="user")["Parameters"]
            state["parameters"][name] = sorted((p["ParameterName"], p.get("ParameterValue")) for p in params)
    for bucket in s3.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        conf = {"versioning": s3.get_bucket_versioning(Bucket=name).get("Status"),
                "objects": sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", []))}
        for what, call in (("encryption", s3.get_bucket_encryption), ("lifecycle", s3.get_bucket_lifecycle_configuration),
                           ("public_access", s3.get_public_access_block)):
            try:
                response = call(Bucket=name)
                response.pop("ResponseMetadata", None)
                conf[what] = response
            except Exception as e:  # noqa: BLE001 - "not configured" is a state too
                conf[what] = type(e).__name__
        state["buckets"][name] = conf
    return state


def snapshot(local_stack, boto3_client) -> dict:
    """Everything the site could create or change, in the catalog and in AWS."""
    return {"catalog": catalog(local_stack), "aws": aws_state(boto3_client)}


@dataclass
class Run:
    """One recorded ansible-playbook run; ``before``/``after``: snapshots around a check-mode run;
    ``calls``: the stack's request log entries of the run (user, action, resource, allowed)."""

    rc: int
    stdout: str
    before: dict | None = None
    after: dict | None = None
    calls: list = field(default_factory=list)
    recap: dict = field(init=False)

    def __post_init__(self):
        self.recap = recap(self.stdout) if re.search(r"^PLAY RECAP", self.stdout, re.M) else {}


RECORDED = (("fresh check", ("--check", "--diff")), ("converge", ()), ("repeat", ()), ("check", ("--check", "--diff")))


def record_site(stack, boto3_client) -> dict[str, Run]:
    """site.yml on the fresh stack: check mode, converge, repeat, check mode; stops at a failed run."""
    runs: dict[str, Run] = {}
    for name, args in RECORDED:
        check = "--check" in args
        before = snapshot(stack, boto3_client) if check else None
        start = len(iam_calls(stack))
        proc = run_playbook("site.yml", *args, stack=stack)
        calls = iam_calls(stack, start)  # before the snapshot's own calls
        runs[name] = Run(proc.returncode, proc.stdout, before, snapshot(stack, boto3_client) if check else None, calls)
        if proc.returncode != 0:
            break
    return runs


def recorded(site_runs: dict[str, Run], name: str) -> Run:
    if name not in site_runs:
        pytest.fail(f"the recording stopped before the {name!r} run: an earlier run failed (its test says why)")
    return site_runs[name]
