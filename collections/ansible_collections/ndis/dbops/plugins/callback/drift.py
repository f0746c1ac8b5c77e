# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Record which tasks report a change, as a host variable a later play can read."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: drift
type: aggregate
short_description: Keep the list of tasks that changed (or would change) per host
description:
  - After each task that reports a change, sets the host variable C(drift_changes), a list of
    entries with the keys name (role and task), task, role and play, in order. In check mode that is everything a real run would
    change, which C(playbooks/drift.yml) turns into a one-screen report and a non-zero exit.
  - Prints nothing itself.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ndis.dbops.drift"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._variable_manager = None
        self._play = ""
        self._changes = {}

    def v2_playbook_on_play_start(self, play):
        self._variable_manager = play.get_variable_manager()
        self._play = play.get_name()

    def v2_runner_on_ok(self, result):
        if not result._result.get("changed"):
            return
        task = result._task
        # the play's variable manager; tasks carry the same one
        manager = self._variable_manager or task.get_variable_manager()
        if manager is None:
            return
        role = task._role.get_name() if getattr(task, "_role", None) else ""
        host = result._host
        entries = self._changes.setdefault(host.name, [])
        name = task.get_name()  # `role : task` for a role's task
        entries.append({"name": name, "task": task.get_name(), "role": role, "play": self._play})
        manager.set_host_variable(host.name, "drift_changes", list(entries))
