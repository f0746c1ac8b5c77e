#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgvector-rds-ops maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_schedule
short_description: Install the nightly dump's schedule files in one call, units checked before they land
version_added: 0.1.0
description:
  - Picks the scheduler (systemd where it is PID 1, else cron, unless O(scheduler) names one), then writes
    the files of that scheduler (all of them when O(install) is false) that differ from what is on disk,
    each atomically with its mode, creating the directories first.
  - Systemd units are checked with C(systemd-analyze verify) before any file is written, on copies in a
    scratch directory, in check mode too; a unit it refuses fails the task and nothing is written. Where
    C(systemd-analyze) is missing the check is skipped and the result says so.
  - One module call does what a stat, a directory task, four templates and a command did.
  - The caller renders the contents (C(lookup('ansible.builtin.template', ...))). A file of O(hidden_files)
    never shows its content, in the diff or anywhere else, only that it changes.
author:
  - pgvector-rds-ops maintainers
options:
  scheduler:
    description: C(systemd), C(cron), or C(auto) (systemd where C(/run/systemd/system) exists, else cron).
    type: str
    choices: [auto, systemd, cron]
    default: auto
  install:
    description:
      - True writes only the chosen scheduler's files (and the C(any) ones). False writes every file
        (rendered for review, nothing scheduled).
    type: bool
    default: true
  systemd_refusal:
    description:
      - When not empty and the chosen scheduler is systemd, fail with this text (for example, why the
        schedule has no systemd form) before anything is written.
    type: str
    default: ""
  directories:
    description: Directories to create (mode 0755) before the files are written.
    type: list
    elements: path
    default: []
  files:
    description: The files to keep.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Where the file goes.
        type: path
        required: true
      content:
        description: Its whole content.
        type: str
        required: true
      mode:
        description: Its mode, octal string.
        type: str
        default: "0644"
      scheduler:
        description: Which scheduler it belongs to; C(any) is written whatever is chosen.
        type: str
        choices: [any, systemd, cron]
        default: any
  hidden_files:
    description:
      - Files whose content may carry keys (the dump's environment file). The same suboptions as O(files);
        their content is a no_log value, kept out of the output and the diff (which says only that it changes).
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Install the schedule
  ndis.dbops.backup_schedule:
    directories: [/etc/ndis-dbops]
    files:
      - {path: /etc/systemd/system/dump.service, content: "{{ lookup('template', 'dump.service.j2') }}", scheduler: systemd}
      - {path: /etc/systemd/system/dump.timer, content: "{{ lookup('template', 'dump.timer.j2') }}", scheduler: systemd}
      - {path: /etc/cron.d/dump, content: "{{ lookup('template', 'dump.cron.j2') }}", scheduler: cron}
    hidden_files:
      - {path: /etc/ndis-dbops/dump.env, content: "PGHOST=db\n", mode: "0600"}
  register: schedule
"""

RETURN = r"""
scheduler:
  description: The scheduler chosen.
  returned: always
  type: str
  sample: systemd
changed_paths:
  description: The files written (in check mode, the files that would be).
  returned: always
  type: list
  elements: str
units_changed:
  description: Whether a systemd unit was (or would be) written, so the caller knows to reload systemd.
  returned: always
  type: bool
units_checked:
  description: C(systemd-analyze verify) passed on the units; false where it is missing or no unit is written.
  returned: always
  type: bool
"""

import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _mode_of(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


def _check_units(module, units):
    """systemd-analyze verify on copies of the units, named as they will be installed."""
    analyzer = shutil.which("systemd-analyze") or ("/usr/bin/systemd-analyze" if os.path.exists("/usr/bin/systemd-analyze") else None)
    if not analyzer or not units:
        return False
    with tempfile.TemporaryDirectory(prefix="backup-schedule-") as scratch:
        paths = []
        for spec in units:
            copy = os.path.join(scratch, os.path.basename(spec["path"]))
            with open(copy, "w") as handle:
                handle.write(spec["content"])
            paths.append(copy)
        proc = subprocess.run([analyzer, "verify", "--man=no"] + paths, capture_output=True, text=True)
    if proc.returncode != 0:
        module.fail_json(msg="systemd-analyze refuses the dump's units; nothing was written:\n%s"
                             % (proc.stderr or proc.stdout).strip().replace(scratch, os.path.dirname(units[0]["path"])))
    return True


def _file_spec(secret):
    return dict(
        path=dict(type="path", required=True),
        content=dict(type="str", required=True, no_log=secret),
        mode=dict(type="str", default="0644"),
        scheduler=dict(type="str", choices=["any", "systemd", "cron"], default="any"),
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            scheduler=dict(type="str", choices=["auto", "systemd", "cron"], default="auto"),
            install=dict(type="bool", default=True),
            systemd_refusal=dict(type="str", default=""),
            directories=dict(type="list", elements="path", default=[]),
            files=dict(type="list", elements="dict", required=True, options=_file_spec(False)),
            hidden_files=dict(type="list", elements="dict", default=[], options=_file_spec(True)),
        ),
        supports_check_mode=True,
    )
    params = module.params
    scheduler = params["scheduler"]
    if scheduler == "auto":
        scheduler = "systemd" if os.path.isdir("/run/systemd/system") else "cron"
    if scheduler == "systemd" and params["systemd_refusal"]:
        module.fail_json(msg=params["systemd_refusal"], scheduler=scheduler)

    every = [dict(spec, secret=False) for spec in params["files"]] + [dict(spec, secret=True) for spec in params["hidden_files"]]
    wanted = [spec for spec in every
              if not params["install"] or spec["scheduler"] in ("any", scheduler)]
    units = [spec for spec in wanted if spec["scheduler"] == "systemd"]
    units_checked = _check_units(module, units)

    changed_dirs = [d for d in params["directories"] if not os.path.isdir(d)]
    todo, diffs = [], []
    for spec in wanted:
        mode = int(spec["mode"], 8)
        new = spec["content"].encode()
        old = _read(spec["path"])
        content_differs, mode_differs = old != new, _mode_of(spec["path"]) != mode
        if not (content_differs or mode_differs):
            continue
        todo.append((spec, new, mode, content_differs))
        if spec["secret"]:
            before = "(content not shown)\n" if old is not None else ""
            after = "(content not shown%s)\n" % (", changed" if content_differs and old is not None else "")
        else:
            before, after = (old or b"").decode(errors="replace"), spec["content"]
        diffs.append(dict(before_header=spec["path"], after_header=spec["path"], before=before, after=after))

    changed = bool(todo or changed_dirs)
    if not module.check_mode:
        for directory in changed_dirs:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        for spec, new, mode, content_differs in todo:
            if content_differs:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(spec["path"]), prefix=".backup-schedule-")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(new)
                os.chmod(tmp, mode)
                module.atomic_move(tmp, spec["path"])
            os.chmod(spec["path"], mode)

    result = dict(changed=changed, scheduler=scheduler,
                  changed_paths=[spec["path"] for spec, _, _, _ in todo],
                  units_changed=any(spec["scheduler"] == "systemd" for spec, _, _, _ in todo),
                  units_checked=units_checked)
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
