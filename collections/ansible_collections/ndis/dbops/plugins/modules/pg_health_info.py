#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
# Read-only: one connection, a read-only transaction, the checks of playbooks/health.yml that
# the database answers. community.postgresql.postgresql_query would need a task per query
# and the verdicts in Jinja; here they are Python with unit tests (module_utils/health.py).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_health_info
short_description: Health checks a PostgreSQL database answers (sessions, locks, vacuum, vector indexes, slow statements)
version_added: "0.1.0"
description:
  - Connections against C(max_connections); statements running longer than O(long_running_seconds);
    sessions idle in a transaction longer than O(idle_in_transaction_seconds); sessions waiting on
    another session's lock, naming the blocking session; dead tuples and the last (auto)vacuum of
    the tables holding vector indexes; whether the app's query shape (C(ORDER BY column <op> vector
    LIMIT k)) uses each declared vector index, and its size against its table's; slow statements
    from C(pg_stat_statements) where the extension is installed.
  - With O(query_sample_table), the recall@k of each declared index on the O(sample_queries) newest queries the app
    sampled (each with its own filter; exact answers from one pass over the table), at the settings a new session of
    O(tuning_role) (else the database's) gets. FAIL when its 95% lower bound is under O(recall_threshold), naming the
    setting to raise and the value that reaches O(recall_target) on the same queries.
  - With O(replicas), each read replica, logged in to as the same role, for its replay state (paused or not), lag (time since
    its last replayed transaction while it is behind the primary's WAL; an idle primary is no lag) and the queries
    recovery conflicts cancelled there (C(pg_stat_database_conflicts)). FAIL when one does not answer, is paused or
    lags past O(replica_lag_fail_seconds).
  - Runs in a read-only transaction and changes nothing; supports check mode.
author:
  - ndis dbops maintainers
options:
  replicas:
    description: The instance's read replicas, each C(identifier), C(host) and C(port) where this role reaches it.
    type: list
    elements: dict
    default: []
  replica_lag_fail_seconds:
    description: A replica further behind FAILs (the ReplicaLag alarm's threshold).
    type: int
    default: 600
  login_user:
    description: Role to connect as (the admin sees every session).
    type: str
    default: postgres
  login_db:
    description: The app's database.
    type: str
    required: true
    aliases: [db]
  indexes:
    description: The declared vector indexes (the pgvector role's C(pgvector_indexes)), each table, column, metric and optional name, schema.
    type: list
    elements: dict
    default: []
  k:
    description: The app's LIMIT.
    type: int
    default: 10
  min_rows:
    description: Fewer rows than this and the planner is not asked whether it uses the index.
    type: int
    default: 1000
  long_running_seconds:
    description: An active statement running longer is reported.
    type: int
    default: 300
  idle_in_transaction_seconds:
    description: A session idle in a transaction longer is reported.
    type: int
    default: 60
  slow_statement_ms:
    description: A statement averaging more than this many milliseconds is reported.
    type: float
    default: 100.0
  sample_queries:
    description: The newest sampled queries recall is measured on (the cost per run is bounded by them).
    type: int
    default: 200
  recall_threshold:
    description: Recall@k on the sampled queries fails below this 95% lower bound.
    type: float
    default: 0.9
  recall_target:
    description: The recall the value named as the fix must reach on the same queries.
    type: float
    default: 0.95
  tuning_role:
    description: The app role whose role-in-database settings a new session gets (the tuner's scope role); else the database's.
    type: str
  max_ef_search:
    description: The largest C(hnsw.ef_search) tried for the fix.
    type: int
    default: 400
extends_documentation_fragment:
  - ndis.dbops.postgres
  - ndis.dbops.query_sample
"""

EXAMPLES = r"""
- name: Read the database's health
  ndis.dbops.pg_health_info:
    login_host: db.example
    login_user: admin
    login_password: "{{ admin_password }}"
    login_db: ndis_chatbot
    indexes: [{table: embeddings, column: embedding, metric: cosine}]
  register: db_health
"""

RETURN = r"""
checks:
  description: One per check - name, status (PASS, WARN, FAIL, INFO) and detail.
  returned: always
  type: list
  elements: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ndis.dbops.plugins.module_utils import health
from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_recall as vr
from ansible_collections.ndis.dbops.plugins.module_utils import vector_sample as vs
from ansible_collections.ndis.dbops.plugins.module_utils import vector_tune as vt
from ansible_collections.ndis.dbops.plugins.module_utils.postgres import pgsql, psycopg2

SESSIONS = """
SELECT pid, usename, application_name, state, left(query, 200) AS query,
       extract(epoch FROM now() - query_start)::int AS query_seconds,
       extract(epoch FROM now() - state_change)::int AS state_seconds,
       extract(epoch FROM now() - xact_start)::int AS xact_seconds
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""

BLOCKED = """
SELECT w.pid, extract(epoch FROM now() - w.state_change)::int AS blocked_seconds, left(w.query, 200) AS query,
       b.pid AS blocker_pid, b.usename AS blocker_user, b.application_name AS blocker_app, b.state AS blocker_state,
       left(b.query, 200) AS blocker_query, extract(epoch FROM now() - b.xact_start)::int AS blocker_xact_seconds
  FROM pg_stat_activity w
  CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid)
  JOIN pg_stat_activity b ON b.pid = blocker.pid
 WHERE w.wait_event_type = 'Lock'
"""


def _rows(cur, query, params=None):
    cur.execute(query, params)
    return [dict(r) for r in cur.fetchall()]


def vector_checks(cur, decl, k, min_rows):
    d = vi.normalize(decl)  # the index name and operator the pgvector role uses
    schema, table, column = d["schema"], d["table"], d["column"]
    rel = "%s.%s" % (schema, table)
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS exists", (pgsql.Identifier(schema, table).as_string(cur),))
    if not cur.fetchone()["exists"]:
        return [health.check("Vector index on %s" % rel, health.FAIL, "table %s does not exist" % rel)]
    row = _rows(cur, """
        SELECT s.n_live_tup AS live, s.n_dead_tup AS dead,
               extract(epoch FROM now() - s.last_autovacuum)::int AS last_autovacuum_seconds,
               extract(epoch FROM now() - s.last_vacuum)::int AS last_vacuum_seconds,
               pg_table_size(s.relid) AS table_bytes,
               (SELECT count(*) FROM ONLY {tbl}) AS rows
          FROM pg_stat_user_tables s WHERE s.relid = %s::regclass
    """.replace("{tbl}", pgsql.Identifier(schema, table).as_string(cur)), (pgsql.Identifier(schema, table).as_string(cur),))[0]
    row["table"] = rel
    out = [health.vacuum_check(row)]
    name = d["name"]
    got = _rows(cur, "SELECT pg_relation_size(to_regclass(%s)) AS bytes, pg_size_bytes(current_setting('shared_buffers')) AS buffers",
                (pgsql.Identifier(schema, name).as_string(cur),))[0]
    idx = got["bytes"]
    used = None
    if idx is not None and row["rows"] >= min_rows:
        op = vi.METRICS[d["metric"]][1]
        cur.execute(pgsql.SQL("SELECT {col}::text AS v FROM {tbl} WHERE {col} IS NOT NULL LIMIT 1").format(
            col=pgsql.Identifier(column), tbl=pgsql.Identifier(schema, table)))
        sample = cur.fetchone()["v"]
        cur.execute(pgsql.SQL("EXPLAIN (FORMAT JSON) SELECT * FROM {tbl} ORDER BY {col} " + op + " %s::vector LIMIT %s").format(
            col=pgsql.Identifier(column), tbl=pgsql.Identifier(schema, table)), (sample, k))
        used = _index_in_plan(cur.fetchone()["QUERY PLAN"])
    out.append(health.index_check(name, rel, used, idx, row["table_bytes"], row["rows"], min_rows, got["buffers"]))
    return out


def _index_in_plan(plan):
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("Index Name"):
                return node["Index Name"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def sample_checks(conn, p):
    """Recall on the app's newest sampled queries, per declared index (a plain cursor: the measurement reads rows as
    tuples)."""
    if not vr.HAS_NUMPY:
        return [health.check("Recall on sampled queries", health.INFO, "not measured: numpy is not installed")]
    cur = conn.cursor()
    qs = {"schema": p["query_sample_schema"], "table": p["query_sample_table"]}
    out = []
    for decl in p["indexes"]:
        try:
            r = vt.sample_recall(cur, decl, qs, k=p["k"], queries=p["sample_queries"], target=p["recall_target"],
                                 threshold=p["recall_threshold"], role=p["tuning_role"], max_ef_search=p["max_ef_search"],
                                 retention_days=p["sample_retention_days"], min_queries=p["sample_min_queries"])
        except vi.VectorIndexError as e:
            raise pg.PostgresError("recall on sampled queries: %s" % e.msg)
        if r is not None:
            out.append(health.sample_recall_check(r, p["recall_threshold"], p["recall_target"]))
    if not out:
        out.append(health.check("Recall on sampled queries", health.INFO, "no query sample table %s.%s or no valid vector "
                                "index: not measured" % (qs["schema"], qs["table"])))
    return out


def statements_check(cur, min_ms):
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS installed,"
                " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements') AS available")
    found = cur.fetchone()
    rows = None
    if found["installed"]:
        cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                    " WHERE e.extname = 'pg_stat_statements'")
        schema = cur.fetchone()["nspname"]
        cur.execute("SAVEPOINT pgss")
        try:
            rows = _rows(cur, pgsql.SQL("SELECT * FROM {} WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                                        " ORDER BY total_exec_time DESC LIMIT 50").format(
                pgsql.Identifier(schema, "pg_stat_statements")))
        except psycopg2.Error as e:
            # installed but not preloaded: "pg_stat_statements must be loaded via shared_preload_libraries"
            cur.execute("ROLLBACK TO SAVEPOINT pgss")
            return health.check("Slow statements", health.WARN, "pg_stat_statements: " + health.short(str(e).strip(), 90))
    return health.pg_stat_statements_check(found["installed"], found["available"], rows, min_ms)


REPLICA = """
SELECT pg_is_in_recovery() AS standby,
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause,
       pg_wal_lsn_diff(%s::pg_lsn, coalesce(pg_last_wal_replay_lsn(), %s::pg_lsn))::bigint AS gap_bytes,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float AS since_replay,
       (SELECT coalesce(sum(confl_tablespace + confl_lock + confl_snapshot + confl_bufferpin + confl_deadlock), 0)
          FROM pg_stat_database_conflicts WHERE datname = current_database())::bigint AS conflicts
"""


def replica_row(p, replica, primary_lsn):
    """What the replica answers about itself; behind the primary's LSN read a moment ago, it gets one second to
    catch up before the gap counts (a write that just happened is no lag)."""
    params = dict(pg.conn_params(p, p["login_db"]), host=replica["host"], port=int(replica["port"]))
    try:
        conn = pg.connect(params, application_name="pg_health_info")
    except pg.PostgresError as e:
        return {"error": e.msg}
    try:
        cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        cur.execute(REPLICA, (primary_lsn, primary_lsn))
        row = cur.fetchone()
        if (row["gap_bytes"] or 0) > 0:
            time.sleep(1)
            cur.execute(REPLICA, (primary_lsn, primary_lsn))
            row = cur.fetchone()
        return dict(row)
    except psycopg2.Error as e:
        return {"error": pg.error_text(e)}
    finally:
        conn.close()


def read_checks(conn, p):
    """The checks, read in one read-only transaction (a health check must not queue behind the lock it is looking for)."""
    checks = []
    try:
        conn.set_session(readonly=True, autocommit=False)
        cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        cur.execute("SET lock_timeout = '5s'; SET statement_timeout = '60s'")
        cur.execute("SELECT current_setting('max_connections')::int AS max,"
                    " current_setting('superuser_reserved_connections')::int AS reserved,"
                    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used")
        c = cur.fetchone()
        checks.append(health.connections_check(c["used"], c["max"], c["reserved"]))
        checks.extend(health.session_checks(_rows(cur, SESSIONS), p["long_running_seconds"], p["idle_in_transaction_seconds"]))
        checks.append(health.blocking_check(_rows(cur, BLOCKED)))
        for decl in p["indexes"]:
            try:
                checks.extend(vector_checks(cur, decl, p["k"], p["min_rows"]))
            except vi.VectorIndexError as e:
                raise pg.PostgresError("indexes: %s" % e.msg)
        if p["query_sample_table"]:
            checks.extend(sample_checks(conn, p))
        checks.append(statements_check(cur, p["slow_statement_ms"]))
        if p["replicas"]:
            cur.execute("SELECT pg_current_wal_lsn()::text AS lsn")
            primary_lsn = cur.fetchone()["lsn"]
            checks.extend(health.replica_check(r["identifier"], replica_row(p, r, primary_lsn),
                                               p["replica_lag_fail_seconds"]) for r in p["replicas"])
        conn.rollback()
    except psycopg2.Error as e:
        raise pg.PostgresError("health checks on database %s failed: %s" % (p["login_db"], pg.error_text(e)),
                               result={"checks": checks})
    finally:
        conn.close()
    return {"changed": False, "checks": checks}


def main():
    argument_spec = dict(pg.CONNECTION_ARGS)
    argument_spec.update(
        login_user=dict(type="str", default="postgres"),
        login_db=dict(type="str", required=True, aliases=["db"]),
        indexes=dict(type="list", elements="dict", default=[]),
        k=dict(type="int", default=10),
        min_rows=dict(type="int", default=1000),
        long_running_seconds=dict(type="int", default=300),
        idle_in_transaction_seconds=dict(type="int", default=60),
        slow_statement_ms=dict(type="float", default=100.0),
        sample_queries=dict(type="int", default=200),
        recall_threshold=dict(type="float", default=0.9),
        recall_target=dict(type="float", default=0.95),
        tuning_role=dict(type="str"),
        max_ef_search=dict(type="int", default=400),
        replicas=dict(type="list", elements="dict", default=[]),
        replica_lag_fail_seconds=dict(type="int", default=600),
    )
    argument_spec.update(vs.SAMPLE_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    pg.fail_without_psycopg2(module)
    p = module.params
    pg.run_module(module, lambda: read_checks(
        pg.connect(pg.conn_params(p, p["login_db"]), application_name="pg_health_info", autocommit=False), p))

if __name__ == "__main__":
    main()
