#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pgvector_tune
short_description: Set hnsw.ef_search / ivfflat.probes for the application from measured recall
version_added: "0.2.0"
description:
  - The queries come from the app's query sample (O(query_sample_table), see M(ndis.dbops.pgvector_query_sample)) when
    it holds at least O(sample_min_queries) queries of the index (the newest O(max_sample_size), each measured with its
    own filter); they are never rows of the graph, so their recall is the app's. Otherwise stored rows are held out
    (each excluded from its own answers) and the figure is labelled so and lowered by O(heldout_margin), as a held-out
    row is still a node of the graph, which the search walks through, and overstates the recall of an unseen query;
    the held-out bound must then reach the target plus the margin.
  - For each declared index, samples O(sample_size) queries, computes their exact top-k in one pass over the table (binary COPY, numpy
    matrix products in batches), then measures the index's recall@k at increasing C(hnsw.ef_search)
    (40 to O(max_ef_search)) or C(ivfflat.probes) (1 to O(max_probes)) and keeps the smallest value whose
    95% lower confidence bound (bootstrap over queries) reaches O(recall_target). The sample grows, up to
    O(max_sample_size), only while the value below the chosen one is worth certifying (not yet certified, its
    estimate at least 0.01 above the target, the indifference zone); closer, the higher value is kept.
  - Stores the result with C(ALTER DATABASE ... SET) (O(scope=database)) or C(ALTER ROLE ... IN DATABASE ... SET)
    for O(tuning_role) (O(scope=role)), so new application sessions get it without code changes. With several indexes of a
    method, the largest value wins (the setting is per session, not per index).
  - When no value is certified on the sample it was judged on, the bound is set and measured on the whole sample;
    unless that figure's lower bound reaches the target, the result warns and recommends a rebuild.
  - Tables with fewer than O(min_rows) rows are skipped, and the result says so (recall cannot be measured on them).
  - The measurement's state (value, estimate, bounds, rows, the table's insert/update/delete counters and the
    index's relfilenode) is kept in the index comment (C(ndis.dbops.pgvector {json})). The measurement is repeated
    only when more than O(remeasure_share) of the rows changed since, the index was rebuilt, the counters were
    reset, the stored setting is missing or lower, k, the target, the filter or the iterative-scan settings differ,
    the queries would now come from elsewhere (the sample grew past O(sample_min_queries)), or the sampled queries
    drifted (O(drift_queries)).
  - With O(iterative_scan), also stores C(hnsw.iterative_scan) (C(ivfflat.iterative_scan) gets C(relaxed_order),
    IVFFlat has no strict order) and O(max_scan_tuples) (pgvector 0.8.0 or later). An index with a C(filter) gets
    its filtered recall measured and reported.
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
  - ndis.dbops.pgvector
  - ndis.dbops.query_sample
options:
  recall_target:
    description: Recall@k to reach.
    type: float
    default: 0.95
  k:
    description: Neighbours per query (the application's LIMIT).
    type: int
    default: 10
  sample_size:
    description: Held-out queries the measurement starts with.
    type: int
    default: 100
  max_sample_size:
    description: Most held-out queries the sample grows to while the decision is unclear.
    type: int
    default: 800
  min_rows:
    description: Fewest rows a table needs before it is tuned.
    type: int
    default: 1000
  scope:
    description: Where the setting is stored. C(none) measures and reports only.
    type: str
    default: database
    choices: [database, role, none]
  tuning_role:
    description:
      - Role whose sessions get the setting (C(ALTER ROLE tuning_role IN DATABASE ... SET)), with O(scope=role).
      - Not the session's role (no C(SET ROLE) is run); C(role) is its older name.
    type: str
    aliases: [role]
  max_ef_search:
    description: Largest C(hnsw.ef_search) tried (pgvector allows up to 1000).
    type: int
    default: 400
  max_probes:
    description: Largest C(ivfflat.probes) tried. Default the index's lists.
    type: int
  remeasure_share:
    description: Re-measure when more than this share of the measured rows was inserted, updated or deleted since.
    type: float
    default: 0.1
  iterative_scan:
    description: Iterative index scans for filtered queries (pgvector 0.8.0 or later). Omitted, not managed.
    type: str
    choices: ["off", strict_order, relaxed_order]
  max_scan_tuples:
    description: C(hnsw.max_scan_tuples), the most tuples an iterative HNSW scan visits (pgvector default 20000).
    type: int
  drift_queries:
    description:
      - Query drift. When the stored measurement was made on the app's sampled queries and at least this many
        queries were sampled since it (or since the last look), the newest O(sample_size) of them are measured at
        the stored setting; when their 95% upper bound is under the target, the index is tuned again. Otherwise the
        look is recorded in the index comment. A run with fewer new queries only counts them.
    type: int
    default: 100
notes:
  - Supports C(check_mode) (measures, which only reads, and reports what would be set) and C(diff).
  - The sample is reproducible (C(TABLESAMPLE BERNOULLI ... REPEATABLE), a seeded shuffle and bootstrap); each query
    excludes the stored row itself. The measurement runs in one REPEATABLE READ READ ONLY transaction.
  - Needs numpy on the host that runs the module.
seealso:
  - module: ndis.dbops.pgvector_index
  - module: ndis.dbops.pgvector_recall_info
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Give app_user sessions the smallest ef_search reaching recall@10 0.95
  ndis.dbops.pgvector_tune:
    login_db: ndis_chatbot
    login_user: admin
    login_password: "{{ admin_password }}"
    scope: role
    tuning_role: app_user
    recall_target: 0.95
    indexes:
      - {table: embeddings, column: embedding}
"""

RETURN = r"""
queries:
  description: Statements run, or that would run in check mode.
  returned: always
  type: list
  elements: str
  sample: ["ALTER DATABASE \"ndis_chatbot\" SET hnsw.ef_search = 100"]
settings:
  description: The values chosen, by setting name.
  returned: success
  type: dict
  sample: {"hnsw.ef_search": 100}
indexes:
  description: Per index - status (measured, kept, skipped), value, recall (estimate), lower and upper (95% bounds),
    queries, median_ms, exact_median_ms, curve ([value, recall, lower bound, ms] for each value tried), rounds,
    truth_seconds, filtered (for a filter), rows, detail.
  returned: success
  type: list
  elements: dict
skipped:
  description: Why indexes were not tuned (too few rows, index missing).
  returned: always
  type: list
  elements: str
recommendations:
  description: Rebuilds recommended where the bound could not reach the target.
  returned: always
  type: list
  elements: str
diff:
  description: The settings before and after, with C(--diff).
  returned: when diff mode is on and a setting changes
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_recall as vr
from ansible_collections.ndis.dbops.plugins.module_utils import vector_sample as vs
from ansible_collections.ndis.dbops.plugins.module_utils import vector_tune as vt


def main():
    argument_spec = dict(vi.CONNECTION_ARGS)
    argument_spec.update(
        indexes=vi.INDEX_ARGS,
        recall_target=dict(type="float", default=0.95),
        k=dict(type="int", default=10),
        sample_size=dict(type="int", default=100),
        max_sample_size=dict(type="int", default=800),
        min_rows=dict(type="int", default=1000),
        scope=dict(type="str", default="database", choices=["database", "role", "none"]),
        tuning_role=dict(type="str", aliases=["role"]),
        max_ef_search=dict(type="int", default=400),
        max_probes=dict(type="int"),
        remeasure_share=dict(type="float", default=0.1),
        iterative_scan=dict(type="str", choices=["off", "strict_order", "relaxed_order"]),
        max_scan_tuples=dict(type="int"),
        drift_queries=dict(type="int", default=100),
    )
    argument_spec.update(vs.SAMPLE_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("scope", "role", ["tuning_role"])])
    pg.fail_without_psycopg2(module)
    if not vr.HAS_NUMPY:
        module.fail_json(msg=missing_required_lib("numpy"), exception=str(vr.NUMPY_IMPORT_ERROR))
    p = module.params
    if not 0 < p["recall_target"] <= 1:
        module.fail_json(msg="recall_target must be in (0, 1], got %s" % p["recall_target"])
    if not 0 <= p["remeasure_share"] <= 1:
        module.fail_json(msg="remeasure_share must be in [0, 1] (a share of rows, 0.1 = 10%%), got %s" % p["remeasure_share"])
    if not 1 <= p["sample_size"] <= p["max_sample_size"]:
        module.fail_json(msg="sample_size (%s) must be at least 1 and at most max_sample_size (%s)" % (p["sample_size"], p["max_sample_size"]))
    if p["drift_queries"] < 1:
        module.fail_json(msg="drift_queries must be at least 1, got %s" % p["drift_queries"])
    try:
        sample_kw = vs.sample_params(p)
    except vs.SampleError as e:
        module.fail_json(msg=e.msg)
    pg.run_module(module, lambda: vt.tune(
        vi.conn_params(p), p["indexes"], recall_target=p["recall_target"], k=p["k"], sample_size=p["sample_size"],
        max_sample_size=p["max_sample_size"], min_rows=p["min_rows"], scope=p["scope"], role=p["tuning_role"],
        max_ef_search=p["max_ef_search"], max_probes=p["max_probes"], remeasure_share=p["remeasure_share"],
        iterative_scan=p["iterative_scan"], max_scan_tuples=p["max_scan_tuples"], check_mode=module.check_mode,
        drift_queries=p["drift_queries"], **sample_kw))

if __name__ == "__main__":
    main()
