# -*- coding: utf-8 -*-
"""Filter that formats the health summary."""

from __future__ import annotations

from ansible_collections.ndis.dbops.plugins.module_utils.health import line

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


class FilterModule:
    def filters(self):
        return {"health_line": health_line}
