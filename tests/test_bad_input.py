"""Bad input is refused with a message that names the problem, before anything changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from playbook_runner import run_playbook


def play(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(body)
    return run_playbook(playbook, localhost=True, timeout=120)


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
