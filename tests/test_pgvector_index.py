"""ndis.dbops.pgvector_index / pgvector_tune / pgvector_recall_info and their engine
(module_utils/vector_index.py) against the real embedded PostgreSQL + pgvector.

Small vector(16) tables keep it fast; the 1536-dim numbers are in bench/bench_vector.py.
"""

from __future__ import annotations

import json
import random

import psycopg2
import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_tune as vt
from ansible_collections.ndis.dbops.plugins.module_utils.vector_index import VectorIndexError
from conftest import execute
from playbook_runner import run_playbook

DIMS = 16
DECL = {"table": "items", "column": "v", "metric": "cosine"}


def clustered(n, clusters=20, seed=7, spread=0.15):
    rnd = random.Random(seed)
    centers = [[rnd.gauss(0, 1) for _ in range(DIMS)] for _ in range(clusters)]
    rows = []
    for i in range(n):
        c = centers[i % clusters]
        rows.append("[" + ",".join("%.5f" % (x + rnd.gauss(0, spread)) for x in c) + "]")
    return rows


def load(dsn, n, seed=7, clusters=20):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            args = ",".join(cur.mogrify("(%s)", (v,)).decode() for v in clustered(n, clusters=clusters, seed=seed))
            cur.execute("INSERT INTO items (v) VALUES " + args)
            cur.execute("ANALYZE items")
    finally:
        conn.close()


@pytest.fixture
def db(scratch_db):
    dsn = scratch_db["dsn"]
    execute(dsn, "CREATE EXTENSION vector", "CREATE TABLE items (id bigserial PRIMARY KEY, v vector(%d) NOT NULL)" % DIMS)
    return {"dsn": dsn, "conn": {"dsn": dsn}, "name": scratch_db["name"]}


def index_row(dsn, name):
    rows = execute(dsn, "SELECT am.amname, x.indisvalid, coalesce(c.reloptions, '{}') FROM pg_class c "
                   "JOIN pg_index x ON x.indexrelid = c.oid JOIN pg_am am ON am.oid = c.relam WHERE c.relname = %s",
                   params=(name,))
    return rows[0] if rows else None


# ------------------------------------------------------------------ indexes


def test_hnsw_on_empty_table_check_apply_repeat(db):
    decl = [dict(DECL)]
    r = vi.ensure_indexes(db["conn"], decl, check_mode=True)
    assert r["changed"] and r["queries"] == [
        'CREATE INDEX CONCURRENTLY "items_v_hnsw_cosine" ON "public"."items" USING hnsw ("v" vector_cosine_ops) '
        "WITH (m = 16, ef_construction = 64)"]
    assert index_row(db["dsn"], "items_v_hnsw_cosine") is None, "check mode built something"
    r = vi.ensure_indexes(db["conn"], decl)
    assert r["changed"] and any(q.startswith("CREATE INDEX CONCURRENTLY") for q in r["queries"])
    assert index_row(db["dsn"], "items_v_hnsw_cosine")[:2] == ("hnsw", True)
    assert r["extension"]["installed"] == "0.8.5"
    for check_mode in (True, False):
        again = vi.ensure_indexes(db["conn"], decl, check_mode=check_mode)
        assert not again["changed"] and again["queries"] == []


def test_ivfflat_is_deferred_on_an_empty_table_then_sized_from_the_rows(db):
    decl = [dict(DECL, method="ivfflat")]
    r = vi.ensure_indexes(db["conn"], decl)
    assert not r["changed"] and index_row(db["dsn"], "items_v_ivfflat_cosine") is None
    assert "deferred" in r["deferred"][0] and "0 rows" in r["deferred"][0]
    load(db["dsn"], 1500)
    r = vi.ensure_indexes(db["conn"], decl)
    assert r["changed"] and index_row(db["dsn"], "items_v_ivfflat_cosine")[2] == ["lists=10"]
    assert r["indexes"][0]["settings"]["maintenance_work_mem"] == "64MB"
    assert not vi.ensure_indexes(db["conn"], decl)["changed"]


def test_ivfflat_lists_rule():
    assert vi.ivfflat_lists(0) == 10 and vi.ivfflat_lists(50000) == 50
    assert vi.ivfflat_lists(1000000) == 1000 and vi.ivfflat_lists(4000000) == 2000


def test_build_memory_is_sized_to_the_build():
    d = vi.normalize({"table": "t", "column": "v"})
    kb = vi.build_memory_kb(d, {"m": 16, "ef_construction": 64}, 20000, 1536)
    assert 140 * 1024 < kb < 260 * 1024  # the 20k x 1536 graph (~130 MB) fits, with room


def test_invalid_index_from_a_cancelled_concurrent_build_is_rebuilt(db):
    load(db["dsn"], 300)
    blocker = psycopg2.connect(db["dsn"])
    try:
        cur = blocker.cursor()
        cur.execute("INSERT INTO items (v) VALUES (%s)", (clustered(1)[0],))  # open writer: CIC waits for it
        with pytest.raises(psycopg2.errors.QueryCanceled):
            execute(db["dsn"], "SET statement_timeout = '1s'",
                    "CREATE INDEX CONCURRENTLY items_v_hnsw_cosine ON items USING hnsw (v vector_cosine_ops)")
    finally:
        blocker.rollback()
        blocker.close()
    assert index_row(db["dsn"], "items_v_hnsw_cosine")[1] is False
    plan = vi.ensure_indexes(db["conn"], [dict(DECL)], check_mode=True)
    assert plan["indexes"][0]["action"] == "rebuild" and "INVALID" in plan["indexes"][0]["reason"]
    r = vi.ensure_indexes(db["conn"], [dict(DECL)])
    assert any("DROP INDEX CONCURRENTLY" in q for q in r["queries"])
    assert index_row(db["dsn"], "items_v_hnsw_cosine")[:2] == ("hnsw", True)
    assert not vi.ensure_indexes(db["conn"], [dict(DECL)])["changed"]


def test_drift_is_reported_and_rebuilt_only_when_allowed(db):
    load(db["dsn"], 300)
    execute(db["dsn"], "CREATE INDEX items_v_hnsw_cosine ON items USING hnsw (v vector_l2_ops) WITH (m = 8)")
    r = vi.ensure_indexes(db["conn"], [dict(DECL)])
    assert not r["changed"]
    assert "operator class vector_l2_ops, declared vector_cosine_ops" in r["problems"][0]
    assert "allow_rebuild" in r["problems"][0]
    r = vi.ensure_indexes(db["conn"], [dict(DECL)], allow_rebuild=True, check_mode=True)
    assert r["changed"] and index_row(db["dsn"], "items_v_hnsw_cosine")[2] == ["m=8"]
    r = vi.ensure_indexes(db["conn"], [dict(DECL)], allow_rebuild=True)
    assert r["changed"] and any("RENAME TO" in q for q in r["queries"])
    assert index_row(db["dsn"], "items_v_hnsw_cosine") == ("hnsw", True, ["m=16", "ef_construction=64"])
    assert not vi.ensure_indexes(db["conn"], [dict(DECL)], allow_rebuild=True)["changed"]


def test_stale_ivfflat_is_reported(db):
    load(db["dsn"], 1000)
    decl = [dict(DECL, method="ivfflat")]
    vi.ensure_indexes(db["conn"], decl)
    load(db["dsn"], 1500, seed=8)
    r = vi.ensure_indexes(db["conn"], decl)
    assert not r["changed"] and "built on 1000 rows" in r["problems"][0] and "2500" in r["problems"][0]


def test_extension_version_gate_names_versions_and_fix(db):
    with pytest.raises(VectorIndexError) as ei:
        vi.ensure_indexes(db["conn"], [dict(DECL)], min_version="99.0")
    assert "0.8.5" in ei.value.msg and "older than the required 99.0" in ei.value.msg and "ALTER EXTENSION" in ei.value.msg


def test_missing_table_is_deferred_not_failed(db):
    r = vi.ensure_indexes(db["conn"], [{"table": "nope", "column": "v"}])
    assert not r["changed"] and "does not exist yet" in r["deferred"][0]


# ------------------------------------------------------------------ recall and tuning


def test_recall_check_fails_on_ivfflat_built_empty_and_passes_on_hnsw(db):
    execute(db["dsn"], "CREATE INDEX items_v_ivfflat_cosine ON items USING ivfflat (v vector_cosine_ops) WITH (lists = 100)")
    empty = vt.recall_check(db["conn"], [dict(DECL, method="ivfflat")], min_rows=1000)
    assert empty["ok"] and empty["checks"][0]["detail"] == "skipped: fewer than 1000 rows (0)"
    load(db["dsn"], 2000, clusters=500)  # many small clusters: the untrained lists split them badly
    bad = vt.recall_check(db["conn"], [dict(DECL, method="ivfflat")], sample_size=30)
    check = bad["checks"][0]
    assert not bad["ok"] and check["status"] == "fail" and check["recall"] < 0.9, check["detail"]
    assert "built before the data" in check["cause"] and "rebuild" in check["fix"]
    execute(db["dsn"], "DROP INDEX items_v_ivfflat_cosine")
    vi.ensure_indexes(db["conn"], [dict(DECL)])
    good = vt.recall_check(db["conn"], [dict(DECL)], sample_size=30)
    assert good["ok"] and good["checks"][0]["status"] == "pass" and good["checks"][0]["recall"] >= 0.9, good


def test_tuning_skips_small_tables_then_sets_and_keeps_ef_search(db):
    vi.ensure_indexes(db["conn"], [dict(DECL)])
    small = vt.tune(db["conn"], [dict(DECL)], min_rows=1000)
    assert not small["changed"] and "fewer than 1000 rows (0)" in small["skipped"][0]
    load(db["dsn"], 1500)
    check = vt.tune(db["conn"], [dict(DECL)], recall_target=0.95, sample_size=30, check_mode=True)
    assert check["changed"] and check["queries"][0].startswith('ALTER DATABASE "%s" SET hnsw.ef_search = ' % db["name"])
    assert vt.current_setting_at(psycopg2.connect(db["dsn"]).cursor(), "database", "hnsw.ef_search") is None
    r = vt.tune(db["conn"], [dict(DECL)], recall_target=0.95, sample_size=30)
    entry = r["indexes"][0]
    assert r["changed"] and entry["status"] == "measured" and entry["recall"] >= 0.95, entry
    assert r["settings"] == {"hnsw.ef_search": entry["value"]}
    conn = psycopg2.connect(db["dsn"])  # a new session gets the database default
    with conn.cursor() as cur:
        cur.execute("SELECT '[1]'::vector")  # loads pgvector so the setting is resolved
        cur.execute("SHOW hnsw.ef_search")
        assert cur.fetchone()[0] == str(entry["value"])
    conn.close()
    for check_mode in (True, False):
        again = vt.tune(db["conn"], [dict(DECL)], recall_target=0.95, sample_size=30, check_mode=check_mode)
        assert not again["changed"] and again["indexes"][0]["status"] == "kept"


def test_tuning_at_role_level(db):
    execute(db["dsn"], "CREATE ROLE tune_app_%s" % db["name"][-6:])
    role = "tune_app_%s" % db["name"][-6:]
    try:
        vi.ensure_indexes(db["conn"], [dict(DECL)])
        load(db["dsn"], 1200)
        r = vt.tune(db["conn"], [dict(DECL)], scope="role", role=role, sample_size=20, recall_target=0.99)
        assert r["changed"] and r["queries"][0].startswith('ALTER ROLE "%s" IN DATABASE' % role)
        assert not vt.tune(db["conn"], [dict(DECL)], scope="role", role=role, sample_size=20, recall_target=0.99)["changed"]
    finally:
        execute(db["dsn"], "DROP OWNED BY %s" % role, "DROP ROLE %s" % role)


# ------------------------------------------------------------------ the modules through Ansible


def test_modules_four_steps_through_ansible(db, local_stack, tmp_path):
    pg = local_stack["pg"]
    args = {"login_host": pg["host"], "login_port": int(pg["port"]), "login_user": pg["user"],
            "login_password": local_stack["admin_password"], "login_db": db["name"], "ssl_mode": "disable",
            "indexes": [dict(DECL)]}
    play = [{
        "name": "four steps", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "check", "ndis.dbops.pgvector_index": args, "check_mode": True, "register": "s1"},
            {"name": "apply", "ndis.dbops.pgvector_index": args, "register": "s2"},
            {"name": "check again", "ndis.dbops.pgvector_index": args, "check_mode": True, "register": "s3"},
            {"name": "apply again", "ndis.dbops.pgvector_index": args, "register": "s4", "diff": True},
            {"name": "tune", "ndis.dbops.pgvector_tune": args, "register": "t1"},
            {"name": "recall", "ndis.dbops.pgvector_recall_info": args, "register": "r1"},
            {"name": "assert", "ansible.builtin.assert": {"that": [
                "s1.changed and s1.queries | length == 1",
                "s2.changed", "not s3.changed", "not s4.changed and s4.queries == []",
                "not t1.changed and 'fewer than 1000 rows' in t1.skipped[0]",
                "r1.ok and r1.checks[0].status == 'skipped' and not r1.changed",
            ]}},
        ],
    }]
    pb = tmp_path / "play.yml"
    pb.write_text(json.dumps(play))
    proc = run_playbook(pb, "-v", localhost=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert local_stack["admin_password"] not in proc.stdout
