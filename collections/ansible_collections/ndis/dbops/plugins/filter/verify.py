# -*- coding: utf-8 -*-
"""Filters that format the verify summary."""

from __future__ import annotations

DOCUMENTATION = r"""
name: verify_line
short_description: One line of the verify summary
description:
  - Formats a check C({name, ok, detail}) as C(PASS|FAIL  name  detail), names padded to one column.
positional: _input
options:
  _input:
    description: The check.
    type: dict
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.debug:
    msg: "{{ verify_checks | map('ndis.dbops.verify_line') | list }}"
"""

RETURN = r"""
_value:
  description: The line.
  type: str
"""


def verify_line(check):
    status = "PASS" if check.get("ok") in (True, "True", "true") else "FAIL"
    return f"{status}  {str(check.get('name', '')):<44} {check.get('detail', '')}".rstrip()


class FilterModule:
    def filters(self):
        return {"verify_line": verify_line}
