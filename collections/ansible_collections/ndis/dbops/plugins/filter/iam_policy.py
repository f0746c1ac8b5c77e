# -*- coding: utf-8 -*-
"""Render one job's IAM policy document from the description in iam/policies.yml."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: iam_policy
short_description: One job's IAM policy document from the project's description
description:
  - Turns a job of C(iam/policies.yml) into an IAM policy document. Each statement's C(resources)
    are keys of the environment's ARNs (C(iam_policy_arns), templated from its inventory), or C(*) for
    actions that name no resource; the actions are sorted, and an action named twice in a job, an unknown
    resource key or a statement without actions is an error, so the documents stay in step with the
    description.
positional: _input, arns
options:
  _input:
    description: "The job: C(statements), each with C(sid), C(actions), C(resources) and C(condition)."
    type: dict
    required: true
  arns:
    description: The environment's ARNs by key, each a string or a list of strings.
    type: dict
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.copy:
    content: "{{ iam_policy_jobs.deploy | ndis.dbops.iam_policy(iam_policy_arns) | to_nice_json(indent=2) }}\n"
    dest: iam/prod/deploy.json
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The policy document (Version 2012-10-17, one Allow statement per statement of the job).
  type: dict
"""


def iam_policy(job, arns):
    statements, seen = [], {}
    for index, statement in enumerate(job.get("statements") or []):
        sid = statement.get("sid") or f"Statement{index + 1}"
        actions = sorted(set(statement.get("actions") or []))
        if not actions:
            raise AnsibleFilterError(f"iam_policy: statement {sid} has no actions")
        for action in actions:
            if action in seen:
                raise AnsibleFilterError(f"iam_policy: {action} is in statements {seen[action]} and {sid}: keep it in one")
            seen[action] = sid
        resources = []
        for key in statement.get("resources") or ["*"]:
            if key == "*":
                resources.append("*")
                continue
            if key not in arns:
                raise AnsibleFilterError(f"iam_policy: statement {sid} names resource {key!r}, which iam_policy_arns lacks")
            value = arns[key]
            resources.extend(value if isinstance(value, list) else [value])
        rendered = {"Sid": sid, "Effect": "Allow", "Action": actions if len(actions) > 1 else actions[0],
                    "Resource": resources if len(resources) > 1 else resources[0]}
        if statement.get("condition"):
            rendered["Condition"] = statement["condition"]
        statements.append(rendered)
    if not statements:
        raise AnsibleFilterError("iam_policy: the job has no statements")
    return {"Version": "2012-10-17", "Statement": statements}


class FilterModule:
    def filters(self):
        return {"iam_policy": iam_policy}
