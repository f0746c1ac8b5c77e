"""Where the project runs besides the laptop: GitHub Actions, the Docker scenario, pre-commit.

`make test-docker` (CI's second step, .ci/run) runs the Docker scenario and the execution
environment for real; these tests check, without an engine, what they rest on:

- .github/workflows/ci.yml: the GitHub workflow JSON Schema (check-jsonschema's vendored
  copy, offline), zizmor's offline audits (pinned actions, permissions, credentials,
  injection), and the jobs CI needs: lint, pytest, both Molecule scenarios, a pgvector service.
- molecule/docker: `molecule list` validates molecule.yml against Molecule's and the docker
  driver's schemas; its playbooks pass `ansible-playbook --syntax-check` with the local
  inventory (`molecule syntax` itself asks the Docker daemon first).
- docker/*.sh: `bash -n`; the Makefile and .ci/run wire them as docs/local-stack.md says.
- .pre-commit-config.yaml: valid for pre-commit, and its hooks are the `make lint` commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

BIN = Path(sys.executable).parent
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ci.yml"
SCHEDULED = REPO_ROOT / ".github" / "workflows" / "scheduled.yml"
DOCKER_SCENARIO = REPO_ROOT / "molecule" / "docker"


def run(*argv: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    full_env.update(NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", **env)
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], cwd=REPO_ROOT, env=full_env,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("workflow", [WORKFLOW, SCHEDULED], ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(workflow):
    proc = run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("workflow", [WORKFLOW, SCHEDULED], ids=lambda p: p.name)
def test_workflow_passes_zizmor(workflow):
    proc = run("zizmor", "--offline", "--no-progress", str(workflow))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scheduled_workflow_runs_drift_and_health_per_environment():
    workflow = yaml.safe_load(SCHEDULED.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow[True]["schedule"][0]["cron"]  # PyYAML reads the key `on` as True
    envs = set(workflow["jobs"]["environment"]["strategy"]["matrix"]["env"])
    inventories = {p.name for p in (REPO_ROOT / "inventories").iterdir() if (p / "hosts.yml").exists()}
    assert envs == inventories - {"local"}, "every AWS environment has its scheduled job"
    rotate = workflow["jobs"]["rotate"]
    assert set(rotate["strategy"]["matrix"]["env"]) == envs, "every AWS environment's password rotates when due"
    assert any("playbooks/rotate_app_password.yml" in step.get("run", "") and "rotate_when_due=true" in step["run"]
               for step in rotate["steps"])
    for job in (workflow["jobs"]["environment"], workflow["jobs"]["local"]):
        runs = [step.get("run", "") for step in job["steps"]]
        drift = next(i for i, r in enumerate(runs) if "playbooks/drift.yml" in r and "--check" in r)
        health = next(i for i, r in enumerate(runs) if "playbooks/health.yml" in r)
        assert job["steps"][health]["if"] == "${{ !cancelled() }}", "health runs even when drift failed"
        assert drift < health
        # the query sample is trimmed to its retention first: the drift check then finds no rows to trim
        trim = next(i for i, r in enumerate(runs) if "playbooks/trim_query_sample.yml" in r)
        assert trim < drift and job["steps"][drift]["if"] == "${{ !cancelled() }}"
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"pin {step['uses']} to a commit"
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    # drift and health run as the read-only job: on AWS its role's profile, locally its user with moto enforcing IAM
    assert workflow["jobs"]["environment"]["env"]["AWS_PROFILE"] == "ndis-${{ matrix.env }}-readonly"
    local = workflow["jobs"]["local"]
    assert local["env"]["NDIS_LOCAL_ENFORCE_IAM"] == "1"
    for step in local["steps"]:
        if "playbooks/drift.yml" in step.get("run", "") or "playbooks/health.yml" in step.get("run", ""):
            assert step["env"]["NDIS_LOCAL_IAM_JOB"] == "readonly", step


def image_default(image: str) -> str:
    """``${VAR:-default}`` (Molecule's interpolation) -> default; a plain name as it is."""
    found = re.fullmatch(r"\$\{\w+:-([^}]+)\}", image)
    return found.group(1) if found else image


def recipe(target: str) -> str:
    makefile = (REPO_ROOT / "Makefile").read_text()
    return re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)


def test_workflow_runs_what_make_test_runs():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert workflow["permissions"] == {"contents": "read"}
    commands = {name: "\n".join(step.get("run", "") for step in job["steps"]) for name, job in jobs.items()}
    assert "make lint" in commands["lint"]
    assert "make pytest" in commands["pytest"]
    assert "make molecule" in commands["molecule-default"]
    assert "make molecule-docker" in commands["molecule-docker"]
    # GitHub's runners reach Docker Hub: the real pgvector image, never a local build
    assert jobs["molecule-docker"]["env"]["NDIS_DOCKER_IMAGES"] == "registry"
    services = jobs["molecule-docker"]["services"]
    scenario = yaml.safe_load((DOCKER_SCENARIO / "molecule.yml").read_text())
    images = {image_default(p["image"]) for p in scenario["platforms"]}
    assert {s["image"] for s in services.values()} <= images, "the service should be the scenario's pgvector image"
    for job in jobs.values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"pin {step['uses']} to a commit"
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_docker_steps_are_wired_into_make_and_ci():
    assert "docker/engine.sh docker/molecule.sh" in recipe("molecule-docker")
    assert "docker/engine.sh docker/ee.sh" in recipe("ee")
    assert "docker/engine.sh docker/test.sh" in recipe("test-docker")
    test_sh = (REPO_ROOT / "docker" / "test.sh").read_text()
    assert "docker/molecule.sh" in test_sh and "docker/ee.sh run" in test_sh
    assert '"$BIN/molecule" test -s docker' in (REPO_ROOT / "docker" / "molecule.sh").read_text()
    ci_run = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_run.index("make test") < ci_run.index("make test-docker")
    # the Docker steps run unless NDIS_CI_DOCKER=0, which says loudly that they were skipped
    assert ci_run[ci_run.index("make test-docker") - 1] == "else"
    assert 'if [ "${NDIS_CI_DOCKER:-1}" = 0 ]; then' in ci_run
    assert any("SKIPPED" in line for line in ci_run)


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO_ROOT / "docker").glob("*.sh")))
def test_docker_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(REPO_ROOT / "docker" / script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert os.access(REPO_ROOT / "docker" / script, os.X_OK), f"docker/{script} should be executable"


def test_docker_scenario_is_valid_for_molecule():
    scenario = yaml.safe_load((DOCKER_SCENARIO / "molecule.yml").read_text())
    assert scenario["driver"]["name"] == "docker"
    pg = next(p for p in scenario["platforms"] if image_default(p["image"]) == "pgvector/pgvector:pg16")
    # the image's entrypoint must run, with the server as its command (a string: Molecule's
    # docker driver splits it), on the host's loopback
    assert pg["image"] == "${NDIS_DOCKER_PG_IMAGE:-pgvector/pgvector:pg16}"
    assert isinstance(pg["command"], str) and pg["command"].startswith("postgres ")
    assert "listen_addresses=127.0.0.1" in pg["command"]
    assert all(p["network_mode"] == "host" and p["pre_build_image"] is True for p in scenario["platforms"])
    assert scenario["provisioner"]["playbooks"]["converge"] == "converge.yml"
    # the same converge and verify as the default scenario
    for playbook in ("converge.yml", "verify.yml"):
        assert (DOCKER_SCENARIO / playbook).read_text() == (REPO_ROOT / "molecule" / "default" / playbook).read_text()

    proc = run("molecule", "list", "-s", "docker", "--format", "plain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for platform in scenario["platforms"]:
        assert re.search(rf"^{re.escape(platform['name'])}\s+docker\s+ansible\s+docker\b", proc.stdout, flags=re.M), proc.stdout


@pytest.mark.parametrize("playbook", ["prepare.yml", "converge.yml", "verify.yml", "cleanup.yml"])
def test_docker_scenario_playbooks_pass_syntax_check(playbook):
    proc = run(
        "ansible-playbook", "--syntax-check", "-i", "inventories/local", str(DOCKER_SCENARIO / playbook),
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pre_commit_runs_what_make_lint_runs():
    proc = run("pre-commit", "validate-config", ".pre-commit-config.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hooks = {h["id"]: h for repo in yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())["repos"] for h in repo["hooks"]}
    makefile = (REPO_ROOT / "Makefile").read_text()
    lint_recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    for hook_id in ("yamllint", "ansible-lint", "ruff"):
        assert hooks[hook_id]["language"] == "system", f"{hook_id}: use the venv's binary, no network"
        assert f"$(BIN)/{hooks[hook_id]['entry']}" in lint_recipe, f"make lint does not run `{hooks[hook_id]['entry']}`"
