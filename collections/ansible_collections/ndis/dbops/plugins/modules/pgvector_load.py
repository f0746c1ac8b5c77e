#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pgvector_load
short_description: Load a corpus into a vector table with its declared indexes deferred, built once, tuned and checked
version_added: "0.3.0"
description:
  - Loads the rows of O(src) into O(schema).O(table) at the speed of the floor - every row COPYed into a table with
    an HNSW index pays a graph insert (100,000 x 1536 about 14.5 minutes on 2 cores, against about 2 minutes 10 s
    for COPY into the bare table and one build afterwards). So the declared vector indexes of the table (the
    O(indexes) whose table is O(table)) are dropped with C(DROP INDEX CONCURRENTLY), the rows are COPYed in batches,
    and the indexes are built once as M(ndis.dbops.pgvector_index) builds them (memory sized to the build, parallel
    workers, the version floor), then C(ANALYZE), tuning as M(ndis.dbops.pgvector_tune) (unless O(tune=false)) and
    the recall check as M(ndis.dbops.pgvector_recall_info); the module fails when that check fails.
  - Refuses when the table holds more than O(max_live_rows) rows and a valid declared index would be dropped (the
    app's searches would be exact scans until the build ends), unless O(allow_live); O(in_place) loads with the
    indexes kept instead (slower, searches keep their index).
  - Each batch of O(batch_rows) rows is committed on its own - a load stopped at any point leaves the rows of the
    committed batches, and the indexes it dropped are declared, so the next load or the next C(site.yml) run
    builds them (an INVALID one left by a stopped build is dropped and rebuilt). On a table that held rows when the
    load started (a re-run), batches go through a temporary staging table and C(INSERT ... ON CONFLICT DO NOTHING) -
    rows whose key exists are skipped. The table needs a unique key made of loaded columns, else the load is refused.
  - "Formats: C(binary), PostgreSQL's binary COPY format (the file does not name its columns: O(columns) is
    required); C(csv), a header line naming the columns, vectors in pgvector's text form, quoted
    (C(\"[0.1,0.2,...]\")). Columns not in the file take their defaults."
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
  - ndis.dbops.pgvector
options:
  src:
    description: The file of rows, on the host that runs the module.
    type: path
    required: true
  table:
    description: The table to load; its declared indexes are the O(indexes) on it.
    type: str
    required: true
  schema:
    description: Schema of O(table).
    type: str
    default: public
  format:
    description: Format of O(src).
    type: str
    default: binary
    choices: [binary, csv]
  columns:
    description:
      - The file's columns, in its order. Required with O(format=binary); with C(csv), the header line names
        them (when given, they must match it).
    type: list
    elements: str
  batch_rows:
    description: Rows per COPY batch; each batch is one transaction and one progress line.
    type: int
    default: 5000
  max_live_rows:
    description: Most rows the table may hold for its indexes to be dropped without O(allow_live).
    type: int
    default: 10000
  allow_live:
    description: Drop the indexes of a table holding more than O(max_live_rows) rows (searches are exact scans meanwhile).
    type: bool
    default: false
  in_place:
    description: Keep the indexes and COPY into the indexed table (every row pays its index insert).
    type: bool
    default: false
  min_version:
    description: Oldest acceptable pgvector version.
    type: str
    default: "0.5.0"
  ivfflat_min_rows:
    description: Fewest rows an IVFFlat index is built on; below it the build is deferred.
    type: int
    default: 1000
  maintenance_work_mem:
    description: C(maintenance_work_mem) of the build session. Default sized to the build, capped at O(maintenance_work_mem_max).
    type: str
  maintenance_work_mem_max:
    description: Cap of the derived O(maintenance_work_mem).
    type: str
    default: 2GB
  max_parallel_maintenance_workers:
    description: Parallel workers of the build session. Default the server's setting.
    type: int
  build_timeout:
    description: C(statement_timeout) of each build, seconds (0 = none).
    type: int
    default: 3600
  progress_file:
    description:
      - File to append the progress lines to (one per batch - rows, rows per second, share of the file, elapsed - then
        the build's, from C(pg_stat_progress_create_index)); with C(async) and ndis.dbops.progress_wait they print
        at default verbosity. Empty writes none.
    type: str
    default: ""
  progress_interval:
    description: Seconds between two progress lines of a build.
    type: float
    default: 10
  tune:
    description: Tune the query-time defaults after the build (as ndis.dbops.pgvector_tune).
    type: bool
    default: true
  recall_target:
    description: Recall@k the query-time defaults are tuned to reach.
    type: float
    default: 0.95
  k:
    description: Neighbours per query (the application's LIMIT).
    type: int
    default: 10
  sample_size:
    description: Held-out queries a recall measurement starts with.
    type: int
    default: 100
  max_sample_size:
    description: Most held-out queries a measurement grows to.
    type: int
    default: 800
  min_rows:
    description: Fewer rows - tuning and the recall check are skipped, and say so.
    type: int
    default: 1000
  scope:
    description: Where the tuned setting is stored. C(none) measures only.
    type: str
    default: database
    choices: [database, role, none]
  tuning_role:
    description: Role whose sessions get the setting, with O(scope=role).
    type: str
  max_ef_search:
    description: Largest C(hnsw.ef_search) tried.
    type: int
    default: 400
  remeasure_share:
    description: Re-measure when more than this share of the measured rows changed since.
    type: float
    default: 0.1
  iterative_scan:
    description: Iterative index scans for filtered queries (pgvector 0.8.0 or later). Omitted, not managed.
    type: str
    choices: ["off", strict_order, relaxed_order]
  max_scan_tuples:
    description: C(hnsw.max_scan_tuples), the most tuples an iterative HNSW scan visits.
    type: int
  threshold:
    description: The recall check after the load fails when the 95% lower bound is below this.
    type: float
    default: 0.9
notes:
  - Supports C(check_mode) (reads the file's header and the catalog, and says what would be dropped, loaded and
    built; changes nothing).
  - Needs numpy on the host that runs the module (tuning and the recall check).
seealso:
  - module: ndis.dbops.pgvector_index
  - module: ndis.dbops.pgvector_tune
  - name: pgvector - index after loading
    description: "Add any indexes after loading the initial data for best performance."
    link: https://github.com/pgvector/pgvector#hnsw
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Load the corpus, building the HNSW index once afterwards
  ndis.dbops.pgvector_load:
    login_db: ndis_chatbot
    login_user: admin
    login_password: "{{ admin_password }}"
    src: /data/corpus.copy
    table: embeddings
    format: binary
    columns: [doc_id, chunk_idx, embedding]
    indexes:
      - {table: embeddings, column: embedding, metric: cosine}
    progress_file: /tmp/load.progress
  async: 7200
  poll: 0
  register: load_job
"""

RETURN = r"""
queries:
  description: Statements run, or that would run in check mode (the COPY as one line naming the file and the batches).
  returned: always
  type: list
  elements: str
mode:
  description: C(deferred) (indexes dropped, built after the rows) or C(in_place).
  returned: always
  type: str
dropped:
  description: Indexes dropped before the rows (or that would be, in check mode).
  returned: always
  type: list
  elements: str
rows_before:
  description: Rows the table held before the load.
  returned: success
  type: int
rows_loaded:
  description: Rows inserted.
  returned: always
  type: int
rows_skipped:
  description: Rows of the file whose key was in the table already (a re-run).
  returned: always
  type: int
batches:
  description: Batches committed.
  returned: always
  type: int
copy_seconds:
  description: Seconds the COPY batches took.
  returned: when rows were copied
  type: float
rows_per_second:
  description: Rows of the file read per second of COPY.
  returned: when rows were copied
  type: float
indexes:
  description: The index plans of the build (as ndis.dbops.pgvector_index returns them).
  returned: when not in check mode
  type: list
  elements: dict
build_seconds:
  description: Seconds the index builds took.
  returned: when not in check mode
  type: float
tuning:
  description: What tuning set (settings), its detail per index and recommendations.
  returned: when tuned
  type: dict
recall:
  description: The recall check after the load - ok, summary, detail per index.
  returned: when not in check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_load as vl
from ansible_collections.ndis.dbops.plugins.module_utils import vector_recall as vr


def main():
    argument_spec = dict(vi.CONNECTION_ARGS)
    argument_spec.update(vl.LOAD_ARGS)
    argument_spec.update(
        indexes=vi.INDEX_ARGS,
        min_version=dict(type="str", default="0.5.0"),
        ivfflat_min_rows=dict(type="int", default=1000),
        maintenance_work_mem=dict(type="str"),
        maintenance_work_mem_max=dict(type="str", default="2GB"),
        max_parallel_maintenance_workers=dict(type="int"),
        build_timeout=dict(type="int", default=3600),
        progress_file=dict(type="str", default=""),
        progress_interval=dict(type="float", default=10),
        tune=dict(type="bool", default=True),
        recall_target=dict(type="float", default=0.95),
        k=dict(type="int", default=10),
        sample_size=dict(type="int", default=100),
        max_sample_size=dict(type="int", default=800),
        min_rows=dict(type="int", default=1000),
        scope=dict(type="str", default="database", choices=["database", "role", "none"]),
        tuning_role=dict(type="str"),
        max_ef_search=dict(type="int", default=400),
        remeasure_share=dict(type="float", default=0.1),
        iterative_scan=dict(type="str", choices=["off", "strict_order", "relaxed_order"]),
        max_scan_tuples=dict(type="int"),
        threshold=dict(type="float", default=0.9),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("format", "binary", ["columns"]), ("scope", "role", ["tuning_role"])])
    pg.fail_without_psycopg2(module)
    if not vr.HAS_NUMPY:
        module.fail_json(msg=missing_required_lib("numpy"), exception=str(vr.NUMPY_IMPORT_ERROR))
    p = module.params
    build = dict(min_version=p["min_version"], ivfflat_min_rows=p["ivfflat_min_rows"],
                 maintenance_work_mem=p["maintenance_work_mem"], maintenance_work_mem_max=p["maintenance_work_mem_max"],
                 parallel_workers=p["max_parallel_maintenance_workers"], build_timeout=p["build_timeout"])
    common = dict(k=p["k"], sample_size=p["sample_size"], max_sample_size=p["max_sample_size"], min_rows=p["min_rows"],
                  remeasure_share=p["remeasure_share"])
    tune = dict(common, recall_target=p["recall_target"], scope=p["scope"], role=p["tuning_role"],
                max_ef_search=p["max_ef_search"], iterative_scan=p["iterative_scan"], max_scan_tuples=p["max_scan_tuples"])
    check = dict(common, threshold=p["threshold"], role=p["tuning_role"] if p["scope"] == "role" else None)
    pg.run_module(module, lambda: vl.load(
        vl.conn_params(p), p["src"], p["table"], p["indexes"], fmt=p["format"], columns=p["columns"], schema=p["schema"],
        batch_rows=p["batch_rows"], max_live_rows=p["max_live_rows"], allow_live=p["allow_live"], in_place=p["in_place"],
        check_mode=module.check_mode, build=build, tune=tune if p["tune"] else None, check=check,
        progress_file=p["progress_file"], progress_interval=p["progress_interval"],
    ))


if __name__ == "__main__":
    main()
