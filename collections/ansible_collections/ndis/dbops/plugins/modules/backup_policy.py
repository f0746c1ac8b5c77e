#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgvector-rds-ops maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_policy
short_description: Validate the database backup policy file and return it normalized
version_added: 0.1.0
description:
  - Reads the backup rules JSON file (C(configs/backup/backup.rules.json)), checks it against the
    backup rules JSON Schema and the rules a schema cannot express, and returns the normalized policy.
  - "Checks: RDS retention 7 to 35 days; backup window C(HH:MM-HH:MM) UTC of at least 30 minutes
    (may wrap midnight) that does not overlap O(maintenance_window); a 5-field cron for the logical dumps;
    an AWS Backup cron expression with 6 fields; a valid S3 bucket name; KMS key ids; no unknown keys."
  - All problems are reported at once, one per line.
  - "Read-only; never reports a change. Run it with C(connection: local) (or C(delegate_to: localhost)):
    it reads the file on the host it runs on, so pass a path the caller has resolved on the controller."
author:
  - pgvector-rds-ops maintainers
requirements:
  - jsonschema
options:
  path:
    description:
      - Path of the backup policy JSON file.
    type: path
    required: true
  maintenance_window:
    description:
      - The RDS instance's weekly maintenance window, C(ddd:HH:MM-ddd:HH:MM) in UTC, for example C(sun:17:00-sun:17:30).
      - When given, the daily backup window must not intersect it on any day.
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Validate the backup policy before changing anything
  ndis.dbops.backup_policy:
    path: "{{ backup_policy_file | default(playbook_dir ~ '/../configs/backup/backup.rules.json') }}"
    maintenance_window: "{{ rds_preferred_maintenance_window }}"
  delegate_to: localhost
  register: backup_policy

- name: Apply the retention from the policy
  ansible.builtin.debug:
    msg: "Keep automated backups {{ backup_policy.policy.rds.backup_retention_days }} days"
"""

RETURN = r"""
policy:
  description:
    - The validated policy without the C($schema) key, plus derived fields.
    - C(rds.backup_window_minutes) is the length of the backup window.
    - C(logical_dumps.s3_prefix) always ends with C(/) unless empty; C(logical_dumps.s3_uri) is C(s3://BUCKET/PREFIX).
    - C(logical_dumps.schedule_systemd) is the schedule as a systemd OnCalendar value (for example
      C(*-*-* 16:00:00 UTC)) when the cron fires at fixed times every day, else null.
  returned: success
  type: dict
  sample:
    version: 1
    rds: {backup_retention_days: 7, preferred_backup_window: "15:30-16:00", backup_window_minutes: 30}
    logical_dumps: {schedule: "0 16 * * *", schedule_systemd: "*-*-* 16:00:00 UTC", s3_uri: "s3://ndis-chatbot-db-dumps/logical/"}
errors:
  description: Every problem found, one readable message each, naming the JSON path, the value and what is expected.
  returned: failure
  type: list
  elements: str
  sample:
    - "$.rds.backup_retention_days: found 6, expected a value from 7 to 35"
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ndis.dbops.plugins.module_utils.backup_policy import (
    HAS_JSONSCHEMA,
    PolicyError,
    load_policy,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            maintenance_window=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not HAS_JSONSCHEMA:
        module.fail_json(msg=missing_required_lib("jsonschema"))
    path = module.params["path"]
    try:
        policy = load_policy(path, module.params["maintenance_window"] or None)
    except PolicyError as exc:
        module.fail_json(msg="Backup policy %s is invalid:\n%s" % (path, "\n".join(exc.errors)), errors=exc.errors)
    module.exit_json(changed=False, policy=policy)


if __name__ == "__main__":
    main()
