"""Each job under its own IAM policy, with moto enforcing IAM (the site's stack, tests/site_state.py).

The site's recording (first deployment and a no-op run as the deploy user, check mode as the read-only
user) and this module's runs (health as the read-only user, the rotation in check mode as the read-only
user and for real as the rotate user, a dump as the backup runner, the restore test as its user, a no-op
monitoring.yml as the deploy user) each use a user that holds its job's iam/local/<job>.json alone; test_site.py
runs drift and verify there as the read-only user. Here:

- every run passes, and every AWS call it made was its job user's and allowed;
- the actions each job's runs called are exactly its document's, less the ones iam/policies.yml lists as
  not taken by the tests (`not_in_tests`, with the reason), which none of the runs called;
- what the site created falls under the deploy document's resource ARNs (moto checks S3's resources, not the others);
- taking one action, chosen at random here, out of a job's policy makes a run of that job fail, and the
  run's output names the action, the resource, the job's policy document and what had changed.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from fnmatch import fnmatch

import pytest

from conftest import REPO_ROOT, boto3_factory
from playbook_runner import iam_calls, iam_jobs, recap, run_playbook
from site_state import Run, recorded

# name: (playbook, arguments, job)
JOB_RUNS = {
    "health": ("playbooks/health.yml", (), "readonly"),
    # the site's URL is minutes old: the rotation would otherwise refuse (rotate_app_password_min_hours)
    "rotate check": ("playbooks/rotate_app_password.yml", ("--check", "-e", "rotate_app_password_min_hours=0"), "readonly"),
    "rotate": ("playbooks/rotate_app_password.yml", ("-e", "rotate_app_password_min_hours=0"), "rotate"),
    "dump": ("playbooks/backup_now.yml", (), "backup-runner"),
    "restore test": ("playbooks/restore_test.yml", (), "restore-test"),
    "monitoring": ("playbooks/monitoring.yml", (), "deploy"),
    "major upgrade plan": ("playbooks/major_upgrade_plan.yml", ("-e", "rds_instance_major_upgrade_method=in_place",
                                                                "-e", "rds_instance_allow_major_version_upgrade=true"),
                           "readonly"),
}
# AWS answers it for any credentials, whatever their policies (amazon.aws's modules ask who they are)
ALWAYS_ALLOWED = {"sts:GetCallerIdentity"}
SITE_RUN_JOBS = {"fresh check": "readonly", "converge": "deploy", "repeat": "deploy", "check": "readonly"}


def document(job: str) -> dict:
    return json.loads((REPO_ROOT / "iam" / "local" / f"{job}.json").read_text())


def actions_of(doc: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for statement in doc["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            out.setdefault(action, []).extend(resources)
    return out


def without(doc: dict, action: str) -> dict:
    """DOC with ACTION taken out (a statement left without actions goes too)."""
    statements = []
    for statement in doc["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        kept = [a for a in actions if a != action]
        if kept:
            statements.append({**statement, "Action": kept})
    return {**doc, "Statement": statements}


def clear_dumps(boto3_client) -> None:
    """Every version of every dump, manifest and restore-test record: test_site.py's health test starts with none."""
    rules = json.loads((REPO_ROOT / "configs" / "backup" / "backup.rules.json").read_text())["logical_dumps"]
    s3 = boto3_client("s3")
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=rules["s3_bucket"], Prefix=rules["s3_prefix"])
    for page in pages:
        for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=rules["s3_bucket"], Key=entry["Key"], VersionId=entry["VersionId"])


@pytest.fixture(scope="module")
def boto3_client(site_stack):
    return boto3_factory(site_stack)


@pytest.fixture(scope="module")
def job_runs(site_runs, site_stack, boto3_client) -> dict[str, Run]:
    """The jobs' runs on the converged stack, each once, as its job's user; the dumps removed afterwards."""
    assert recorded(site_runs, "converge").rc == 0, "the site did not converge"
    runs: dict[str, Run] = {}
    try:
        for name, (playbook, args, job) in JOB_RUNS.items():
            start, began = len(iam_calls(site_stack)), time.monotonic()
            proc = run_playbook(playbook, *args, stack=site_stack, job=job)
            runs[name] = Run(proc.returncode, proc.stdout + proc.stderr, calls=iam_calls(site_stack, start))
            print(f"{name} as {job}: exit {proc.returncode}, {time.monotonic() - began:.0f} s")
    finally:
        clear_dumps(boto3_client)
    return runs


def every_run(site_runs, job_runs):
    for name, job in SITE_RUN_JOBS.items():
        yield name, job, recorded(site_runs, name)
    for name, (_, _, job) in JOB_RUNS.items():
        yield name, job, job_runs[name]


def test_each_job_runs_under_its_own_policy(site_runs, job_runs, site_stack):
    users = {job: entry["user"] for job, entry in site_stack["iam"]["jobs"].items()}
    assert set(users) == set(iam_jobs()), "the stack's users are not the jobs of iam/policies.yml"
    for entry in site_stack["iam"]["jobs"].values():  # each user's key is readable by its owner alone
        assert os.stat(entry["credentials_file"]).st_mode & 0o777 == 0o600, entry
    for name, job, run in every_run(site_runs, job_runs):
        assert run.rc == 0, f"{name} as {job}: " + run.stdout[-4000:]
        assert run.calls, f"{name}: no AWS call recorded"
        strangers = {(c["user"], c["action"]) for c in run.calls if c["user"] != users[job]}
        assert strangers == set(), f"{name} ran as {job} ({users[job]}), but these calls were not its user's"
        refused = [c for c in run.calls if not c["allowed"]]
        assert refused == [], f"{name}: refused {refused}"
    assert recorded(site_runs, "repeat").recap["changed"] == 0
    assert re.search(r"Rotated: /ndis-chatbot/local/DATABASE_URL is now version \d+, logs in as app_user(_clone)?\.",
                     job_runs["rotate"].stdout)
    assert recap(job_runs["rotate check"].stdout)["changed"] >= 0  # check mode with the read-only policy passes


def test_each_document_holds_exactly_the_actions_its_job_calls(site_runs, job_runs):
    called: dict[str, set[str]] = {job: set() for job in iam_jobs()}
    for _, job, run in every_run(site_runs, job_runs):
        called[job] |= {c["action"] for c in run.calls} - ALWAYS_ALLOWED
    problems = {}
    for job, entry in iam_jobs().items():
        held = set(actions_of(document(job)))
        untested = set(entry.get("not_in_tests") or {})
        gaps = {
            "held but never called (take it out, or list it in not_in_tests with why)": sorted(held - untested - called[job]),
            "listed in not_in_tests but called (take it off that list)": sorted(untested & called[job]),
            "not_in_tests names an action the document lacks": sorted(untested - held),
            "called but not held": sorted(called[job] - held),
        }
        gaps = {k: v for k, v in gaps.items() if v}
        if gaps:
            problems[job] = gaps
    assert problems == {}


def test_what_the_site_created_falls_under_the_deploy_document(site_runs, boto3_client):
    assert recorded(site_runs, "converge").rc == 0
    resources = [r for rs in actions_of(document("deploy")).values() for r in rs if r != "*"]
    rds = boto3_client("rds")
    instance = rds.describe_db_instances(DBInstanceIdentifier="ndis-chatbot-local")["DBInstances"][0]
    arns = [instance["DBInstanceArn"], instance["MonitoringRoleArn"], instance["MasterUserSecret"]["SecretArn"]]
    arns += [g["DBParameterGroupArn"] for g in rds.describe_db_parameter_groups()["DBParameterGroups"]
             if not g["DBParameterGroupName"].startswith("default.")]
    arns += [g["DBSubnetGroupArn"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]]
    arns += [s["EventSubscriptionArn"] for s in rds.describe_event_subscriptions()["EventSubscriptionsList"]]
    arns += [t["TopicArn"] for t in boto3_client("sns").list_topics()["Topics"]]
    arns += [a["AlarmArn"] for a in boto3_client("cloudwatch").describe_alarms()["MetricAlarms"]]
    arns += [g["arn"].removesuffix(":*") for g in boto3_client("logs").describe_log_groups()["logGroups"]]
    arns += [f"arn:aws:ssm:ap-southeast-2:123456789012:parameter{p['Name']}"
             for p in boto3_client("ssm").describe_parameters()["Parameters"]]
    arns += [f"arn:aws:s3:::{b['Name']}" for b in boto3_client("s3").list_buckets()["Buckets"]]
    assert len(arns) >= 20, arns
    outside = [arn for arn in arns if not any(fnmatch(arn, pattern) for pattern in resources)]
    assert outside == [], "created by the site, but not under a resource of iam/local/deploy.json"


# job: the run that proves it (from JOB_RUNS), and what that run may have changed before a refusal
PROOFS = {"readonly": "health", "deploy": "monitoring", "backup-runner": "dump", "rotate": "rotate"}


@pytest.mark.parametrize("job", sorted(PROOFS))
def test_an_action_taken_out_of_a_policy_fails_its_job_and_says_so(job, job_runs, site_stack, boto3_client):
    name = PROOFS[job]
    baseline = job_runs[name]
    assert baseline.rc == 0, baseline.stdout[-3000:]
    user = site_stack["iam"]["jobs"][job]["user"]
    action = random.choice(sorted({c["action"] for c in baseline.calls} - ALWAYS_ALLOWED))
    print(f"taking {action} out of {user}'s policy (iam/local/{job}.json), then running {name}")
    iam = boto3_client("iam")
    doc = document(job)
    playbook, args, _ = JOB_RUNS[name]
    iam.put_user_policy(UserName=user, PolicyName=job, PolicyDocument=json.dumps(without(doc, action)))
    try:
        start = len(iam_calls(site_stack))
        proc = run_playbook(playbook, *args, stack=site_stack, job=job)
        calls = iam_calls(site_stack, start)
    finally:
        iam.put_user_policy(UserName=user, PolicyName=job, PolicyDocument=json.dumps(doc))
        clear_dumps(boto3_client)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{name} passed without {action}:\n" + output[-3000:]
    refused = [c for c in calls if not c["allowed"]]
    assert refused and refused[0]["action"] == action and refused[0]["user"] == user, refused
    # the message: the action, the resource, the job's document, what changed
    block = re.search(r"^AWS ACCESS DENIED: (\S+) was refused.*?(?=^\S|\Z)", output, re.M | re.S)
    assert block, f"no AccessDenied explanation in the output:\n{output[-3000:]}"
    text = block.group(0)
    print(text)
    assert block.group(1) == action, text
    assert f"iam/local/{job}.json (job {job}" in text and f"holds {action}" in text, text
    resources = [r for r in actions_of(doc)[action]]
    named = re.search(r"resource: (.*)", text).group(1)
    assert any(r in named for r in resources) or refused[0]["resource"] in named, text
    assert re.search(r"changed:  (nothing else|before the refusal this run changed \d+ task)", text), text
    if job == "readonly":
        assert "changed:  nothing else" in text, text


def test_a_refusal_after_a_change_says_what_changed(job_runs, site_stack, boto3_client):
    """The rotation without ssm:PutParameter: the other login took the new password before SSM refused the write;
    the message lists that change, SSM keeps the URL it held (whose login the rotation never touched), and the app
    still logs in with it."""
    import psycopg2

    assert job_runs["rotate"].rc == 0
    user, job = site_stack["iam"]["jobs"]["rotate"]["user"], "rotate"
    iam, doc = boto3_client("iam"), document("rotate")
    url = boto3_client("ssm").get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]
    iam.put_user_policy(UserName=user, PolicyName=job, PolicyDocument=json.dumps(without(doc, "ssm:PutParameter")))
    try:
        proc = run_playbook("playbooks/rotate_app_password.yml", *JOB_RUNS["rotate"][1], stack=site_stack, job=job)
    finally:
        iam.put_user_policy(UserName=user, PolicyName=job, PolicyDocument=json.dumps(doc))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    block = re.search(r"^AWS ACCESS DENIED: ssm:PutParameter was refused.*?(?=^\S|\Z)", output, re.M | re.S)
    assert block, output[-3000:]
    print(block.group(0))
    assert "arn:aws:ssm:ap-southeast-2:123456789012:parameter/ndis-chatbot/local/*" in block.group(0)
    assert re.search(r"changed:  before the refusal this run changed \d+ task\(s\): [^\n]*"
                     r"postgres_db : password \| Set the login's password", block.group(0)), block.group(0)
    # SSM kept the URL it held, whose login the rotation never touched: the app logs in with it
    after = boto3_client("ssm").get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]
    assert (after["Version"], after["Value"]) == (url["Version"], url["Value"])
    conn = psycopg2.connect(url["Value"])
    conn.close()
