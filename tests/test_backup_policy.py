"""Backup policy validation: configs/backup/backup.rules.json, its schema and ndis.dbops.backup_policy.

No AWS or database call: the module only reads a local file.
"""
import copy
import json
import os
from pathlib import Path

import pytest

from ansible_collections.ndis.dbops.plugins.module_utils.backup_policy import SCHEMA, PolicyError, load_policy
from playbook_runner import run_playbook

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "configs" / "backup" / "backup.rules.json"
SCHEMA_FILE = ROOT / "configs" / "backup" / "backup.rules.schema.json"
MAINTENANCE = "sun:17:00-sun:17:30"


@pytest.fixture
def good():
    return json.loads(POLICY.read_text())


def errors_for(tmp_path, doc, maintenance_window=None):
    path = tmp_path / "backup.rules.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    with pytest.raises(PolicyError) as exc:
        load_policy(str(path), maintenance_window)
    return exc.value.errors


def changed(doc, section, key, value):
    doc = copy.deepcopy(doc)
    doc[section][key] = value
    return doc


def test_shipped_policy_is_valid_and_normalized():
    policy = load_policy(str(POLICY), MAINTENANCE)
    assert "$schema" not in policy
    assert policy["rds"]["backup_retention_days"] == 7
    assert policy["rds"]["preferred_backup_window"] == "15:30-16:00"
    assert policy["rds"]["backup_window_minutes"] == 30
    assert policy["logical_dumps"]["schedule_systemd"] == "*-*-* 16:00:00 UTC"
    assert policy["logical_dumps"]["s3_uri"] == "s3://ndis-chatbot-db-dumps/logical/"


def test_schema_file_matches_the_schema_the_module_carries():
    assert json.loads(SCHEMA_FILE.read_text()) == SCHEMA


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError) as exc:
        load_policy(str(tmp_path / "nope.json"))
    (message,) = exc.value.errors
    assert str(tmp_path / "nope.json") in message
    assert "does not exist" in message and "backup_policy_file" in message


def test_not_json_names_line_and_column(tmp_path):
    text = POLICY.read_text().replace('"version": 1,', '"version": 1')
    (message,) = errors_for(tmp_path, text)
    assert message == ("Backup policy file %s is not valid JSON: line 5, column 3: Expecting ',' delimiter"
                       % (tmp_path / "backup.rules.json"))


def test_duplicate_key(tmp_path):
    text = POLICY.read_text().replace('"version": 1,', '"version": 1, "version": 1,')
    (message,) = errors_for(tmp_path, text)
    assert message.endswith("has the key 'version' twice; keep one")


@pytest.mark.parametrize("section, key, value, message", [
    ("rds", "backup_retention_days", 6, "$.rds.backup_retention_days: found 6, expected a value from 7 to 35"),
    ("rds", "backup_retention_days", 36, "$.rds.backup_retention_days: found 36, expected a value from 7 to 35"),
    ("rds", "backup_retention_days", "7", "$.rds.backup_retention_days: found '7' (string), expected integer"),
    ("rds", "copy_tags_to_snapshot", "yes",
     "$.rds.copy_tags_to_snapshot: found 'yes' (string), expected boolean"),
    ("rds", "preferred_backup_window", "3pm-4pm",
     "$.rds.preferred_backup_window: found '3pm-4pm', which does not match the expected format "
     "^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$, e.g. '15:30-16:00'"),
    ("rds", "preferred_backup_window", "25:00-25:30",
     "$.rds.preferred_backup_window: '25:00-25:30' is invalid: 25:00 is not a valid time (HH 00-23, MM 00-59)"),
    ("rds", "preferred_backup_window", "15:30-15:50",
     "$.rds.preferred_backup_window: '15:30-15:50' lasts 20 minutes, expected at least 30 minutes"),
    ("logical_dumps", "schedule", "0 16 * *",
     "$.logical_dumps.schedule: '0 16 * *' is not a valid cron expression: "
     "expected 5 fields (minute hour day-of-month month day-of-week), found 4"),
    ("logical_dumps", "schedule", "0 24 * * *",
     "$.logical_dumps.schedule: '0 24 * * *' is not a valid cron expression: hour value 24 is out of range 0-23"),
    ("logical_dumps", "schedule", "*/0 16 * * mon",
     "$.logical_dumps.schedule: '*/0 16 * * mon' is not a valid cron expression: "
     "minute step '0' must be a positive number"),
    ("logical_dumps", "format", "zip",
     "$.logical_dumps.format: found 'zip', expected one of 'custom', 'directory', 'tar', 'plain'"),
    ("aws_backup", "schedule", "cron(0 16 * * *)",
     "$.aws_backup.schedule: 'cron(0 16 * * *)' is not a valid AWS Backup schedule expression: "
     "expected 6 fields inside cron(...) (minutes hours day-of-month month day-of-week year), found 5"),
    ("aws_backup", "schedule", "cron(0 16 * * * *)",
     "$.aws_backup.schedule: 'cron(0 16 * * * *)' is not a valid AWS Backup schedule expression: "
     "exactly one of day-of-month and day-of-week must be '?'"),
    ("aws_backup", "schedule", "0 16 * * ? *",
     "$.aws_backup.schedule: '0 16 * * ? *' is not a valid AWS Backup schedule expression: "
     "expected cron(minutes hours day-of-month month day-of-week year)"),
    ("logical_dumps", "s3_bucket", "NDIS-dumps",
     "$.logical_dumps.s3_bucket: 'NDIS-dumps' is not a valid S3 bucket name: "
     "may contain only lowercase letters, digits, hyphens and dots"),
    ("logical_dumps", "s3_bucket", "ab",
     "$.logical_dumps.s3_bucket: 'ab' is not a valid S3 bucket name: must be 3 to 63 characters long (found 2)"),
    ("logical_dumps", "s3_bucket", "192.168.5.4",
     "$.logical_dumps.s3_bucket: '192.168.5.4' is not a valid S3 bucket name: must not be formatted as an IP address"),
    ("logical_dumps", "s3_bucket", "ndis..dumps",
     "$.logical_dumps.s3_bucket: 'ndis..dumps' is not a valid S3 bucket name: must not contain two adjacent dots"),
    ("logical_dumps", "s3_bucket", "xn--dumps-s3alias",
     "$.logical_dumps.s3_bucket: 'xn--dumps-s3alias' is not a valid S3 bucket name: "
     "must not start with 'xn--'; must not end with '-s3alias'"),
    ("logical_dumps", "kms_key_id", "my-key",
     "$.logical_dumps.kms_key_id: found 'my-key', which does not match the expected format "
     + SCHEMA["properties"]["logical_dumps"]["properties"]["kms_key_id"]["pattern"]
     + ", e.g. 'alias/ndis-chatbot-backups'"),
    ("aws_backup", "vault_name", "x",
     "$.aws_backup.vault_name: found 'x', which does not match the expected format "
     "^[A-Za-z0-9_-]{2,50}$, e.g. 'ndis-chatbot'"),
    ("rds", "snapshot_everything", True,
     "$.rds: unknown key 'snapshot_everything' (allowed keys: backup_retention_days, copy_tags_to_snapshot, "
     "delete_automated_backups, final_snapshot_on_delete, preferred_backup_window)"),
])
def test_malformed_policy_is_rejected_with_a_precise_message(tmp_path, good, section, key, value, message):
    assert errors_for(tmp_path, changed(good, section, key, value)) == [message]


@pytest.mark.parametrize("kms", [
    None,
    "alias/ndis-chatbot",
    "1234abcd-12ab-34cd-56ef-1234567890ab",
    "mrk-1234abcd12ab34cd56ef1234567890ab",
    "arn:aws:kms:ap-southeast-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "arn:aws:kms:ap-southeast-2:123456789012:alias/ndis-chatbot",
])
def test_kms_key_forms_are_accepted(tmp_path, good, kms):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(changed(good, "aws_backup", "kms_key_id", kms)))
    assert load_policy(str(path))["aws_backup"]["kms_key_id"] == kms


@pytest.mark.parametrize("window, cron, systemd", [
    ("23:45-00:15", "30 1,13 * * *", "*-*-* 01,13:30:00 UTC"),  # window wraps midnight
    ("15:30-16:00", "0 16 * * mon-fri", None),
    ("15:30-16:00", "*/15 2-4/2 1,15 jan-jun 7", None),
])
def test_valid_variants(tmp_path, good, window, cron, systemd):
    doc = changed(changed(good, "rds", "preferred_backup_window", window), "logical_dumps", "schedule", cron)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    policy = load_policy(str(path), MAINTENANCE)
    assert policy["logical_dumps"]["schedule_systemd"] == systemd


@pytest.mark.parametrize("maintenance, overlaps", [
    ("sun:17:00-sun:17:30", None),
    ("sun:15:45-sun:16:15", "sun"),
    ("mon:16:00-mon:16:30", None),  # touches the end of the backup window only
    ("sat:15:00-mon:00:00", "sat, sun"),
    ("sun:23:00-mon:15:31", "mon"),  # wraps the week's end
])
def test_backup_window_must_not_overlap_maintenance_window(tmp_path, good, maintenance, overlaps):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(good))
    if overlaps is None:
        load_policy(str(path), maintenance)
        return
    with pytest.raises(PolicyError) as exc:
        load_policy(str(path), maintenance)
    assert exc.value.errors == [
        "$.rds.preferred_backup_window: '15:30-16:00' overlaps the maintenance window %r (on %s); "
        "expected a window that does not intersect it" % (maintenance, overlaps)]


def test_bad_maintenance_window_is_reported(tmp_path, good):
    assert errors_for(tmp_path, good, "sunday 17:00") == [
        "maintenance window 'sunday 17:00' is invalid: expected ddd:HH:MM-ddd:HH:MM in UTC, e.g. 'sun:17:00-sun:17:30'"]


def test_all_errors_are_collected(tmp_path, good):
    doc = changed(good, "rds", "backup_retention_days", 6)
    doc = changed(doc, "logical_dumps", "schedule", "0 16 * *")
    doc = changed(doc, "logical_dumps", "s3_bucket", "Bad_Bucket")
    errors = errors_for(tmp_path, doc)
    assert len(errors) == 3
    assert [e.split(":")[0] for e in errors] == [
        "$.rds.backup_retention_days", "$.logical_dumps.schedule", "$.logical_dumps.s3_bucket"]


def test_missing_keys_and_wrong_top_level_type(tmp_path, good):
    doc = copy.deepcopy(good)
    del doc["aws_backup"], doc["rds"]["copy_tags_to_snapshot"]
    assert errors_for(tmp_path, doc) == ["$: missing required key 'aws_backup'",
                                         "$.rds: missing required key 'copy_tags_to_snapshot'"]
    assert errors_for(tmp_path, "[]") == ["$: found [] (array), expected object"]


# ---------------------------------------------------------------- through ansible-playbook

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Validate the backup policy
      ndis.dbops.backup_policy:
        path: "{{ policy_path }}"
        maintenance_window: sun:17:00-sun:17:30
      register: result
      ignore_errors: true
    - name: Save the result for the test
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ result_path }}"
"""


def run_module(tmp_path, policy_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    result_path = tmp_path / "result.json"
    # the collection alone, without the project's ansible.cfg
    proc = run_playbook(playbook, "-e", f"policy_path={policy_path}", "-e", f"result_path={result_path}",
                        localhost=True, cwd=tmp_path, timeout=300, env={
                            "ANSIBLE_CONFIG": None, "ANSIBLE_HOME": tmp_path / "ansible-home",
                            "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join([str(ROOT / "collections"), str(tmp_path / "none")])})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(result_path.read_text())


def test_module_fails_on_a_bad_policy(tmp_path, good):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(changed(changed(good, "rds", "backup_retention_days", 36),
                                      "logical_dumps", "s3_bucket", "ab")))
    stdout, result = run_module(tmp_path, bad)
    assert "FAILED!" in stdout
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"] == (
        "Backup policy %s is invalid:\n"
        "$.rds.backup_retention_days: found 36, expected a value from 7 to 35\n"
        "$.logical_dumps.s3_bucket: 'ab' is not a valid S3 bucket name: must be 3 to 63 characters long (found 2)"
        % bad)
    assert len(result["errors"]) == 2


def test_module_returns_the_policy_unchanged(tmp_path):
    stdout, result = run_module(tmp_path, POLICY)
    assert "failed=0" in stdout
    assert not result.get("failed") and result["changed"] is False
    assert result["policy"] == load_policy(str(POLICY))
