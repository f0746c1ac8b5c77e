# -*- coding: utf-8 -*-
"""Filters of the health summary and the rotation's schedule."""

from __future__ import annotations

import datetime

from ansible_collections.ndis.dbops.plugins.module_utils.health import line, rotation_due, stamp

DOCUMENTATION = r"""
name: health_line
short_description: One line of the health summary
description:
  - Formats a check C({name, status, detail}) as C(STATUS name detail), names padded to one column
    (the format module_utils/health.py gives every check).
positional: _input
options:
  _input:
    description: The check; status is PASS, WARN, FAIL or INFO.
    type: dict
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.debug:
    msg: "{{ health_checks | map('ndis.dbops.health_line') | list }}"
"""

RETURN = r"""
_value:
  description: The line.
  type: str
"""


def health_line(check):
    return line(check)


def rotation_schedule(stored_at, every_days, now=None):
    """Where the stored URL (written at ``stored_at``, ISO 8601) stands against a rotation every ``every_days`` days:
    ``{due_at, due, age_hours}``, due_at printed as health prints times ('' without a cadence)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    written = datetime.datetime.fromisoformat(str(stored_at).replace("Z", "+00:00")) if stored_at else None
    if written is not None and written.tzinfo is None:
        written = written.replace(tzinfo=datetime.timezone.utc)
    due = rotation_due(written, int(every_days or 0))
    return {
        "due_at": stamp(due) if due else "",
        "due": bool(due and now >= due - datetime.timedelta(hours=1)),  # a runner tick may come a little early
        "age_hours": round((now - written).total_seconds() / 3600.0, 2) if written else None,
    }


class FilterModule:
    def filters(self):
        return {"health_line": health_line, "rotation_schedule": rotation_schedule}
