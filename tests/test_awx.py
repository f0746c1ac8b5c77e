"""The project runs the way AWX runs it.

AWX (and Ansible Automation Platform) copies the project into a private data dir and runs
``ansible-runner`` there, inside the execution environment built from
``execution-environment.yml``. Here:

- ``ansible-builder create`` writes the EE build context (building the image needs podman or
  docker, which this machine does not have), and the EE pins agree with requirements.txt;
- ``ansible-runner run`` runs site.yml from a copy of the project over a private data dir,
  with the local inventory, against a local stack of its own (free ports, own directory), and
  the job ends ``successful`` with the verify summary in its stdout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, own_stack

BIN = Path(sys.executable).parent
EE_FILE = REPO_ROOT / "execution-environment.yml"
# What AWX's project sync would not carry (or what is local state, not project).
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".ansible", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "results", "output",
)


def pins(lines) -> dict[str, str]:
    """``name==version`` lines -> {normalized name (extras dropped): version}."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-")] = version.strip()
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Ansible, AWS, Molecule or stack settings, as on an AWX node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_", "MOLECULE_", "NDIS_"))}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


def test_execution_environment_pins_match_requirements():
    ee = yaml.safe_load(EE_FILE.read_text())
    assert ee["version"] == 3
    deps = ee["dependencies"]
    req = pins((REPO_ROOT / "requirements.txt").read_text().splitlines())
    ee_python = pins(deps["python"])
    for name, version in ee_python.items():
        assert req.get(name) == version, f"execution-environment.yml pins {name}=={version}, requirements.txt {req.get(name)}"
    assert {"boto3", "botocore", "psycopg2-binary", "jsonschema"} <= set(ee_python)
    for key in ("ansible_core", "ansible_runner"):
        ((name, version),) = pins([deps[key]["package_pip"]]).items()
        assert req.get(name) == version, f"{key}: {name}=={version}, requirements.txt {req.get(name)}"
    galaxy = yaml.safe_load((REPO_ROOT / deps["galaxy"]).read_text())
    assert {c["name"] for c in galaxy["collections"]} >= {"amazon.aws", "community.aws", "community.postgresql", "ansible.posix"}


def test_ansible_builder_create_writes_the_build_context(tmp_path):
    context = tmp_path / "context"
    proc = subprocess.run(
        [str(BIN / "ansible-builder"), "create", "-f", str(EE_FILE), "--context", str(context)],
        cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    containerfile = next(p for p in (context / "Containerfile", context / "Dockerfile") if p.exists())
    text = containerfile.read_text()
    assert "quay.io/centos/centos:stream9" in text
    assert "ansible-core==2.19.14" in text and "ansible-runner==2.4.3" in text
    assert "postgresql:16" in text
    build = context / "_build"
    assert yaml.safe_load((build / "requirements.yml").read_text()) == yaml.safe_load((REPO_ROOT / "requirements.yml").read_text())
    assert "psycopg2-binary==2.9.13" in (build / "requirements.txt").read_text()
    assert "postgresql [platform:rpm]" in (build / "bindep.txt").read_text()


@pytest.fixture()
def awx_stack():
    """A stack of its own: the site must not depend on (or disturb) the conftest stack's state."""
    with own_stack("awx") as stack:
        yield stack


def private_data_dir(tmp_path: Path, stack: dict) -> Path:
    """The private data dir, as AWX lays it out: project/ (the synced project), env/ (extra
    environment variables, runner settings), inventory/, artifacts/ (written by the run)."""
    pdd = tmp_path / "pdd"
    shutil.copytree(REPO_ROOT, pdd / "project", ignore=COPY_IGNORE, symlinks=True)
    (pdd / "env").mkdir()
    (pdd / "env" / "envvars").write_text(yaml.safe_dump({
        "NDIS_LOCAL_STACK_DIR": stack["dir"],
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }))
    (pdd / "env" / "settings").write_text(yaml.safe_dump({"suppress_ansible_output": True, "job_timeout": 600}))
    # AWX imports a project-sourced inventory (source path `inventories/`) with
    # `ansible-inventory --list`, keeps the variables as written (templates unrendered), and
    # hands each job an executable inventory script printing them: the same here, limited to
    # the `local` environment. `/usr/bin/env python3`, as AWX writes it: the script runs
    # wherever the job runs, on this machine or inside the execution environment.
    imported = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", "inventories", "--list", "--export", "--limit", "local"],
        cwd=pdd / "project", env=clean_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert imported.returncode == 0, imported.stderr
    inventory = json.loads(imported.stdout)
    assert inventory["local"]["hosts"] == ["ndis-chatbot-local"]
    assert "{{" in json.dumps(inventory["local"]["vars"]), "variables should stay unrendered, as AWX stores them"
    (pdd / "inventory").mkdir()
    script = pdd / "inventory" / "hosts"
    script.write_text(f"#!/usr/bin/env python3\nimport sys\nprint({json.dumps(imported.stdout)} if '--list' in sys.argv else '{{}}')\n")
    script.chmod(0o755)
    return pdd


def run_site(pdd: Path, ident: str, project: str, *runner_args: str) -> str:
    """``ansible-runner run`` of site.yml over the private data dir; asserts that the job
    succeeded, that its tasks came from the project at ``project`` (where the job sees the
    private data dir's copy), and that verify passed; returns the job's stdout."""
    proc = subprocess.run(
        [str(BIN / "ansible-runner"), "run", str(pdd), "-p", "site.yml", "--limit", "local", "--ident", ident, *runner_args],
        env=clean_env(), capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    artifacts = pdd / "artifacts" / ident
    stdout = (artifacts / "stdout").read_text() if (artifacts / "stdout").exists() else proc.stdout
    assert proc.returncode == 0, f"ansible-runner exited {proc.returncode}\n{stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert (artifacts / "status").read_text() == "successful"
    assert (artifacts / "rc").read_text() == "0"

    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    (stats,) = [e["event_data"] for e in events if e["event"] == "playbook_on_stats"]
    assert not stats["failures"] and not stats["dark"], stats
    assert stats["ok"].get("ndis-chatbot-local"), stats
    (start,) = [e["event_data"] for e in events if e["event"] == "playbook_on_start"]
    assert Path(start["playbook"]).name == "site.yml"
    task_paths = {e["event_data"]["task_path"] for e in events if e["event"] == "playbook_on_task_start"}
    assert task_paths and all(p.startswith(f"{project}/") for p in task_paths), sorted(task_paths)[:5]
    assert re.search(r"VERIFY ndis-chatbot-local: (\d+)/\1 passed", stdout), stdout[-4000:]
    return stdout


def test_site_runs_under_ansible_runner(tmp_path, awx_stack):
    pdd = private_data_dir(tmp_path, awx_stack)
    # The run used the project copy (AWX's cwd), not the repository it was copied from.
    run_site(pdd, "site", str(pdd / "project"))


def test_site_runs_in_the_execution_environment(tmp_path, awx_stack):
    """site.yml inside the image ansible-builder built from execution-environment.yml, as an
    AWX job runs in its execution environment: ansible-runner starts the container with the
    private data dir mounted at /runner. The container shares the host's network (the stack
    listens on 127.0.0.1) and sees the stack's directory, where stack.json, the admin
    password and the TLS CA live. `make ee` builds the image and runs this test."""
    image = os.environ.get("NDIS_EE_IMAGE")
    if not image:
        if os.environ.get("NDIS_EE_REQUIRED"):
            pytest.fail("NDIS_EE_REQUIRED is set but NDIS_EE_IMAGE is not")
        pytest.skip("needs the execution environment image and a Docker engine: `make ee` builds it and runs this test")
    pdd = private_data_dir(tmp_path, awx_stack)
    stdout = run_site(
        pdd, "ee", "/runner/project",
        "--process-isolation", "--process-isolation-executable", "docker", "--container-image", image,
        "--container-option=--network=host",
        "--container-volume-mount", f"{awx_stack['dir']}:{awx_stack['dir']}",
    )
    command = json.loads((pdd / "artifacts" / "ee" / "command").read_text())["command"]
    assert command[:2] == ["docker", "run"] and image in command, command
    # what the job said (shown with `pytest -s`, as docker/ee.sh runs it): the verify summary
    # and the recap
    lines = stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if "VERIFY ndis-chatbot-local:" in line)
    summary = [line.strip().strip('",') for line in lines[first:first + 12] if "PASS" in line or "VERIFY" in line]
    recap = [line for line in lines if line.startswith("ndis-chatbot-local ") and "ok=" in line]
    print(f"\n{image}: ansible-runner (docker, /runner/project) site.yml", *summary, *recap[-1:], sep="\n")
