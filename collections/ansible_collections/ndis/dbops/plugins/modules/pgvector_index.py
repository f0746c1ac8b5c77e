#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pgvector_index
short_description: Manage pgvector HNSW / IVFFlat indexes from declarations, with safe concurrent builds
version_added: "0.2.0"
description:
  - Checks the C(vector) extension against O(min_version) and the version floor table
    (module_utils/vector_extension.py, from pgvector's CHANGELOG and advisories), and runs
    C(ALTER EXTENSION vector UPDATE) only when O(update_extension) is set. A version with a defect worth
    stopping for fails; on 0.6.0 to 0.8.1 (CVE-2026-3172, a buffer overflow in parallel HNSW builds, fixed in
    0.8.2) builds run with C(max_parallel_maintenance_workers = 0) whatever O(max_parallel_maintenance_workers)
    says, and the result warns with the fix.
  - A declaration of O(indexes[].type=halfvec), or a C(vector) column of more than 2000 dimensions (the limit of
    HNSW and IVFFlat on C(vector)), is built as an expression index C(((column::halfvec(N)) halfvec_cosine_ops))
    (the operator class follows the metric); a C(halfvec) column is indexed as it is. RV(indexes[].app_query)
    is the query the application must write for the planner to use it.
  - For each declaration in O(indexes), finds the index by name and compares its access method,
    operator class and parameters with the declaration. A missing index is built; an INVALID one
    (left by an interrupted C(CREATE INDEX CONCURRENTLY)) is dropped and rebuilt; a different
    definition, or an IVFFlat index built on far fewer rows than the table holds now, is reported
    and rebuilt only with O(allow_rebuild) (under a temporary name, then swapped).
  - IVFFlat is never built on a table with fewer than O(ivfflat_min_rows) rows (its lists would be
    trained on nothing); the build is deferred and the result says so.
  - Builds use C(CREATE INDEX CONCURRENTLY) (writes continue) over a session with
    C(application_name=pgvector_index), C(maintenance_work_mem) sized to the build,
    C(max_parallel_maintenance_workers) and C(statement_timeout). Their progress is in
    C(pg_stat_progress_create_index); run the task with C(async) to watch it.
  - Rows at build time are kept in the index comment (C(ndis.dbops.pgvector {json})).
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
  - ndis.dbops.pgvector
options:
  min_version:
    description: Oldest acceptable pgvector version (HNSW needs 0.5.0).
    type: str
    default: "0.5.0"
  update_extension:
    description: Run C(ALTER EXTENSION vector UPDATE) when the server offers a newer version.
    type: bool
    default: false
  allow_rebuild:
    description: Rebuild indexes whose definition drifted from the declaration or whose IVFFlat lists are stale.
    type: bool
    default: false
  ivfflat_min_rows:
    description: Fewest rows an IVFFlat index is built on; below it the build is deferred.
    type: int
    default: 1000
  stale_factor:
    description: An IVFFlat index is stale when the table holds more than this many times the rows it was built on.
    type: float
    default: 2.0
  maintenance_work_mem:
    description:
      - C(maintenance_work_mem) of the build session (for example C(1GB)). Default sized to the build
        from the row count, dimensions and parameters (plus 25%), at least 64MB, capped at O(maintenance_work_mem_max).
    type: str
  maintenance_work_mem_max:
    description: Cap of the derived O(maintenance_work_mem); keep it well below the instance's memory.
    type: str
    default: 2GB
  max_parallel_maintenance_workers:
    description: Parallel workers for the build session. Default the server's setting.
    type: int
  build_timeout:
    description: C(statement_timeout) of each build, seconds (0 = none).
    type: int
    default: 3600
  progress_file:
    description:
      - File to append a progress line to every O(progress_interval) seconds while a build runs
        (phase, share done, elapsed, from C(pg_stat_progress_create_index)); with C(async) and
        ndis.dbops.progress_wait the lines are printed at default verbosity. Empty writes none.
    type: str
    default: ""
  progress_interval:
    description: Seconds between two progress lines.
    type: float
    default: 10
notes:
  - Supports C(check_mode) (reads the catalog and reports what would be created or rebuilt; builds
    nothing) and C(diff) (index definitions before and after).
seealso:
  - module: ndis.dbops.pgvector_tune
  - module: ndis.dbops.pgvector_recall_info
  - name: pgvector indexing
    description: HNSW and IVFFlat options and their trade-offs.
    link: https://github.com/pgvector/pgvector#indexing
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Keep the baseline HNSW index on embeddings
  ndis.dbops.pgvector_index:
    login_host: "{{ db_host }}"
    login_user: admin
    login_password: "{{ admin_password }}"
    login_db: ndis_chatbot
    indexes:
      - table: embeddings
        column: embedding
        metric: cosine

- name: IVFFlat sized from the data, rebuilt when stale, watched while it builds
  ndis.dbops.pgvector_index:
    login_db: ndis_chatbot
    allow_rebuild: true
    maintenance_work_mem: 1GB
    indexes:
      - {table: embeddings, column: embedding, method: ivfflat}
  async: 7200
  poll: 0
"""

RETURN = r"""
queries:
  description: Statements run, or that would run in check mode.
  returned: always
  type: list
  elements: str
  sample: ["CREATE INDEX CONCURRENTLY \"x\" ON \"public\".\"t\" USING hnsw (\"v\" vector_cosine_ops) WITH (m = 16, ef_construction = 64)"]
indexes:
  description: One entry per declaration - name, table, column, metric, method, rows, action
    (none, create, rebuild, defer, report, missing_table), reason, params, storage (vector, halfvec_expr,
    halfvec_column), app_query (the search the planner can answer with the index), current definition, build_seconds.
  returned: success
  type: list
  elements: dict
extension:
  description: Installed and available pgvector versions and the extension's schema.
  returned: success
  type: dict
  sample: {"installed": "0.8.5", "available": "0.8.5", "schema": "public"}
deferred:
  description: Declarations not built yet and why (empty IVFFlat table, table not created yet).
  returned: always
  type: list
  elements: str
problems:
  description: Drift, stale lists or undeclared vector indexes found and not acted on.
  returned: always
  type: list
  elements: str
diff:
  description: Index definitions before and after, with C(--diff).
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi


def main():
    argument_spec = dict(vi.CONNECTION_ARGS)
    argument_spec.update(
        indexes=vi.INDEX_ARGS,
        min_version=dict(type="str", default="0.5.0"),
        update_extension=dict(type="bool", default=False),
        allow_rebuild=dict(type="bool", default=False),
        ivfflat_min_rows=dict(type="int", default=1000),
        stale_factor=dict(type="float", default=2.0),
        maintenance_work_mem=dict(type="str"),
        maintenance_work_mem_max=dict(type="str", default="2GB"),
        max_parallel_maintenance_workers=dict(type="int"),
        build_timeout=dict(type="int", default=3600),
        progress_file=dict(type="str", default=""),
        progress_interval=dict(type="float", default=10),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    pg.fail_without_psycopg2(module)
    p = module.params
    pg.run_module(module, lambda: vi.ensure_indexes(
        vi.conn_params(p), p["indexes"],
        min_version=p["min_version"], update_extension=p["update_extension"], allow_rebuild=p["allow_rebuild"],
        ivfflat_min_rows=p["ivfflat_min_rows"], stale_factor=p["stale_factor"],
        maintenance_work_mem=p["maintenance_work_mem"], maintenance_work_mem_max=p["maintenance_work_mem_max"],
        parallel_workers=p["max_parallel_maintenance_workers"], build_timeout=p["build_timeout"],
        check_mode=module.check_mode, progress_file=p["progress_file"], progress_interval=p["progress_interval"],
    ))

if __name__ == "__main__":
    main()
