"""backups.yml (AWS Backup enabled), backup_now.yml and restore_test.yml through ansible-playbook.

Runs against the pytest stack with its own names (database, bucket, instance, policy file
passed with -e), so it neither needs nor disturbs the site tests' state. The shipped policy
keeps aws_backup.enabled false; here a copy enables it to test that path against moto.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest

from conftest import REPO_ROOT, make_dsn
from playbook_runner import recap, run_playbook


def run(local_stack, playbook: str, extra: Path) -> subprocess.CompletedProcess:
    return run_playbook(playbook, "-e", f"@{extra}", stack=local_stack, timeout=300)


@pytest.fixture()
def setup(local_stack, boto3_client, tmp_path):
    tag = uuid.uuid4().hex[:8]
    db, bucket, instance = f"bk_{tag}", f"bk-dumps-{tag}", f"bk-{tag}"
    kms = boto3_client("kms")
    key_id = kms.create_key(Description="vault key")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/bk-{tag}", TargetKeyId=key_id)
    rds = boto3_client("rds")
    rds.create_db_subnet_group(DBSubnetGroupName=instance, DBSubnetGroupDescription="backup playbook test",
                               SubnetIds=local_stack["network"]["subnet_ids"])
    rds.create_db_instance(
        DBInstanceIdentifier=instance, Engine="postgres", EngineVersion="16.8", DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="not-used-locally-1",
        DBSubnetGroupName=instance, BackupRetentionPeriod=1, PreferredBackupWindow="01:00-01:30")
    policy = json.loads((REPO_ROOT / "configs/backup/backup.rules.json").read_text())
    policy["logical_dumps"]["s3_bucket"] = bucket
    policy["aws_backup"].update(enabled=True, vault_name=f"bk-{tag}", kms_key_id=f"alias/bk-{tag}")
    policy_file = tmp_path / "backup.rules.json"
    policy_file.write_text(json.dumps(policy))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({
        "backup_policy_file": str(policy_file), "app_db_name": db, "rds_instance_identifier": instance,
        # moto has no AWS managed policies to attach
        "backup_policy_aws_backup_managed_policies": [],
        "backup_policy_runner_render_dir": str(tmp_path / "runner"),
        "backup_policy_password_ssm_name": f"/bk-{tag}/master_password",
        # this instance keeps its master password in SSM (the embedded server's, as it must be here):
        # the credentials entry point of backup_now/restore_test reads it there
        "rds_instance_master_password_ssm_name": f"/bk-{tag}/master_password",
    }))
    boto3_client("ssm").put_parameter(Name=f"/bk-{tag}/master_password", Type="SecureString",
                                      Value=local_stack["admin_password"], Overwrite=True)
    admin = psycopg2.connect(make_dsn(local_stack, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    with psycopg2.connect(make_dsn(local_stack, db)) as conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION vector")
        cur.execute("CREATE TABLE docs (id int PRIMARY KEY, embedding vector(8))")
        cur.execute("INSERT INTO docs SELECT i, (SELECT array_agg(random())::vector FROM generate_series(1, 8) "
                    "WHERE i > 0) FROM generate_series(1, 120) i")
        cur.execute("CREATE INDEX ON docs USING hnsw (embedding vector_cosine_ops)")
    conn.close()
    try:
        yield {"db": db, "bucket": bucket, "instance": instance, "vault": f"bk-{tag}", "extra": extra,
               "runner": tmp_path / "runner",
               "ssm": f"/bk-{tag}/master_password"}
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


def test_backups_then_dump_now_then_restore_test(local_stack, boto3_client, setup):
    first = run(local_stack, "playbooks/backups.yml", setup["extra"])
    assert first.returncode == 0, first.stdout[-5000:]
    second = run(local_stack, "playbooks/backups.yml", setup["extra"])
    assert second.returncode == 0, second.stdout[-5000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-5000:]

    backup = boto3_client("backup")
    vault = backup.describe_backup_vault(BackupVaultName=setup["vault"])
    assert vault["EncryptionKeyArn"].startswith("arn:aws:kms:")
    plan_id = next(p["BackupPlanId"] for p in backup.list_backup_plans()["BackupPlansList"]
                   if p["BackupPlanName"] == setup["instance"])
    rule = backup.get_backup_plan(BackupPlanId=plan_id)["BackupPlan"]["Rules"][0]
    assert rule["ScheduleExpression"] == "cron(0 16 * * ? *)" and rule["Lifecycle"]["DeleteAfterDays"] == 35
    assert rule["TargetBackupVaultName"] == setup["vault"]
    selection = backup.list_backup_selections(BackupPlanId=plan_id)["BackupSelectionsList"][0]
    resources = backup.get_backup_selection(BackupPlanId=plan_id, SelectionId=selection["SelectionId"])
    assert resources["BackupSelection"]["Resources"][0].endswith(f":db:{setup['instance']}")

    s3 = boto3_client("s3")
    assert s3.get_bucket_versioning(Bucket=setup["bucket"])["Status"] == "Enabled"
    sse = s3.get_bucket_encryption(Bucket=setup["bucket"])["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(s3.get_public_access_block(Bucket=setup["bucket"])["PublicAccessBlockConfiguration"].values())
    life = s3.get_bucket_lifecycle_configuration(Bucket=setup["bucket"])["Rules"][0]
    assert life["Expiration"]["Days"] == 30 and life["Filter"]["Prefix"] == "logical/"

    runner = setup["runner"]
    assert (runner / "ndis-dbops-dump.timer").read_text().count("OnCalendar=*-*-* 16:00:00 UTC") == 1
    assert oct((runner / "ndis-dbops-dump.env").stat().st_mode & 0o777) == "0o600"
    assert local_stack["admin_password"] not in "".join(p.read_text() for p in runner.iterdir())
    cron = (runner / "ndis-dbops-dump.cron").read_text()
    assert re.search(r"^0 16 \* \* \* root /bin/sh -c ", cron, re.M)

    dumped = run(local_stack, "playbooks/backup_now.yml", setup["extra"])
    assert dumped.returncode == 0, dumped.stdout[-5000:]
    assert f"DUMP {setup['db']}: s3://{setup['bucket']}/logical/{setup['db']}/" in dumped.stdout
    assert "rows: public.docs=120" in dumped.stdout
    checked = run(local_stack, "playbooks/restore_test.yml", setup["extra"])
    assert checked.returncode == 0, checked.stdout[-5000:]
    assert "RESTORE TEST PASS" in checked.stdout
    # the nearest-neighbour check: held-out recall through the restored HNSW index
    assert re.search(r"ok +nearest neighbours: \S+ \(hnsw, vector_cosine_ops\): recall@10 [01]\.\d{3} \(95% lower bound [01]\.\d{3}\) "
                     r"on \d+ held-out queries, \d+/\d+ got 10 rows", checked.stdout), checked.stdout[-3000:]
    # progress at default verbosity: a line per phase (and per poll while pg_restore runs)
    assert re.search(rf"^  ndis-chatbot-local \| restore test {setup['db']}-\d{{8}}T\d{{6}}Z\.dump: downloading, 0% \(0/\d+\), [\d.]+ s$",
                     checked.stdout, re.M), checked.stdout[-3000:]
    assert re.search(r"^  ndis-chatbot-local \| restore test .*: done: PASS, [\d.]+ s$", checked.stdout, re.M)
    assert recap(checked.stdout)["changed"] == 0
    for out in (first.stdout, dumped.stdout, checked.stdout):
        assert local_stack["admin_password"] not in out

    # The scheduled command itself (the cron entry's), run once by hand: it reads the
    # password from SSM like the timer would (a parameter of this test's own).
    command = re.search(r"^0 16 \* \* \* root (.*)$", cron, re.M).group(1)
    ran = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["tables"] == {"public.docs": 120}
