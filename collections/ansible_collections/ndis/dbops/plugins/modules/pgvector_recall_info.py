#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pgvector_recall_info
short_description: Measure the recall@k of pgvector indexes with the settings the application gets
version_added: "0.2.0"
description:
  - Read-only health check. For each declared index, reports recall@k with its 95% lower confidence bound
    for the settings the application gets (the role-in-database settings of O(tuning_role), else the database's, or
    O(settings)).
  - When the tuner's stored measurement (the index comment) still holds - the index was not rebuilt, at most
    O(remeasure_share) of the rows changed since, the same setting, k, filter and iterative-scan settings -
    its estimate and bound are reported without measuring. Otherwise queries are measured now - the app's sampled
    queries when the sample holds at least O(sample_min_queries) of the index, else held-out rows with their figure
    lowered by O(heldout_margin) and labelled so (one
    pass over the table for the exact answers; the sample doubles from O(sample_size) up to O(max_sample_size)
    while O(threshold) lies inside the interval). Nothing is stored (the session is read-only).
  - An index with a C(filter) also reports filtered recall (the planner's own plan, as the application gets it)
    and the share of queries that got k rows.
  - An index whose lower bound is below O(threshold) is reported as C(fail) with the likely cause (for example IVFFlat lists
    trained on an empty table) and the fix. A table with fewer than O(min_rows) rows is C(skipped), with
    the row count (recall cannot be measured honestly on it).
  - The session is C(default_transaction_read_only); nothing is written. O(fail_below) makes the task fail.
author:
  - ndis dbops maintainers
extends_documentation_fragment:
  - ndis.dbops.postgres
  - ndis.dbops.pgvector
  - ndis.dbops.query_sample
options:
  k:
    description: Neighbours per query.
    type: int
    default: 10
  sample_size:
    description: Held-out queries a fresh measurement starts with.
    type: int
    default: 100
  max_sample_size:
    description: Most held-out queries a fresh measurement grows to.
    type: int
    default: 800
  tuning_role:
    description:
      - The application role whose settings are measured (its role-in-database settings come first); the
        O(ndis.dbops.pgvector_tune#module:tuning_role) the tuner stored them for.
      - Not the session's role (no C(SET ROLE) is run); C(role) is its older name.
    type: str
    aliases: [role]
  remeasure_share:
    description: Measure afresh when more than this share of the rows changed since the stored measurement.
    type: float
    default: 0.1
  min_rows:
    description: Fewest rows a table needs before its recall is measured.
    type: int
    default: 1000
  threshold:
    description: Recall@k the 95% lower bound must reach for an index to pass.
    type: float
    default: 0.9
  settings:
    description: C(hnsw.ef_search) / C(ivfflat.probes) to measure with, instead of the session's defaults.
    type: dict
  fail_below:
    description: Fail the task when an index is below O(threshold) (default only report it in RV(ok)).
    type: bool
    default: false
notes:
  - Supports C(check_mode) (the same read-only measurement).
seealso:
  - module: ndis.dbops.pgvector_tune
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Check recall@10 of the embeddings index
  ndis.dbops.pgvector_recall_info:
    login_db: ndis_chatbot
    login_user: admin
    login_password: "{{ admin_password }}"
    indexes:
      - {table: embeddings, column: embedding}
  register: recall
"""

RETURN = r"""
ok:
  description: True when no index is below O(threshold) (skipped ones count as ok).
  returned: always
  type: bool
summary:
  description: One line per index.
  returned: always
  type: str
  sample: "embeddings_embedding_hnsw_cosine: recall@10 0.962 (95% lower bound 0.951) at hnsw.ef_search=100, 400 queries held out, ..."
checks:
  description: Per index - name, table, rows, status (pass, fail, skipped), recall (estimate), lower and upper
    (95% bounds), queries, source (stored or measured), median_ms, exact_median_ms, setting, filtered (with a filter -
    recall, lower, full_k_share, index_used), app_query, detail, and for a failure cause and fix.
  returned: always
  type: list
  elements: dict
version_warnings:
  description: Known defects of the installed pgvector (the version floor table) with the fix; each is also a warning.
  returned: always
  type: list
  elements: str
queries:
  description: Always empty - the check runs no statement that changes anything.
  returned: always
  type: list
  elements: str
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
        k=dict(type="int", default=10),
        sample_size=dict(type="int", default=100),
        max_sample_size=dict(type="int", default=800),
        tuning_role=dict(type="str", aliases=["role"]),
        remeasure_share=dict(type="float", default=0.1),
        min_rows=dict(type="int", default=1000),
        threshold=dict(type="float", default=0.9),
        settings=dict(type="dict"),
        fail_below=dict(type="bool", default=False),
    )
    argument_spec.update(vs.SAMPLE_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    pg.fail_without_psycopg2(module)
    if not vr.HAS_NUMPY:
        module.fail_json(msg=missing_required_lib("numpy"), exception=str(vr.NUMPY_IMPORT_ERROR))
    p = module.params
    try:
        result = vt.recall_check(vi.conn_params(p), p["indexes"], k=p["k"], sample_size=p["sample_size"],
                                 max_sample_size=p["max_sample_size"], min_rows=p["min_rows"], threshold=p["threshold"],
                                 settings=p["settings"], role=p["tuning_role"], remeasure_share=p["remeasure_share"],
                                 **vs.sample_params(p))
    except vi.VectorIndexError as e:
        pg.fail_module(module, e, ok=False, checks=[], queries=[])
    result["queries"] = []
    for w in result["version_warnings"]:
        module.warn(w)
    if p["fail_below"] and not result["ok"]:
        failed = [c for c in result["checks"] if c["status"] == "fail"]
        module.fail_json(msg="recall below %.2f: %s" % (p["threshold"], "; ".join(
            "%s: %s. Fix: %s" % (c["detail"], c.get("cause", ""), c.get("fix", "")) for c in failed)), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
