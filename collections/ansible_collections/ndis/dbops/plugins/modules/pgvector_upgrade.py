#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pgvector_upgrade
short_description: After an engine upgrade, rebuild vector indexes per the rule and update pgvector in every database
version_added: "0.3.0"
description:
  - RDS does not update extensions during an engine upgrade. In every database whose installed C(vector) is
    older than the version the server ships (C(pg_available_extensions.default_version)), this drops the INVALID
    leftovers of an interrupted C(REINDEX CONCURRENTLY), rebuilds with C(REINDEX INDEX CONCURRENTLY) each
    vector index the rule names (the installed version had a defect that damaged indexes of that kind and the
    shipped one fixes it; module_utils/vector_extension.py, from pgvector's CHANGELOG), then runs
    C(ALTER EXTENSION vector UPDATE).
  - The update runs last in each database and O(last) (the application's database) is visited last, so a run
    stopped anywhere leaves the installed version recording what is still owed; the next run resumes.
  - Nothing to do (every database up to date) is C(changed=false) after one read per database. Check mode lists
    the statements and steps with their downtime class. Run it with C(async) and O(progress_file) to print a
    line per poll of each rebuild.
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
options:
  login_user:
    description: User to connect as (the admin, rds_superuser on RDS).
    type: str
    default: postgres
  login_db:
    description: Database to list the others from.
    type: str
    default: postgres
    aliases: [db]
  databases:
    description: Databases to visit; empty visits every database that accepts connections.
    type: list
    elements: str
    default: []
  last:
    description: Database visited last (the application's).
    type: str
    default: ""
  rebuild:
    description: Rebuild the indexes the rule names (off only to update the extension alone, knowingly).
    type: bool
    default: true
  max_parallel_maintenance_workers:
    description: Parallel workers of a rebuild (0 on a pgvector with the parallel-build defect, whatever this says).
    type: int
  progress_file:
    description: File the rebuilds append a progress line to per poll (for ndis.dbops.progress_wait).
    type: str
    default: ""
  progress_interval:
    description: Seconds between two progress lines of a rebuild.
    type: float
    default: 5
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Update pgvector in every database after the engine upgrade
  ndis.dbops.pgvector_upgrade:
    login_host: "{{ db_host }}"
    login_user: dbadmin
    login_password: "{{ admin_password }}"
    last: ndis_chatbot
"""

RETURN = r"""
databases:
  description: One entry per database - database, installed (after the run), available, rebuild (index, table,
    method, reasons), leftovers dropped, seconds per statement.
  returned: success
  type: list
  elements: dict
queries:
  description: Statements run, or that would run in check mode, each prefixed by its database.
  returned: always
  type: list
  elements: str
steps:
  description: Each step with its downtime class and reason.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_upgrade as vu


def main():
    argument_spec = dict(pg.CONNECTION_ARGS)
    argument_spec.update(
        login_user=dict(type="str", default="postgres"),
        login_db=dict(type="str", default="postgres", aliases=["db"]),
        databases=dict(type="list", elements="str", default=[]),
        last=dict(type="str", default=""),
        rebuild=dict(type="bool", default=True),
        max_parallel_maintenance_workers=dict(type="int"),
        progress_file=dict(type="str", default=""),
        progress_interval=dict(type="float", default=5),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    pg.fail_without_psycopg2(module)
    p = module.params
    pg.run_module(module, lambda: vu.upgrade(
        pg.conn_params(p, p["login_db"]), wanted=p["databases"], last=p["last"], rebuild=p["rebuild"],
        parallel_workers=p["max_parallel_maintenance_workers"], check_mode=module.check_mode,
        progress_file=p["progress_file"], progress_interval=p["progress_interval"],
    ), queries=[], steps=[])


if __name__ == "__main__":
    main()
