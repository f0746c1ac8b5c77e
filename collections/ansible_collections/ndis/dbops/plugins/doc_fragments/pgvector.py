# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Options shared by pgvector_index, pgvector_tune and pgvector_recall_info (module_utils/vector_index.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  login_user:
    description: User to connect as (the admin; it must own the tables or be able to index them).
    type: str
    default: postgres
  login_db:
    description: Database holding the tables.
    type: str
    required: true
    aliases: [db]
  indexes:
    description:
      - The vector index declarations.
    type: list
    elements: dict
    required: true
    suboptions:
      table:
        description: Table holding the vectors.
        type: str
        required: true
      column:
        description: The C(vector) column.
        type: str
        required: true
      schema:
        description: Schema of O(indexes[].table).
        type: str
        default: public
      name:
        description: Index name. Default C(<table>_<column>_<method>_<metric>) (metric C(ip) for inner product).
        type: str
      metric:
        description: Distance the application searches with (operator C(<=>), C(<->) or C(<#>)).
        type: str
        default: cosine
        choices: [cosine, l2, inner_product]
      method:
        description:
          - C(auto) is HNSW. IVFFlat is built only on a table holding data (see O(ivfflat_min_rows)).
        type: str
        default: auto
        choices: [auto, hnsw, ivfflat]
      m:
        description: HNSW connections per layer (default 16).
        type: int
      ef_construction:
        description: HNSW candidate list size while building (default 64, at least 2 * m).
        type: int
      lists:
        description:
          - IVFFlat lists. Default rows/1000 up to 1M rows, sqrt(rows) beyond, at least 10,
            computed at build time; a computed value is not drift, a stale one is.
        type: int
      type:
        description:
          - C(halfvec) indexes a C(vector) column as the expression C(column::halfvec(N)) (half the size; up to 4000
            dimensions). C(auto) does so when the column has more than 2000 dimensions. A C(halfvec) column is
            indexed as it is.
          - The application must search the same expression - C(ORDER BY embedding::halfvec(3072) <=> $1::halfvec(3072)).
        type: str
        default: auto
        choices: [auto, vector, halfvec]
      filter:
        description:
          - An SQL predicate the application's searches use (for example C(source = 'docs')). Tuning and the
            recall check also measure filtered recall through it and how many queries got k rows.
        type: str
"""
