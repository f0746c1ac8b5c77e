"""Bad input is refused with a message that names the problem, before anything changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

BIN = Path(sys.executable).parent


def play(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    return subprocess.run(
        [str(BIN / "ansible-playbook"), str(playbook), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("role,required", [
    ("rds_instance", ["rds_instance_identifier"]),
    ("postgres_db", ["postgres_db_name"]),
    ("migrations", ["migrations_database", "migrations_dir", "migrations_login_host", "migrations_login_password"]),
])
def test_missing_required_variable_is_named(tmp_path, role, required):
    """The argument spec names what is missing; where a default derives from a required input
    (rds_instance_subnet_group_name from rds_instance_identifier), that input is named first."""
    proc = play(tmp_path, f"""
- hosts: localhost
  gather_facts: false
  roles:
    - {role}
""")
    assert proc.returncode != 0
    out = proc.stdout
    if len(required) == 1:
        assert f"'{required[0]}' is undefined" in out, out[-2000:]
    else:
        assert "missing required arguments: " + ", ".join(required) in out, out[-2000:]


def test_wrong_choice_is_named(tmp_path):
    proc = play(tmp_path, """
- hosts: localhost
  gather_facts: false
  roles:
    - role: migrations
      vars:
        migrations_tool: flyway
        migrations_database: db
        migrations_dir: /tmp
        migrations_login_host: 127.0.0.1
        migrations_login_password: secret-secret-secret
""")
    assert proc.returncode != 0
    assert "value of migrations_tool must be one of: sql, prisma, got: flyway" in proc.stdout, proc.stdout[-2000:]
