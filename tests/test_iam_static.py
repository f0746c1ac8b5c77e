"""The jobs' IAM policy documents, checked without AWS (iam/policies.yml, playbooks/iam.yml, iam/<env>/*.json).

- The committed documents are what playbooks/iam.yml renders for each environment, and environments
  differ only in names (region, account, instance, prefix).
- parliament (with its community auditors) reports nothing, but for actions its bundled catalogue
  predates, which policy_sentry's catalogue must then hold (PARLIAMENT_CATALOGUE_LAGS).
- Every action is in policy_sentry's catalogue; every resource ARN matches a resource type its action
  supports; "*" only for actions that support no resource type; iam:PassRole only on the monitoring role,
  and only for RDS's monitoring service.
- A read-only document holds no write: policy_sentry's access level of each action is List or Read
  (kms:Decrypt apart, READS_CLASSED_AS_WRITE).
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import REPO_ROOT
from playbook_runner import run_playbook

ENVS = ("local", "staging", "prod")
IAM = REPO_ROOT / "iam"
# kms:Decrypt is a "Write" in AWS's table, but here it only reads an encrypted value (the SSM parameter,
# the secret, a dump) through the service named by its kms:ViaService condition
READS_CLASSED_AS_WRITE = {"kms:Decrypt"}
# parliament 1.6.4 bundles an IAM catalogue older than these actions; policy_sentry 0.15.2 has them
PARLIAMENT_CATALOGUE_LAGS = {"rds:DescribeDBMajorEngineVersions"}
# parliament marks every resource type of these actions required; AWS authorizes on the resources a request
# involves: a replica of an instance involves no DB cluster (only a Multi-AZ DB cluster's replica does)
PARLIAMENT_RESOURCE_NOT_INVOLVED = {("rds:CreateDBInstanceReadReplica", "arn:*:rds:*:*:cluster:*")}


def documents(env: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((IAM / env).glob("*.json"))}


def statements(document: dict):
    for statement in document["Statement"]:
        actions, resources = statement["Action"], statement["Resource"]
        yield (statement, actions if isinstance(actions, list) else [actions],
               resources if isinstance(resources, list) else [resources])


def action_rows(action: str) -> list[dict]:
    from policy_sentry.querying.actions import get_action_data

    service, name = action.split(":")
    try:
        rows = get_action_data(service, name).get(service, [])
    except Exception:  # policy_sentry raises plain exceptions for unknown services
        return []
    return [row for row in rows if row["action"].lower() == action.lower()]


def arn_pattern(arn_format: str) -> re.Pattern:
    """A resource ARN format of the catalogue (arn:${Partition}:rds:${Region}:...) as a regex."""
    parts = re.split(r"\$\{[^}]+\}", arn_format)
    return re.compile("^" + "[^\\s]+".join(re.escape(p) for p in parts) + "$")


def all_documents():
    return [(env, job, doc) for env in ENVS for job, doc in documents(env).items()]


def test_the_committed_documents_are_what_the_playbook_renders(tmp_path):
    jobs = set(yaml.safe_load((IAM / "policies.yml").read_text())["iam_policy_jobs"])
    proc = run_playbook("playbooks/iam.yml", "-e", f"iam_policy_output_dir={tmp_path}/{{{{ deploy_env }}}}",
                        limit=",".join(ENVS), env={"NDIS_LOCAL_REGION": None})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for env in ENVS:
        out = tmp_path / env
        rendered = {p.stem: p.read_text() for p in out.glob("*.json")}
        assert set(rendered) == jobs, f"{env}: {sorted(rendered)} != {sorted(jobs)}"
        for job, text in rendered.items():
            committed = IAM / env / f"{job}.json"
            assert committed.exists() and committed.read_text() == text, (
                f"{committed.relative_to(REPO_ROOT)} is not what playbooks/iam.yml renders: make iam ENV={env}")
            assert f"{job} (" in proc.stdout, f"the playbook did not print {job}'s document"
    # prod, staging and local differ only in names
    def shape(env):
        names = {"local": ("ap-southeast-2", "123456789012"), "staging": ("ap-southeast-2", "*"),
                 "prod": ("ap-southeast-2", "*")}[env]
        text = json.dumps(documents(env), sort_keys=True)
        text = text.replace(f"ndis-chatbot-{env}", "<instance>").replace(f"/ndis-chatbot/{env}/", "/<prefix>/")
        return text.replace(f":{names[1]}:", ":<account>:").replace(f"::{names[1]}:", "::<account>:")
    assert shape("prod") == shape("staging") == shape("local")


def test_parliament_reports_nothing():
    from parliament import analyze_policy_string

    for env, job, document in all_documents():
        policy = analyze_policy_string(json.dumps(document), include_community_auditors=True)
        findings = [f for f in policy.findings
                    if not (f.issue == "UNKNOWN_ACTION" and f.location.get("string") in PARLIAMENT_CATALOGUE_LAGS)
                    and not (f.issue == "RESOURCE_MISMATCH" and all(
                        (d.get("action"), d.get("required_format")) in PARLIAMENT_RESOURCE_NOT_INVOLVED
                        for d in f.detail))]
        assert findings == [], f"iam/{env}/{job}.json: " + "; ".join(
            f"{f.issue} {f.detail} {f.location}" for f in findings)
    for action in PARLIAMENT_CATALOGUE_LAGS:
        assert action_rows(action), f"{action} is in neither catalogue: drop it from PARLIAMENT_CATALOGUE_LAGS"


def test_every_action_exists_and_every_resource_is_one_its_action_supports():
    problems = []
    for env, job, document in all_documents():
        for _statement, actions, resources in statements(document):
            for action in actions:
                rows = action_rows(action)
                if not rows:
                    problems.append(f"iam/{env}/{job}.json: {action} is not in policy_sentry's catalogue")
                    continue
                formats = [r["resource_arn_format"] for r in rows if r["resource_arn_format"] != "*"]
                for resource in resources:
                    if resource == "*":
                        if formats:
                            problems.append(f"iam/{env}/{job}.json: {action} on * but it supports {formats}: scope it")
                    elif not any(arn_pattern(f).match(resource) for f in formats):
                        problems.append(f"iam/{env}/{job}.json: {action} does not support {resource} ({formats})")
    assert problems == []


def test_pass_role_is_limited_to_the_monitoring_role():
    for env, job, document in all_documents():
        for statement, actions, resources in statements(document):
            if "iam:PassRole" in actions:
                assert actions == ["iam:PassRole"], f"iam/{env}/{job}.json: keep iam:PassRole in a statement of its own"
                assert resources == [f"arn:aws:iam::{'123456789012' if env == 'local' else '*'}:role/"
                                     f"ndis-chatbot-{env}-rds-monitoring"], resources
                assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "monitoring.rds.amazonaws.com"}}
    assert any("iam:PassRole" in a for _, a, _ in statements(documents("prod")["deploy"]))


@pytest.mark.parametrize("job", ["readonly"])
def test_the_read_only_document_holds_no_write(job):
    for env in ENVS:
        for _, actions, _ in statements(documents(env)[job]):
            for action in actions:
                levels = {row["access_level"] for row in action_rows(action)}
                assert levels <= {"List", "Read"} or action in READS_CLASSED_AS_WRITE, (
                    f"iam/{env}/{job}.json: {action} is {levels}")
