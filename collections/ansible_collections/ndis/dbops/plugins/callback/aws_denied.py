# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""When AWS refuses a call (AccessDenied), say which action, on what, which job policy should hold it,
and what the run had changed before it stopped."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: aws_denied
type: aggregate
short_description: Explain an AWS AccessDenied in terms of the project's job policies
description:
  - After a task fails because AWS refused a call (AccessDenied, AccessDeniedException,
    UnauthorizedOperation, AuthorizationError; also in the output of a command such as the dump tool),
    prints one block naming the IAM action, the resource it asked for (from AWS's answer, else the
    resource the job's policy allows the action on), the policy document of the job this run is
    (C(iam/<env>/<job>.json), rendered from C(iam/policies.yml)) and whether it holds the action, and
    the tasks that changed something before the refusal (or that nothing was changed).
  - The job is the one whose C(playbooks) in C(iam/policies.yml) list the playbook; a run in check mode
    is the read-only job. The environment is the host's C(deploy_env).
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""

import json
import os
import re

import yaml
from ansible import context
from ansible.plugins.callback import CallbackBase

from ansible_collections.ndis.dbops.plugins.module_utils.aws_denied import ACCESS_DENIED

ERROR_RE = re.compile(r"An error occurred \((%s)\) when calling the (\w+) operation: ?([^\n\"]*)" % "|".join(ACCESS_DENIED))
PERFORM_RE = re.compile(r"is not authorized to perform: ([\w-]+:[\w*]+)(?: on resource: ([^\s\"<']+?))?(?=[\s\"\\<']|$)")
PRINCIPAL_RE = re.compile(r"User: (arn:[^\s\"]+) is not authorized")
# S3 operations whose IAM action has another name (the rest are the same: s3:<Operation>)
S3_ACTIONS = {"HeadBucket": "ListBucket", "ListObjectsV2": "ListBucket", "ListObjects": "ListBucket",
              "HeadObject": "GetObject", "ListBuckets": "ListAllMyBuckets", "ListObjectVersions": "ListBucketVersions",
              "GetBucketLifecycleConfiguration": "GetLifecycleConfiguration",
              "PutBucketLifecycleConfiguration": "PutLifecycleConfiguration",
              "GetBucketAccelerateConfiguration": "GetAccelerateConfiguration",
              "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject"}


def find_denial(text):
    """(action or None, operation or None, resource or None, principal or None) of the first refusal in TEXT."""
    text = text.replace('\\"', '"')
    error = ERROR_RE.search(text)
    perform = PERFORM_RE.search(text)
    if not error and not perform:
        return None
    principal = PRINCIPAL_RE.search(text)
    return (perform.group(1) if perform else None, error.group(2) if error else None,
            perform.group(2) if perform and perform.group(2) else None, principal.group(1) if principal else None)


def policy_actions(document):
    """{action: [resources]} of a policy document."""
    out = {}
    for statement in document.get("Statement", []):
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        for action in actions if isinstance(actions, list) else [actions]:
            out.setdefault(action, []).extend(resources if isinstance(resources, list) else [resources])
    return out


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ndis.dbops.aws_denied"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._root = None
        self._playbook = ""
        self._play = None
        self._changed = {}

    def v2_playbook_on_start(self, playbook):
        path = os.path.abspath(playbook._file_name)
        self._playbook = os.path.basename(path)
        directory = os.path.dirname(path)
        self._root = os.path.dirname(directory) if os.path.basename(directory) == "playbooks" else directory

    def v2_playbook_on_play_start(self, play):
        self._play = play

    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            names = self._changed.setdefault(result._host.name, [])
            name = result._task.get_name()
            if name not in names:
                names.append(name)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        try:
            text = json.dumps(result._result, default=str)
        except (TypeError, ValueError):
            text = str(result._result)
        # a no_log task's result is censored, but its error (what the run prints) is kept
        text += " " + repr(getattr(result, "exception", None))
        denial = find_denial(text)
        if denial is None:
            return
        self._display.display("\n".join(self._explain(result, *denial)), stderr=True)

    # ------------------------------------------------------------------
    def _env(self, host):
        try:
            manager = self._play.get_variable_manager()
            return str(manager.get_vars(play=self._play, host=host).get("deploy_env") or "")
        except Exception:  # pylint: disable=broad-except
            return ""

    def _job(self):
        """(job name, its entry) of this run from iam/policies.yml."""
        try:
            with open(os.path.join(self._root, "iam", "policies.yml")) as fh:
                jobs = (yaml.safe_load(fh) or {}).get("iam_policy_jobs", {})
        except (OSError, yaml.YAMLError, TypeError):
            return None, {}
        check = bool(context.CLIARGS.get("check"))
        for name, entry in jobs.items():
            if check and entry.get("check_mode"):
                return name, entry
        for name, entry in jobs.items():
            if self._playbook in (entry.get("playbooks") or []):
                return name, entry
        return None, {}

    def _documents(self, env):
        directory = os.path.join(self._root or "", "iam", env)
        out = {}
        if env and os.path.isdir(directory):
            for name in sorted(os.listdir(directory)):
                if name.endswith(".json"):
                    try:
                        with open(os.path.join(directory, name)) as fh:
                            out[name[:-5]] = policy_actions(json.load(fh))
                    except (OSError, ValueError):
                        continue
        return out

    def _explain(self, result, action, operation, resource, principal):
        env = self._env(result._host)
        job, entry = self._job()
        documents = self._documents(env)
        if action is None and operation:
            wanted = {":" + operation, ":" + S3_ACTIONS.get(operation, operation)}
            known = sorted({a for doc in documents.values() for a in doc if any(a.endswith(w) for w in wanted)})
            action = known[0] if len(known) == 1 else (f"s3:{S3_ACTIONS[operation]}" if operation in S3_ACTIONS
                                                       else f"the action of {operation}")
        path = f"iam/{env}/{job}.json" if job and env else "iam/<env>/<job>.json"
        held = documents.get(job or "", {})
        where = "AWS's answer"
        if resource is None:
            resource = ", ".join(held.get(action) or []) or "not named by AWS's answer"
            where = f"the resource {path} allows it on; AWS's answer names none" if held.get(action) else ""
        lines = [f"AWS ACCESS DENIED: {action} was refused"
                 + (f" to {principal}" if principal else "") + f" (task: {result._task.get_name()})",
                 f"  resource: {resource}" + (f" ({where})" if where and where != "AWS's answer" else "")]
        if job is None:
            lines.append(f"  policy:   no job of iam/policies.yml runs {self._playbook}: add one, or run it with "
                         "credentials that hold the action")
        elif action in held:
            lines.append(f"  policy:   {path} (job {job}: {entry.get('description', '')}) holds {action}: the "
                         "credentials of this run do not have that document as it is now; attach it (docs/aws.md)")
        else:
            others = [name for name, doc in documents.items() if action in doc]
            lines.append(f"  policy:   {path} (job {job}) does not hold {action}"
                         + (f" ({', '.join(f'iam/{env}/{o}.json' for o in others)} does)" if others else "")
                         + ": add it to the job in iam/policies.yml and render the documents (make iam ENV="
                         + (env or "<env>") + ")")
        changed = self._changed.get(result._host.name, [])
        task = "the refused task stopped at the refused call (what it did before that call, if anything, its result above says)"
        if changed:
            lines.append(f"  changed:  before the refusal this run changed {len(changed)} task(s): " + "; ".join(changed)
                         + f"; {task}")
        else:
            lines.append(f"  changed:  nothing else: no task before it changed anything; {task}")
        return lines
