# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Options of the app's query sample shared by pgvector_tune, pgvector_recall_info and pg_health_info
(module_utils/vector_sample.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  query_sample_schema:
    description: Schema of the app's query sample table (M(ndis.dbops.pgvector_query_sample)).
    type: str
    default: query_sample
  query_sample_table:
    description:
      - The app's query sample table; empty - no sample, recall is measured on held-out rows.
      - Recall is measured on the index's sampled queries (never rows of the table) when the sample holds at least
        O(sample_min_queries) of them.
    type: str
    default: ""
  sample_min_queries:
    description: Fewest sampled queries of an index for recall to be measured on them rather than on held-out rows.
    type: int
    default: 100
  sample_retention_days:
    description: Sampled queries older than this many days are not used (the sample's retention).
    type: int
    default: 7
  heldout_margin:
    description:
      - Subtracted from recall measured on held-out rows (the fallback when the sample is too small), which overstate
        the recall of queries the graph has never seen; tuning then needs the held-out bound to reach the target plus
        this margin.
    type: float
    default: 0.03
"""
