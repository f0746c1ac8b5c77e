"""The one way tests run ansible-playbook, and read what it printed.

Every run starts from this process's environment without ANSIBLE_*, AWS_* and MOLECULE_*
(a developer's or CI's settings must not change what a test sees), then sets the project's
ansible.cfg and plain output:

- ``run_playbook("site.yml", "--check", stack=local_stack)``: a playbook of the project against
  an inventory environment (``-l local`` by default); the local inventory finds the stack through
  NDIS_LOCAL_STACK_DIR.
- ``run_playbook(path, localhost=True, stack=local_stack)``: a play written by the test, on
  localhost (``-i localhost, -c local``, this Python); a stack given puts its moto endpoint and
  keys in AWS_*, as the play has no inventory to read them from.

``env`` adds or overrides variables (``None`` removes one). Output is parsed with ``recap`` and
``changed_tasks``.

On a stack that enforces IAM (``dbops-local-stack start --enforce-iam``) every run of a project playbook
uses the user of its job (NDIS_LOCAL_IAM_JOB), which holds that job's policy alone: the job is the one
iam/policies.yml names for the playbook, the read-only job in check mode (``job_of``); ``job=`` picks
another, ``job=""`` the stack's administrator. ``iam_calls`` reads what the stack's users called.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "ndis-chatbot-local"  # the local inventory's host
FILTERED = ("ANSIBLE_", "AWS_", "MOLECULE_")


def stack_aws_env(stack: dict) -> dict[str, str]:
    """AWS_* pointing boto3 (and the amazon.aws modules) at the stack's moto."""
    aws = stack["aws"]
    return {
        "AWS_ENDPOINT_URL": aws["endpoint_url"],
        "AWS_URL": aws["endpoint_url"],  # amazon.aws modules' endpoint_url fallback
        "AWS_REGION": aws["region"],
        "AWS_DEFAULT_REGION": aws["region"],
        "AWS_ACCESS_KEY_ID": aws["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": aws["secret_access_key"],
    }


def ansible_env(stack: dict | None = None, local: bool = False, env: dict | None = None) -> dict[str, str]:
    """The environment of one ansible-playbook run (see the module docstring)."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(FILTERED)}
    run_env.update(ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    if stack is not None:
        run_env["NDIS_LOCAL_STACK_DIR"] = stack["dir"]
        # the runs' progress files (TMPDIR/ndis-*-<host>.progress) per stack: two xdist workers run the same host
        tmp = Path(stack["dir"]) / "tmp"
        tmp.mkdir(exist_ok=True)
        run_env["TMPDIR"] = str(tmp)
        if local:
            run_env.update(stack_aws_env(stack))
    for key, value in (env or {}).items():
        if value is None:
            run_env.pop(key, None)
        else:
            run_env[key] = str(value)
    return run_env


def iam_jobs() -> dict:
    """The jobs of iam/policies.yml."""
    return yaml.safe_load((REPO_ROOT / "iam" / "policies.yml").read_text())["iam_policy_jobs"]


def job_of(playbook: str | Path, args: tuple[str, ...] | list[str]) -> str:
    """The job a run of PLAYBOOK is: the read-only one in check mode, else the one that lists the playbook."""
    name = Path(playbook).name
    jobs = iam_jobs()
    if "--check" in args or "-C" in args:
        return next(job for job, entry in jobs.items() if entry.get("check_mode"))
    found = [job for job, entry in jobs.items() if name in entry.get("playbooks", [])]
    assert found, f"no job of iam/policies.yml runs {name}"
    return found[0]


def iam_calls(stack: dict, start: int = 0) -> list[dict]:
    """The IAM-enforcing stack's request log from line START on: {user, action, resource, allowed} each."""
    path = Path(stack["iam"]["request_log"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines[start:]]


def run_playbook(playbook: str | Path, *args: str, stack: dict | None = None, limit: str | None = "local",
                 localhost: bool = False, env: dict | None = None, cwd: Path = REPO_ROOT,
                 timeout: int = 600, job: str | None = None) -> subprocess.CompletedProcess:
    """Run ``ansible-playbook PLAYBOOK ARGS`` and return the completed process (output as text).

    limit: the inventory environments to run against (``-l``; None: no ``-l``).
    localhost: run the play on localhost instead of the inventory (limit is then ignored).
    job: on an IAM-enforcing stack, whose credentials (see the module docstring).
    """
    if stack is not None and stack.get("iam") and not localhost:
        job = job_of(playbook, args) if job is None else job
        env = {"NDIS_LOCAL_IAM_JOB": job or None, **(env or {})}
    if localhost:
        target = ["-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    else:
        target = ["-l", limit] if limit else []
    return subprocess.run(
        [str(BIN / "ansible-playbook"), str(playbook), *target, *args],
        cwd=cwd, env=ansible_env(stack, local=localhost, env=env), capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


def recap(output: str, host: str = HOST) -> dict[str, int]:
    """The PLAY RECAP counters of HOST: {"ok": .., "changed": .., "failed": .., ...}."""
    match = re.search(rf"^{re.escape(host)}\s+:\s+(ok=.*)", output, re.M)
    assert match, f"no PLAY RECAP for {host} in output:\n{output[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def changed_tasks(output: str) -> list[str]:
    """`role : task` names of the tasks that reported a change, in order, once each."""
    names, current = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line[6:].split("]")[0]
        elif line.startswith("changed:") and current and current not in names:
            names.append(current)
    return names
