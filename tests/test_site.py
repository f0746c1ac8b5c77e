"""The site playbook end to end, on the site's stack (tests/site_state.py), where moto enforces IAM
and every run uses its job's user (the deploy policy for the site, the read-only one in check mode,
for drift, verify and health).

One recording (the session fixture ``site_runs``) runs site.yml four times on the fresh stack:
check mode, converge, the same again, check mode again, and keeps each run's output, recap,
exit code and, around the check-mode runs, a snapshot of everything the site manages. The
tests assert on that recording; the others (verify, drift, health, secrets in -vvv output)
start from the converged stack and leave it converged. Each test runs alone (`pytest -k`).
Bad input is refused before any change, wherever in that sequence it is tried.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from conftest import REPO_ROOT, boto3_factory, make_dsn
from playbook_runner import BIN, changed_tasks, recap, run_playbook
from site_state import recorded, snapshot


@pytest.fixture(scope="module")
def local_stack(site_stack):
    """The site's stack (tests/site_state.py), in place of the session's: fresh when the recording starts,
    whichever modules ran before; moto enforces IAM there, and each run uses its job's user."""
    return site_stack


@pytest.fixture(scope="module")
def boto3_client(local_stack):
    return boto3_factory(local_stack)


# Check-mode stand-ins: where a dry run cannot inspect what does not exist yet (a database
# before it is created), a task says what the real run will do instead, and reports a change.
PLACEHOLDER = re.compile(r"Say what (check mode cannot inspect yet|the real run would do)|Report what the real run would change")


DATABASE_STAND_IN = ("Say what the real run would do on a new instance",)
DATABASE_ROLES = ("postgres_db", "pgvector", "migrations")


def prediction_gap(check_out: str, real_out: str) -> dict:
    """Tasks that check mode predicted but the real run did not change, and the reverse.

    A stand-in stands for every task of its phase (`role : phase | ...`), so the real run's
    tasks of that phase are matched by it rather than one by one.
    """
    def phase(name):
        return name.split(" | ")[0]

    predicted, real = changed_tasks(check_out), changed_tasks(real_out)
    covered = {phase(name) for name in predicted if PLACEHOLDER.search(name)}
    # The database play's stand-in (no instance yet, so no server and, with an RDS-managed master
    # password, no password to inspect one with) stands for the database roles' tasks.
    roles = tuple(r + " : " for name in predicted for r in DATABASE_ROLES if name in DATABASE_STAND_IN)
    predicted = {n for n in predicted if not PLACEHOLDER.search(n)}
    real = {n for n in real if phase(n) not in covered and not n.startswith(roles or ("\0",))}
    return {"predicted, not changed": sorted(predicted - real), "changed, not predicted": sorted(real - predicted)}


def secrets_of(local_stack, boto3_client) -> list[str]:
    ssm = boto3_client("ssm")
    values = [local_stack["admin_password"]]
    for p in ssm.describe_parameters()["Parameters"]:
        value = ssm.get_parameter(Name=p["Name"], WithDecryption=True)["Parameter"]["Value"]
        values.append(value)
        if "://" in value:
            values.append(re.match(r"postgres://[^:]+:([^@]+)@", value).group(1))
    sm = boto3_client("secretsmanager")  # the RDS-managed master password
    for secret in sm.list_secrets()["SecretList"]:
        values.append(json.loads(sm.get_secret_value(SecretId=secret["ARN"])["SecretString"])["password"])
    for job in local_stack.get("iam", {}).get("jobs", {}).values():  # the job users' secret keys
        values.append(json.loads(Path(job["credentials_file"]).read_text())["secret_access_key"])
    return values


@pytest.fixture(scope="module")
def converged(site_runs, local_stack) -> dict:
    """The stack once the recording converged it."""
    assert recorded(site_runs, "converge").rc == 0, "the site did not converge"
    return local_stack


def test_missing_backup_policy_fails_before_any_change(local_stack, boto3_client):
    before = snapshot(local_stack, boto3_client)
    proc = run_playbook("site.yml", "-e", "backup_policy_file=/nonexistent/backup.rules.json", stack=local_stack)
    assert proc.returncode != 0
    assert "/nonexistent/backup.rules.json does not exist" in proc.stdout
    assert recap(proc.stdout)["changed"] == 0
    assert snapshot(local_stack, boto3_client) == before


def test_string_boolean_is_rejected(local_stack):
    proc = run_playbook("site.yml", "-e", '{"rds_instance_multi_az": "false"}', "--tags", "never", stack=local_stack)
    assert proc.returncode != 0
    assert "rds_instance_multi_az is false (str): write true or false without quotes" in proc.stdout


def test_check_mode_on_fresh_stack_passes_and_changes_nothing(site_runs):
    run = recorded(site_runs, "fresh check")
    assert "ndis_chatbot" not in [d[0] for d in run.before["catalog"]["databases"]], "the stack was not fresh"
    assert run.rc == 0, run.stdout[-4000:]
    assert run.recap["changed"] > 0, "check mode on a fresh stack must predict changes"
    assert run.after == run.before


def test_converge_changes_and_verifies(site_runs):
    run = recorded(site_runs, "converge")
    assert run.rc == 0, run.stdout[-6000:]
    assert run.recap["changed"] > 0
    assert "VERIFY ndis-chatbot-local: 13/13 passed" in run.stdout


def test_check_mode_on_fresh_stack_predicts_the_converge_exactly(site_runs):
    gap = prediction_gap(recorded(site_runs, "fresh check").stdout, recorded(site_runs, "converge").stdout)
    assert gap == {"predicted, not changed": [], "changed, not predicted": []}, gap


def test_second_run_changes_nothing(site_runs):
    run = recorded(site_runs, "repeat")
    assert run.rc == 0, run.stdout[-6000:]
    assert run.recap["changed"] == 0, changed_tasks(run.stdout)


def test_check_mode_after_converge_reports_nothing(site_runs):
    run = recorded(site_runs, "check")
    assert run.rc == 0, run.stdout[-4000:]
    assert run.recap["changed"] == 0, changed_tasks(run.stdout)
    assert run.after == run.before


@pytest.mark.usefixtures("converged")
def test_verify_playbook_reads_the_acceptance_criteria(local_stack, boto3_client):
    proc = run_playbook("playbooks/verify.yml", stack=local_stack)
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
    # observability, converged (the second run above changed none of it)
    assert (instance["MonitoringInterval"], instance["PerformanceInsightsEnabled"],
            instance["PerformanceInsightsRetentionPeriod"]) == (60, True, 7)
    assert instance["MonitoringRoleArn"].endswith(":role/ndis-chatbot-local-rds-monitoring")
    assert sorted(instance["EnabledCloudwatchLogsExports"]) == ["postgresql", "upgrade"]
    params = {p["ParameterName"]: p.get("ParameterValue") for p in boto3_client("rds").get_paginator(
        "describe_db_parameters").paginate(DBParameterGroupName="ndis-chatbot-local-postgres16").build_full_result()["Parameters"]}
    assert params["shared_preload_libraries"] == "pg_stat_statements" and params["log_lock_waits"] == "1"
    assert params["idle_in_transaction_session_timeout"] == "300000"
    groups = boto3_client("logs").describe_log_groups(logGroupNamePrefix="/aws/rds/instance/ndis-chatbot-local/")["logGroups"]
    assert {g["logGroupName"].rsplit("/", 1)[1]: g["retentionInDays"] for g in groups} == {"postgresql": 30, "upgrade": 30}
    alarms = boto3_client("cloudwatch").describe_alarms(AlarmNamePrefix="ndis-chatbot-local-")["MetricAlarms"]
    # 8 signals plus the storage autoscaling ceiling's alarm (the instance has a 100 GiB ceiling)
    assert len(alarms) == 9 and all(a["AlarmActions"] == [alarms[0]["AlarmActions"][0]] for a in alarms)
    assert "ndis-chatbot-local-free-storage-ceiling" in {a["AlarmName"] for a in alarms}
    param = boto3_client("ssm").get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]
    assert param["Type"] == "SecureString"
    url = param["Value"]
    ca = re.escape(local_stack["tls"]["ca_file"])
    assert re.fullmatch(rf"postgres://app_user(_clone)?:[A-Za-z0-9]{{32}}@127\.0\.0\.1:\d+/ndis_chatbot\?sslmode=verify-full&sslrootcert={ca}", url)
    # A new instance: RDS keeps the master password (the secret holds the embedded server's, moto
    # patch 10) and nothing else keeps a copy; the CA and the rotation schedule are as declared.
    assert instance["CACertificateIdentifier"] == "rds-ca-rsa2048-g1"
    secret_arn = instance["MasterUserSecret"]["SecretArn"]
    secret = boto3_client("secretsmanager").describe_secret(SecretId=secret_arn)
    assert (secret["RotationEnabled"], secret["RotationRules"]["AutomaticallyAfterDays"]) == (True, 7)
    names = [p["Name"] for p in boto3_client("ssm").describe_parameters()["Parameters"]]
    assert "/ndis-chatbot/local/rds/master_password" not in names


@pytest.mark.usefixtures("converged")
def test_app_user_is_least_privilege(local_stack, boto3_client):
    url = boto3_client("ssm").get_parameter(
        Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]["Value"]
    # The URL as stored: it points at the local stack's TLS endpoint and verifies it (verify-full).
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] in ("app_user", "app_user_clone")  # a rotation (test_iam_enforced) moves the URL
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
                    "CREATE INDEX ON embeddings (doc_id)",
                    # the migration history is the project's own: an app that can rewrite it can make the next
                    # deploy skip or re-run a migration
                    "SELECT * FROM schema_migrations", "DELETE FROM schema_migrations",
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ('9999', 'x.sql', 'x')"):
            with pytest.raises(psycopg2.Error) as failure:
                cur.execute(ddl)
            assert failure.value.pgcode == "42501", f"{ddl}: {failure.value}"  # insufficient_privilege
    conn.close()


@pytest.mark.usefixtures("converged")
def test_no_secret_in_output_even_with_vvv(local_stack, boto3_client):
    proc = run_playbook("site.yml", "-vvv", "--diff", stack=local_stack)
    assert proc.returncode == 0, proc.stdout[-4000:]
    output = proc.stdout + proc.stderr
    for secret in secrets_of(local_stack, boto3_client):
        assert secret not in output


@pytest.mark.usefixtures("converged")
def test_unreachable_database_fails_fast_with_a_clear_error(local_stack):
    # A closed port on the loopback: the preflight names host, port and what to check.
    proc = run_playbook("site.yml", "-e", '{"db_admin_login_port": 9, "db_connect_timeout": 3}',
                        "--tags", "postgres_db", stack=local_stack, timeout=120)
    assert proc.returncode != 0
    assert "Cannot connect to PostgreSQL at 127.0.0.1:9 as dbadmin within 3 s" in proc.stdout


@pytest.fixture
def extra_migration(tmp_path):
    """A copy of db/migrations plus one new file; its effects are undone afterwards."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for f in (REPO_ROOT / "db" / "migrations").glob("*.sql"):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "9000_drift_probe.sql").write_text("CREATE TABLE drift_probe (id int PRIMARY KEY);\n")
    return folder


@pytest.mark.usefixtures("converged")
def test_dry_run_predicts_drift_exactly(local_stack, boto3_client, extra_migration):
    """Drift by hand, then: --check --diff changes nothing and names exactly what the real run changes."""
    rds, ssm = boto3_client("rds"), boto3_client("ssm")
    rds.modify_db_instance(DBInstanceIdentifier="ndis-chatbot-local", PreferredBackupWindow="03:00-03:30",
                           ApplyImmediately=True)
    described = rds.describe_db_instances(DBInstanceIdentifier="ndis-chatbot-local")["DBInstances"][0]
    groups = described["DBParameterGroups"]
    # drift the change plan must see for a step it would otherwise skip: a tag, the subnet group
    rds.add_tags_to_resource(ResourceName=described["DBInstanceArn"], Tags=[{"Key": "owner", "Value": "by-hand"}])
    subnet_group = described["DBSubnetGroup"]
    rds.modify_db_subnet_group(DBSubnetGroupName=subnet_group["DBSubnetGroupName"], DBSubnetGroupDescription="edited by hand",
                               SubnetIds=[s["SubnetIdentifier"] for s in subnet_group["Subnets"]])
    rds.modify_db_parameter_group(DBParameterGroupName=groups[0]["DBParameterGroupName"], Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "immediate"}])
    url = ssm.get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]["Value"]
    ssm.put_parameter(Name="/ndis-chatbot/local/DATABASE_URL", Value=url.replace("sslmode=verify-full", "sslmode=prefer"),
                      Type="SecureString", Overwrite=True)
    conn = psycopg2.connect(make_dsn(local_stack, "ndis_chatbot"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("REVOKE USAGE ON SCHEMA public FROM ndis_chatbot_app")
        cur.execute("DROP INDEX embeddings_embedding_hnsw_cosine")
    extra = ("-e", f"migrations_dir={extra_migration}")
    try:
        report = run_playbook("playbooks/drift.yml", "--check", *extra, stack=local_stack)
        assert report.returncode != 0, report.stdout[-3000:]
        assert re.search(r"DRIFT ndis-chatbot-local: \d+ task\(s\) would change", report.stdout)
        assert "migrations : sql | Apply pending migrations" in report.stdout
        before = snapshot(local_stack, boto3_client)
        check = run_playbook("site.yml", "--check", "--diff", *extra, stack=local_stack)
        assert check.returncode == 0, check.stdout[-4000:]
        assert snapshot(local_stack, boto3_client) == before, "check mode changed something"
        real = run_playbook("site.yml", *extra, stack=local_stack)
        assert real.returncode == 0, real.stdout[-6000:]
        gap = prediction_gap(check.stdout, real.stdout)
        assert gap == {"predicted, not changed": [], "changed, not predicted": []}, gap
        for task in ("rds_instance : instance | Ensure the RDS instance",
                     "rds_instance : network | Ensure the parameter group",
                     "rds_instance : network | Ensure the DB subnet group",
                     "ssm_secret : store | Store DATABASE_URL as a SecureString",
                     "migrations : sql | Apply pending migrations"):
            assert task in changed_tasks(real.stdout), task
        assert "parameter rds.force_ssl" in check.stdout  # the classification table
        assert "subnet group" in check.stdout and "edited by hand" in check.stdout
        tags = rds.list_tags_for_resource(ResourceName=described["DBInstanceArn"])["TagList"]
        assert "owner" not in {t["Key"] for t in tags}, tags
        assert rds.describe_db_subnet_groups(DBSubnetGroupName=subnet_group["DBSubnetGroupName"])[
            "DBSubnetGroups"][0]["DBSubnetGroupDescription"] != "edited by hand"
        after = run_playbook("playbooks/drift.yml", "--check", *extra, stack=local_stack)
        assert after.returncode == 0, after.stdout[-3000:]
        assert "DRIFT ndis-chatbot-local: 0 task(s) would change" in after.stdout
        assert recap(after.stdout)["changed"] == 0, changed_tasks(after.stdout)
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS drift_probe")
            cur.execute("DELETE FROM public.schema_migrations WHERE version = '9000'")
        conn.close()


@pytest.mark.usefixtures("converged")
def test_health_passes_on_the_healthy_stack_and_names_an_alarm_and_a_blocker(local_stack, boto3_client):
    """playbooks/health.yml right after the deployment: passes, no dump being due yet; with the time dumps were set up
    moved nine days back: fails naming how late the dump and the restore test are; after a dump and a restore test:
    all well; then an alarm set to ALARM and a session holding a lock another waits on: it fails naming both."""
    pg = local_stack["pg"]
    env = {**os.environ, "PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGUSER": pg["user"],
           "PGPASSWORD": local_stack["admin_password"], "PGSSLMODE": "disable", "DBOPS_PG_BINDIR": pg["bindir"],
           "AWS_ENDPOINT_URL": local_stack["aws"]["endpoint_url"], "AWS_REGION": local_stack["aws"]["region"],
           "AWS_ACCESS_KEY_ID": local_stack["aws"]["access_key_id"],
           "AWS_SECRET_ACCESS_KEY": local_stack["aws"]["secret_access_key"]}
    # Right after the deployment no dump is due yet: nothing to miss, so health passes and says when the first is due.
    fresh = run_playbook("playbooks/health.yml", stack=local_stack)
    assert fresh.returncode == 0, fresh.stdout[-4000:]
    assert re.search(r"INFO\s+Newest logical dump\s+no dump yet: the first run of schedule 0 16 \* \* \* is due "
                     r"\d{4}-\d\d-\d\d 16:00 UTC", fresh.stdout), fresh.stdout[-3000:]
    assert re.search(r"INFO\s+Last restore test\s+none yet: the first is due ", fresh.stdout), fresh.stdout[-3000:]
    # Dumps set up nine days ago (the time the check reads, moved back) and none taken: both are overdue, and say by how much.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 9 * 86400))
    overdue = run_playbook("playbooks/health.yml", "-e", "health_dumps_since=" + since, stack=local_stack)
    assert overdue.returncode != 0, overdue.stdout[-3000:]
    assert re.search(r"FAIL\s+Newest logical dump\s+no dump yet: the first run of schedule 0 16 \* \* \* was due "
                     r"\S+ 16:00 UTC, \d+\.\d d late", overdue.stdout), overdue.stdout[-3000:]
    assert re.search(r"FAIL\s+Last restore test\s+none recorded: the first was due \S+ \S+ UTC \(every 7 d\), "
                     r"\d+\.\d (h|d) late", overdue.stdout), overdue.stdout[-3000:]
    assert "is unwell: Newest logical dump; Last restore test" in overdue.stdout

    policy = str(REPO_ROOT / "configs/backup/backup.rules.json")
    for command in ("dump", "restore-test"):
        ran = subprocess.run([str(BIN / "dbops-dump"), command, "--policy", policy, "--database", "ndis_chatbot", "--json"],
                             env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        assert ran.returncode == 0, ran.stderr[-2000:]
    healthy = run_playbook("playbooks/health.yml", stack=local_stack)
    assert healthy.returncode == 0, healthy.stdout[-4000:]
    assert re.search(r"HEALTH ndis-chatbot-local: 0 FAIL, \d+ WARN, \d+ ok", healthy.stdout)
    for name in ("CloudWatch alarms", "RDS instance", "Pending maintenance", "Storage headroom",
                 "Point-in-time recovery \\(RPO\\)", "Newest logical dump", "Last restore test",
                 "Connections vs max_connections", "Long-running statements", "Idle in transaction", "Blocking locks",
                 "Dead tuples on public.embeddings", "Vector index on public.embeddings", "Vector recall@10"):
        assert re.search(rf"(PASS|INFO|WARN)\s+{name}\s", healthy.stdout), name
    assert re.search(r"INFO\s+Slow statements\s+pg_stat_statements: not available on this server", healthy.stdout)
    assert re.search(r"PASS\s+Newest logical dump\s+\d+ (s|min) old; the next run of schedule 0 16 \* \* \* is due",
                     healthy.stdout), healthy.stdout[-3000:]
    assert re.search(r"PASS\s+Last restore test\s+PASS \d+ (s|min) ago", healthy.stdout)  # the record dbops-dump kept
    assert recap(healthy.stdout)["changed"] == 0

    boto3_client("cloudwatch").set_alarm_state(AlarmName="ndis-chatbot-local-cpu", StateValue="ALARM",
                                               StateReason="Threshold Crossed: test")
    holder = psycopg2.connect(make_dsn(local_stack, "ndis_chatbot"))
    waiter = psycopg2.connect(make_dsn(local_stack, "ndis_chatbot"))
    waiter.autocommit = True
    with holder.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS health_lock_probe (id int)")
    holder.commit()
    with holder.cursor() as cur:
        cur.execute("SET application_name = 'holds-the-lock'; LOCK TABLE health_lock_probe IN EXCLUSIVE MODE")
        cur.execute("SELECT pg_backend_pid()")
        holder_pid = cur.fetchone()[0]
    waiter.cursor().execute("SET lock_timeout = '120s'")
    blocked = threading.Thread(target=lambda: _wait_for_lock(waiter), daemon=True)
    blocked.start()
    with holder.cursor() as cur:  # until the other session really waits
        for _ in range(100):
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND %s = ANY (pg_blocking_pids(pid))", (holder_pid,))
            if cur.fetchone()[0]:
                break
            time.sleep(0.1)
    try:
        unwell = run_playbook("playbooks/health.yml", stack=local_stack)
    finally:
        holder.rollback()
        blocked.join(30)
        with holder.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS health_lock_probe")
        holder.commit()
        holder.close()
        waiter.close()
        boto3_client("cloudwatch").set_alarm_state(AlarmName="ndis-chatbot-local-cpu", StateValue="OK",
                                                   StateReason="test over")
    assert unwell.returncode != 0
    assert re.search(r"FAIL\s+CloudWatch alarms\s+1 of \d+ in ALARM: ndis-chatbot-local-cpu \(Threshold Crossed",
                     unwell.stdout), unwell.stdout[-3000:]
    assert re.search(rf"FAIL\s+Blocking locks\s+pid {holder_pid} \([a-z_]+/holds-the-lock, idle in transaction",
                     unwell.stdout), unwell.stdout[-3000:]
    assert "is unwell: CloudWatch alarms; Blocking locks" in unwell.stdout


def _wait_for_lock(conn):
    try:
        conn.cursor().execute("INSERT INTO health_lock_probe VALUES (1)")
    except psycopg2.Error:
        pass
