#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# Documentation of the action plugins/action/progress_wait.py, which does the work on the
# controller; this module never runs on a target.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: progress_wait
short_description: Wait for an async job and print its progress lines at default verbosity
version_added: "0.1.0"
description:
  - "Polls an async job (started with C(async) and C(poll: 0)) every O(delay) seconds and prints,
    as they come, the lines the job appended to O(progress_file) (one per poll of its own: phase,
    share done, elapsed; the format of module_utils/progress.py), then returns the job's result."
  - An action on the controller; it reads the file through the host's connection.
author:
  - ndis dbops maintainers
options:
  jid:
    description: The async job id (C(ansible_job_id) of the task that started it).
    type: str
    required: true
  progress_file:
    description: File on the host the job appends its progress lines to; empty prints none.
    type: str
    default: ""
  delay:
    description: Seconds between two polls.
    type: float
    default: 5.0
  timeout:
    description: Seconds to wait before failing (the job goes on).
    type: int
    default: 3600
  label:
    description: Prefix of the printed lines; default the host.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Start the build
  ndis.dbops.pgvector_index:
    login_db: ndis_chatbot
    indexes: [{table: embeddings, column: embedding}]
    progress_file: /tmp/build.progress
  async: 3600
  poll: 0
  register: job

- name: Wait for it, printing its progress
  ndis.dbops.progress_wait:
    jid: "{{ job.ansible_job_id }}"
    progress_file: /tmp/build.progress
"""

RETURN = r"""
progress:
  description: The progress lines printed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            jid=dict(type="str", required=True),
            progress_file=dict(type="str", default=""),
            delay=dict(type="float", default=5.0),
            timeout=dict(type="int", default=3600),
            label=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    module.fail_json(msg="ndis.dbops.progress_wait runs as an action on the controller, not as a module")


if __name__ == "__main__":
    main()
