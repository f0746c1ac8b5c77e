# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Wait for an async job and print its progress lines as they come (docs: modules/progress_wait.py).

A module's output is shown only when it returns, and async_status in an until loop prints
"FAILED - RETRYING" at default verbosity and the job's state only with -v. This action runs on
the controller: it polls the job with async_status, reads the lines the job appended to its
progress file since the last poll, and prints each one at once (Display proxies a worker's
output to the console), until the job ends; it returns the job's result.
"""

from __future__ import annotations

import os
import tempfile
import time

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("jid", "progress_file", "delay", "timeout", "label"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=dict(
            jid=dict(type="str", required=True),
            progress_file=dict(type="str", default=""),
            delay=dict(type="float", default=5.0),
            timeout=dict(type="int", default=3600),
            label=dict(type="str", default=""),
        ))
        host = (task_vars or {}).get("inventory_hostname", "")
        label = args["label"] or host
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        fd, local = tempfile.mkstemp(prefix="ndis-progress-")
        os.close(fd)
        lines, seen = [], 0
        deadline = time.monotonic() + args["timeout"]
        try:
            while True:
                status = self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                              module_args=dict(jid=args["jid"], mode="status", _async_dir=async_dir))
                if args["progress_file"]:
                    new = self._read_lines(args["progress_file"], local)[seen:]
                    seen += len(new)
                    for text in new:
                        display.display("  %s | %s" % (label, text))
                    lines.extend(new)
                if status.get("failed") and not status.get("finished") and "ansible_job_id" not in status:
                    result.update(status)
                    return result
                if status.get("finished"):
                    break
                if time.monotonic() > deadline:
                    result.update(failed=True, msg="job %s still running after %d s (timeout); it goes on in the background"
                                  % (args["jid"], args["timeout"]), progress=lines)
                    return result
                time.sleep(args["delay"])
        finally:
            os.unlink(local)
        for key in ("started", "finished", "results_file", "stdout_lines", "stderr_lines"):
            status.pop(key, None)
        status["progress"] = lines
        result.update(status)
        return result

    def _read_lines(self, path, local):
        try:
            self._connection.fetch_file(path, local)
        except (AnsibleError, OSError, IOError):
            return []  # not written yet
        with open(local) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
