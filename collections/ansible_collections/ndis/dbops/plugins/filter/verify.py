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


def search_settings_check(login_settings, session_settings, session_user):
    """Whether every app login gets the same pgvector settings, and the stored URL's session really has them.

    ``login_settings``: {login: {setting: value}} from the catalog (role-in-database, role, database and cluster
    settings in PostgreSQL's order); ``session_settings``: what the stored URL's session shows (pg_settings).
    Returns ``{ok, detail}``."""
    logins = dict(login_settings or {})
    session = dict(session_settings or {})
    if not logins or not session_user:
        return {"ok": False, "detail": "not checked: no session with the stored URL"}
    first = sorted(logins)[0]
    differ = sorted(k for login in logins for k in set(logins[login]) | set(logins[first])
                    if logins[login].get(k) != logins[first].get(k))
    mine = logins.get(session_user, {})
    unseen = sorted(k for k, v in mine.items() if str(session.get(k)) != str(v))
    shown = ", ".join("%s=%s" % (k, session.get(k)) for k in sorted(mine)) or "server defaults"
    if differ:
        detail = "%s differ between %s: set them for the database (pgvector_tuning_scope: database), not one role" % (
            ", ".join(sorted(set(differ))), " and ".join(sorted(logins)))
    elif unseen:
        detail = "the session of %s does not show %s as the catalog says" % (session_user, ", ".join(unseen))
    else:
        detail = "%s: %s" % (" and ".join(sorted(logins)), shown)
    return {"ok": not differ and not unseen and len(logins) >= 2, "detail": detail}


class FilterModule:
    def filters(self):
        return {"verify_line": verify_line, "search_settings_check": search_settings_check}
