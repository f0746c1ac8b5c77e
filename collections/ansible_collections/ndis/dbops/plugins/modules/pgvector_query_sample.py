#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# community.postgresql has the pieces (postgresql_schema, postgresql_table, postgresql_idx, postgresql_privs,
# postgresql_query) in five tasks, but not "the writer may only INSERT" both ways (privileges granted by hand revoked,
# predicted exactly in check mode) nor the trim's count in check mode; and the same trim runs from the scheduled job.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pgvector_query_sample
short_description: The app's query sample table, its insert-only writer and its trim
version_added: "0.3.0"
description:
  - Creates the table where the application records a sample of the query vectors it searches with (O(schema).O(table)
    with the vector, the index or table.column searched, the filter as a JSON object of column and value, and when), with an
    index on (index_name, searched_at). It holds no text.
  - O(writer) may only INSERT into it (and use the schema); any other privilege it holds there (SELECT, UPDATE, DELETE,
    TRUNCATE, REFERENCES, TRIGGER, column privileges, CREATE on the schema) is revoked.
  - Trims it - deletes the rows older than O(retention_days) and those beyond the newest O(max_per_index) per index - in
    the same transaction. The sampled vectors are personal data (embeddings of what people asked), so keep the
    retention short.
  - Check mode changes nothing and returns the statements a real run would run, with the number of rows it would trim.
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
options:
  login_user:
    description: The admin (it owns the table).
    type: str
    default: postgres
  login_db:
    description: The app's database.
    type: str
    required: true
    aliases: [db]
  schema:
    description: Schema of the table (created when missing; keep it apart from the app's own schema, whose grants
      give the app every table privilege).
    type: str
    default: query_sample
  table:
    description: The table.
    type: str
    default: vector_queries
  writer:
    description: The role that may INSERT (the app's role); empty - no role gets a privilege.
    type: str
    default: ""
  max_per_index:
    description: The newest rows kept per index (index_name).
    type: int
    default: 2000
  retention_days:
    description: Rows older than this many days (searched_at) are deleted.
    type: int
    default: 7
notes:
  - Supports C(check_mode) and C(diff).
seealso:
  - module: ndis.dbops.pgvector_tune
  - module: ndis.dbops.pgvector_recall_info
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Keep the app's query sample, insert-only for app_user, a week of it
  ndis.dbops.pgvector_query_sample:
    login_db: ndis_chatbot
    login_user: admin
    login_password: "{{ admin_password }}"
    writer: app_user
    retention_days: 7
"""

RETURN = r"""
queries:
  description: Statements run, or that would run in check mode.
  returned: always
  type: list
  elements: str
  sample: ["GRANT INSERT ON TABLE \"query_sample\".\"vector_queries\" TO \"app_user\""]
trimmed:
  description: Rows deleted by the trim (in check mode, that would be).
  returned: always
  type: int
rows:
  description: Rows the table holds after the run (before it, in check mode).
  returned: always
  type: int
writer:
  description: The role that may INSERT.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_sample as vs


def main():
    argument_spec = dict(vi.CONNECTION_ARGS)
    argument_spec.update(
        schema=dict(type="str", default=vs.DEFAULT_SCHEMA),
        table=dict(type="str", default=vs.DEFAULT_TABLE),
        writer=dict(type="str", default=""),
        max_per_index=dict(type="int", default=2000),
        retention_days=dict(type="int", default=7),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    pg.fail_without_psycopg2(module)
    p = module.params
    pg.run_module(module, lambda: vs.ensure(vi.conn_params(p), schema=p["schema"], table=p["table"], writer=p["writer"],
                                            max_per_index=p["max_per_index"], retention_days=p["retention_days"],
                                            check_mode=module.check_mode))


if __name__ == "__main__":
    main()
