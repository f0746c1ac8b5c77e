"""The site playbook end to end against the pytest local stack.

Order matters inside this module (one stack, state carried from test to test):
bad inputs fail before any change -> check mode on a fresh stack changes nothing ->
converge -> a second run changes nothing -> check mode after converge reports nothing
-> the verify playbook passes and reads what the runbook's Verify section asks for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from conftest import REPO_ROOT, make_dsn

BIN = Path(sys.executable).parent


def run_playbook(local_stack, *args: str, playbook: str = "site.yml", timeout: int = 600):
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("ANSIBLE_", "AWS_", "MOLECULE_")):
            del env[key]
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        NDIS_LOCAL_STACK_DIR=local_stack["dir"],
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), playbook, "-l", "local", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return proc


def recap(output: str) -> dict[str, int]:
    match = re.search(r"ndis-chatbot-local\s+:\s+(.*)", output)
    assert match, f"no PLAY RECAP in output:\n{output[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def changed_tasks(output: str) -> list[str]:
    """Names of tasks that reported a change (for a readable assertion message)."""
    names, current = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line[6:].split("]")[0]
        elif line.startswith("changed:") and current:
            names.append(current)
    return names


def snapshot(local_stack, boto3_client) -> dict:
    """Everything the site could create: catalog objects and AWS resources."""
    with psycopg2.connect(make_dsn(local_stack, "postgres")) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database ORDER BY 1")
        databases = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")
        roles = [r[0] for r in cur.fetchall()]
    conn.close()
    rds, ssm = boto3_client("rds"), boto3_client("ssm")
    return {
        "databases": databases,
        "roles": roles,
        "instances": [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]],
        "subnet_groups": [g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]],
        "parameter_groups": sorted(
            g["DBParameterGroupName"] for g in rds.describe_db_parameter_groups()["DBParameterGroups"]
            if not g["DBParameterGroupName"].startswith("default.")
        ),
        "parameters": sorted((p["Name"], p["Version"]) for p in ssm.describe_parameters()["Parameters"]),
    }


def secrets_of(local_stack, boto3_client) -> list[str]:
    ssm = boto3_client("ssm")
    values = [local_stack["admin_password"]]
    for p in ssm.describe_parameters()["Parameters"]:
        value = ssm.get_parameter(Name=p["Name"], WithDecryption=True)["Parameter"]["Value"]
        values.append(value)
        if "://" in value:
            values.append(re.match(r"postgres://[^:]+:([^@]+)@", value).group(1))
    return values


def test_missing_backup_policy_fails_before_any_change(local_stack, boto3_client):
    before = snapshot(local_stack, boto3_client)
    proc = run_playbook(local_stack, "-e", "backup_policy_file=/nonexistent/backup.rules.json")
    assert proc.returncode != 0
    assert "/nonexistent/backup.rules.json does not exist" in proc.stdout
    assert recap(proc.stdout)["changed"] == 0
    assert snapshot(local_stack, boto3_client) == before


def test_string_boolean_is_rejected(local_stack):
    proc = run_playbook(local_stack, "-e", '{"rds_instance_multi_az": "false"}', "--tags", "never")
    assert proc.returncode != 0
    assert "rds_instance_multi_az is false (str): write true or false without quotes" in proc.stdout


def test_check_mode_on_fresh_stack_passes_and_changes_nothing(local_stack, boto3_client):
    before = snapshot(local_stack, boto3_client)
    assert "ndis_chatbot" not in before["databases"]
    proc = run_playbook(local_stack, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] > 0, "check mode on a fresh stack must predict changes"
    assert snapshot(local_stack, boto3_client) == before


def test_converge_then_second_run_changes_nothing(local_stack):
    first = run_playbook(local_stack)
    assert first.returncode == 0, first.stdout[-6000:]
    assert recap(first.stdout)["changed"] > 0
    assert "VERIFY ndis-chatbot-local: 11/11 passed" in first.stdout
    second = run_playbook(local_stack)
    assert second.returncode == 0, second.stdout[-6000:]
    assert recap(second.stdout)["changed"] == 0, changed_tasks(second.stdout)


def test_check_mode_after_converge_reports_nothing(local_stack, boto3_client):
    before = snapshot(local_stack, boto3_client)
    proc = run_playbook(local_stack, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 0, changed_tasks(proc.stdout)
    assert snapshot(local_stack, boto3_client) == before


def test_verify_playbook_reads_the_acceptance_criteria(local_stack, boto3_client):
    proc = run_playbook(local_stack, playbook="playbooks/verify.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 0
    for check in ("RDS instance available", "Backup retention >= 7 days", "Backup window 15:30-16:00 UTC",
                  "pgvector installed", "Migrations applied", "Vector index on embeddings", "Vector recall@10 >= 0.9",
                  "DATABASE_URL is a SecureString", "App connects as app_user", "App user is least privilege"):
        assert re.search(rf"PASS\s+{re.escape(check)}", proc.stdout), check
    # the runbook's own Verify commands, through the AWS API and the catalog
    instance = boto3_client("rds").describe_db_instances(DBInstanceIdentifier="ndis-chatbot-local")["DBInstances"][0]
    assert instance["PreferredBackupWindow"] == "15:30-16:00"
    assert instance["BackupRetentionPeriod"] >= 7
    assert instance["PubliclyAccessible"] is False
    param = boto3_client("ssm").get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]
    assert param["Type"] == "SecureString"
    url = param["Value"]
    assert re.fullmatch(r"postgres://app_user:[A-Za-z0-9]{32}@127\.0\.0\.1:\d+/ndis_chatbot\?sslmode=require", url)


def test_app_user_is_least_privilege(local_stack, boto3_client):
    url = boto3_client("ssm").get_parameter(
        Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]["Value"]
    # The URL as stored: it points at the local stack's TLS endpoint and says sslmode=require.
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_user"
        cur.execute("INSERT INTO embeddings (doc_id, chunk_idx, embedding) VALUES ('d', 0, %s) RETURNING id",
                    ("[" + ",".join(["0.1"] * 1536) + "]",))
        cur.execute("UPDATE embeddings SET chunk_idx = 1 WHERE doc_id = 'd'")
        cur.execute("SELECT count(*) FROM embeddings WHERE doc_id = 'd'")
        assert cur.fetchone()[0] == 1
        cur.execute("DELETE FROM embeddings WHERE doc_id = 'd'")
        # Every extension this server has is installed already, so CREATE EXTENSION is shown by
        # the privilege it needs (CREATE on the database) and by DROP EXTENSION.
        cur.execute("SELECT has_database_privilege(current_database(), 'CREATE')")
        assert cur.fetchone()[0] is False
        for ddl in ("CREATE TABLE t (id int)", "DROP TABLE embeddings", "ALTER TABLE embeddings ADD COLUMN x int",
                    "TRUNCATE embeddings", "DROP EXTENSION vector", "CREATE SCHEMA s",
                    "CREATE INDEX ON embeddings (doc_id)"):
            with pytest.raises(psycopg2.Error) as failure:
                cur.execute(ddl)
            assert failure.value.pgcode == "42501", f"{ddl}: {failure.value}"  # insufficient_privilege
    conn.close()


def test_no_secret_in_output_even_with_vvv(local_stack, boto3_client):
    proc = run_playbook(local_stack, "-vvv", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    output = proc.stdout + proc.stderr
    for secret in secrets_of(local_stack, boto3_client):
        assert secret not in output


def test_unreachable_database_fails_fast_with_a_clear_error(local_stack):
    # A closed port on the loopback: the preflight names host, port and what to check.
    proc = run_playbook(local_stack, "-e", '{"db_admin_login_port": 9, "db_connect_timeout": 3}',
                        "--tags", "postgres_db", timeout=120)
    assert proc.returncode != 0
    assert "Cannot connect to PostgreSQL at 127.0.0.1:9 as admin within 3 s" in proc.stdout
