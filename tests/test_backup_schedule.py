"""ndis.dbops.backup_schedule: one call writes the dump's schedule files, checks the units with
the real systemd-analyze before anything lands, keeps the environment file's content out of
every output, and changes nothing in check mode or on a second run."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import stat

import pytest

SERVICE = """[Unit]
Description=dump

[Service]
Type=oneshot
ExecStart=/bin/true
"""
TIMER = """[Unit]
Description=nightly dump

[Timer]
OnCalendar=*-*-* 16:00:00 UTC

[Install]
WantedBy=timers.target
"""
ENV_SECRET = "AWS_SECRET_ACCESS_KEY=not-a-real-key-but-a-secret-one\n"


def run(args: dict, check_mode: bool = False, diff: bool = True) -> dict:
    from ansible.module_utils.testing import patch_module_args

    from ansible_collections.ndis.dbops.plugins.modules import backup_schedule

    out = io.StringIO()
    with patch_module_args(dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)), \
            contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        backup_schedule.main()
    return json.loads(out.getvalue())


def spec(tmp_path, service=SERVICE, scheduler="cron", install=False):
    return {
        "scheduler": scheduler, "install": install,
        "directories": [str(tmp_path / "conf"), str(tmp_path / "units")],
        "files": [
            {"path": str(tmp_path / "units/dump.service"), "content": service, "scheduler": "systemd"},
            {"path": str(tmp_path / "units/dump.timer"), "content": TIMER, "scheduler": "systemd"},
            {"path": str(tmp_path / "units/dump.cron"), "content": "0 16 * * * root /bin/true\n", "scheduler": "cron"},
        ],
        "hidden_files": [{"path": str(tmp_path / "conf/dump.env"), "content": ENV_SECRET, "mode": "0600"}],
    }


def test_check_then_apply_then_repeat_and_the_secret_stays_out(tmp_path):
    args = spec(tmp_path)
    checked = run(args, check_mode=True)
    assert checked["changed"] and not (tmp_path / "conf").exists(), "check mode wrote something"
    assert len(checked["changed_paths"]) == 4 and checked["units_changed"]
    applied = run(args)
    assert applied["changed"] and sorted(applied["changed_paths"]) == sorted(checked["changed_paths"])
    assert (tmp_path / "units/dump.timer").read_text() == TIMER
    assert stat.S_IMODE((tmp_path / "conf/dump.env").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "units/dump.service").stat().st_mode) == 0o644
    for result in (checked, applied):
        assert "not-a-real-key" not in json.dumps(result), "the environment file's content leaked"
    again = run(args)
    assert again["changed"] is False and again["changed_paths"] == []
    # a changed secret file is reported as changed, its content still hidden
    (tmp_path / "conf/dump.env").write_text("OTHER=1\n")
    drifted = run(args, check_mode=True)
    assert drifted["changed_paths"] == [str(tmp_path / "conf/dump.env")]
    assert drifted["diff"][0]["after"] == "(content not shown, changed)\n"
    assert "OTHER=1" not in json.dumps(drifted)
    # a mode drift alone is a change too
    run(args)
    (tmp_path / "units/dump.timer").chmod(0o600)
    assert run(args)["changed_paths"] == [str(tmp_path / "units/dump.timer")]
    assert stat.S_IMODE((tmp_path / "units/dump.timer").stat().st_mode) == 0o644


def test_installing_writes_only_the_chosen_schedulers_files(tmp_path):
    result = run(spec(tmp_path, scheduler="cron", install=True))
    assert result["scheduler"] == "cron" and not result["units_changed"]
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["dump.cron"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_a_unit_systemd_refuses_fails_before_anything_is_written(tmp_path):
    broken = SERVICE.replace("ExecStart=/bin/true", "ExecStart=relative/path/is/refused")
    result = run(spec(tmp_path, service=broken))
    assert result.get("failed") and "systemd-analyze refuses" in result["msg"], result
    assert "dump.service" in result["msg"] and str(tmp_path / "units") in result["msg"]
    assert not (tmp_path / "units").exists() and not (tmp_path / "conf").exists()
    good = run(spec(tmp_path), check_mode=True)
    assert good["units_checked"] is True


def test_systemd_refusal_names_the_fix(tmp_path):
    args = dict(spec(tmp_path, scheduler="systemd", install=True),
                systemd_refusal="the schedule does not fire at fixed times every day; set backup_policy_runner_scheduler to cron.")
    result = run(args)
    assert result.get("failed") and "backup_policy_runner_scheduler to cron" in result["msg"]
    assert not (tmp_path / "units").exists()
