"""ndis.dbops.pgvector_load and its engine (module_utils/vector_load.py) against the real embedded PostgreSQL +
pgvector: the deferred load (drop, COPY in batches, build once, tune, check), its refusal and the in-place load,
re-runs that skip the rows present, and loads killed in the middle of the COPY and of the build.

Small vector(16) / vector(64) tables keep it fast; the 1536-dim figures are bench/bench_load.py's.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import psycopg2
import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import vector_index as vi
from ansible_collections.ndis.dbops.plugins.module_utils import vector_load as vl
from conftest import REPO_ROOT, execute
from playbook_runner import run_playbook

DECL = {"table": "items", "column": "v", "metric": "cosine"}
NAME = "items_v_hnsw_cosine"


def write_binary(path, n, dims=16, start=0, seed=1):
    """A binary COPY file of (id bigint, v vector(dims)) rows, ids start .. start + n - 1."""
    data = np.random.default_rng(seed).standard_normal((n, dims)).astype(">f4")
    rec = struct.pack("!ihh", 4 + 4 * dims, dims, 0)
    with open(path, "wb") as f:
        f.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
        for i in range(n):
            f.write(struct.pack("!hiq", 2, 8, start + i) + rec + data[i].tobytes())
        f.write(struct.pack("!h", -1))
    return str(path)


def make_table(dsn, dims=16, key=True):
    execute(dsn, "CREATE EXTENSION IF NOT EXISTS vector",
            "CREATE TABLE items (id bigint %s, v vector(%d) NOT NULL)" % ("PRIMARY KEY" if key else "", dims))


@pytest.fixture
def db(scratch_db):
    make_table(scratch_db["dsn"])
    return {"dsn": scratch_db["dsn"], "conn": {"dsn": scratch_db["dsn"]}, "name": scratch_db["name"]}


def index_state(dsn, name=NAME):
    rows = execute(dsn, "SELECT c.oid::bigint, x.indisvalid, obj_description(c.oid, 'pg_class') FROM pg_class c"
                   " JOIN pg_index x ON x.indexrelid = c.oid WHERE c.relname = %s", params=(name,))
    return rows[0] if rows else None


def count(dsn):
    return execute(dsn, "SELECT count(*), coalesce(max(id), -1) FROM items")[0]


QUICK = dict(tune=dict(sample_size=30), check=dict(sample_size=30))


# ------------------------------------------------------------------ the deferred load


def test_check_mode_then_deferred_load_builds_once_then_a_reload_skips_every_row(db, tmp_path):
    vi.ensure_indexes(db["conn"], [dict(DECL)])
    oid = index_state(db["dsn"])[0]
    src = write_binary(tmp_path / "rows.copy", 3000)
    plan = vl.load(db["conn"], src, "items", [dict(DECL)], columns=["id", "v"], batch_rows=1000, check_mode=True)
    assert plan["changed"] and plan["dropped"] == [NAME]
    assert plan["queries"][0] == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."items_v_hnsw_cosine"'
    assert plan["queries"][1].startswith("COPY public.items (id, v) FROM %s WITH (FORMAT binary) in batches of 1000" % src)
    assert plan["queries"][2].startswith('CREATE INDEX CONCURRENTLY "items_v_hnsw_cosine"')
    assert count(db["dsn"]) == (0, -1) and index_state(db["dsn"])[0] == oid, "check mode changed something"

    progress = tmp_path / "load.progress"
    r = vl.load(db["conn"], src, "items", [dict(DECL)], columns=["id", "v"], batch_rows=1000,
                progress_file=str(progress), **QUICK)
    assert (r["rows_before"], r["rows_loaded"], r["rows_skipped"], r["batches"]) == (0, 3000, 0, 3)
    assert r["dropped"] == [NAME] and r["mode"] == "deferred"
    # built once, after the rows: a new index whose build record says it was built on all 3000 rows
    oid2, valid, comment = index_state(db["dsn"])
    assert valid and oid2 != oid and vi.read_meta(comment)["built_rows"] == 3000
    order = [q.split(" ")[0] for q in r["queries"]]
    assert order.index("DROP") < order.index("COPY") < order.index("CREATE") < order.index("ANALYZE")
    assert r["recall"]["ok"] and r["tuning"]["settings"]
    lines = progress.read_text().splitlines()
    assert lines[0].startswith("load public.items: dropping index items_v_hnsw_cosine")
    batch = [x for x in lines if "committed" in x]
    assert len(batch) == 3 and "batch 3 committed, 3000 rows (3000 loaded, 0 skipped)" in batch[-1]
    assert " rows/s, 100% of the file, " in batch[-1] and batch[-1].endswith(" s")
    assert any(x.startswith("index items_v_hnsw_cosine: built") for x in lines)

    again = vl.load(db["conn"], src, "items", [dict(DECL)], columns=["id", "v"], batch_rows=1000, tune=None, check=None)
    assert (again["rows_before"], again["rows_loaded"], again["rows_skipped"]) == (3000, 0, 3000)
    assert count(db["dsn"]) == (3000, 2999) and index_state(db["dsn"])[1]


def test_refused_above_the_live_threshold_then_in_place_or_allowed(db, tmp_path):
    vi.ensure_indexes(db["conn"], [dict(DECL)])
    vl.load(db["conn"], write_binary(tmp_path / "a.copy", 1500), "items", [dict(DECL)], columns=["id", "v"], tune=None, check=None)
    oid = index_state(db["dsn"])[0]
    more = write_binary(tmp_path / "b.copy", 500, start=1500, seed=2)
    for check_mode in (True, False):
        with pytest.raises(vl.VectorLoadError) as e:
            vl.load(db["conn"], more, "items", [dict(DECL)], columns=["id", "v"], max_live_rows=1000, check_mode=check_mode)
        assert "holds 1500 rows (more than max_live_rows 1000)" in e.value.msg and "exact scans" in e.value.msg
        assert "pgvector_load_in_place" in e.value.msg and "pgvector_load_allow_live" in e.value.msg
        assert e.value.details["refused"]
    assert count(db["dsn"]) == (1500, 1499) and index_state(db["dsn"])[:2] == (oid, True), "a refused load changed something"

    r = vl.load(db["conn"], more, "items", [dict(DECL)], columns=["id", "v"], max_live_rows=1000, in_place=True,
                tune=None, check=None)
    assert r["mode"] == "in_place" and r["dropped"] == [] and r["rows_loaded"] == 500
    assert index_state(db["dsn"])[:2] == (oid, True), "the in-place load touched the index"
    assert not any(q.startswith(("DROP", "CREATE")) for q in r["queries"])

    r = vl.load(db["conn"], write_binary(tmp_path / "c.copy", 100, start=2000, seed=3), "items", [dict(DECL)],
                columns=["id", "v"], max_live_rows=1000, allow_live=True, tune=None, check=None)
    assert r["dropped"] == [NAME] and r["rows_loaded"] == 100 and count(db["dsn"]) == (2100, 2099)
    assert index_state(db["dsn"])[1] and index_state(db["dsn"])[0] != oid


def test_csv_with_its_header_and_the_refusals_before_anything_changes(scratch_db, tmp_path):
    dsn, conn = scratch_db["dsn"], {"dsn": scratch_db["dsn"]}
    make_table(dsn, key=False)
    src = tmp_path / "rows.csv"
    src.write_text("id,v\n" + "".join('%d,"[%d,1,0,0,0,0,0,0,0,0,0,0,0,0,0,%d]"\n' % (i, i % 7, i) for i in range(1, 1201)))
    with pytest.raises(vl.VectorLoadError, match="no unique key made of the loaded columns"):
        vl.load(conn, str(src), "items", [dict(DECL)], fmt="csv")
    execute(dsn, "ALTER TABLE items ADD PRIMARY KEY (id)")
    with pytest.raises(vl.VectorLoadError, match="header names columns id, v, columns says v, id"):
        vl.load(conn, str(src), "items", [dict(DECL)], fmt="csv", columns=["v", "id"])
    with pytest.raises(vl.VectorLoadError, match="not in PostgreSQL's binary COPY format"):
        vl.load(conn, str(src), "items", [dict(DECL)], columns=["id", "v"])
    with pytest.raises(vl.VectorLoadError, match="does not name its columns"):
        vl.load(conn, write_binary(tmp_path / "x.copy", 10), "items", [dict(DECL)])
    with pytest.raises(vl.VectorLoadError, match="table public.nothing does not exist"):
        vl.load(conn, str(src), "nothing", [dict(DECL)], fmt="csv")
    assert execute(dsn, "SELECT count(*) FROM items")[0][0] == 0
    r = vl.load(conn, str(src), "items", [dict(DECL)], fmt="csv", batch_rows=500, tune=None, check=None)
    assert (r["rows_loaded"], r["batches"], r["key"]) == (1200, 3, ["id"])
    assert execute(dsn, "SELECT v::text FROM items WHERE id = 15")[0][0] == "[1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,15]"
    assert index_state(dsn)[1]


# ------------------------------------------------------------------ interrupted loads

RUNNER = """
import json, sys
from ansible_collections.ndis.dbops.plugins.module_utils import vector_load as vl
a = json.loads(sys.argv[1])
vl.load({"dsn": a["dsn"]}, a["src"], "items", a["decl"], columns=["id", "v"], batch_rows=a["batch"],
        build=a.get("build"), tune=None, check=None, progress_file=a["progress"], progress_interval=0.5)
"""


def start_load(dsn, src, decl, batch, progress, build=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "collections"), str(REPO_ROOT)]))
    arg = json.dumps({"dsn": dsn, "src": src, "decl": decl, "batch": batch, "progress": str(progress), "build": build})
    return subprocess.Popen([sys.executable, "-c", RUNNER, arg], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(dsn, query, what, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = execute(dsn, query)
        if rows:
            return rows[0]
        assert proc.poll() is None, "the load ended before %s: %s" % (what, proc.stdout.read().decode()[-2000:])
        time.sleep(0.05)
    raise AssertionError("no %s within %d s" % (what, timeout))


def kill_and_wait_for_backend(dsn, proc, pid):
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 20
    while execute(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %d" % pid):
        assert time.monotonic() < deadline, "backend %d outlived its killed client" % pid
        time.sleep(0.1)


def test_killed_in_the_middle_of_the_copy_leaves_the_committed_batches_and_the_next_load_finishes(db, tmp_path):
    vi.ensure_indexes(db["conn"], [dict(DECL)])
    src = write_binary(tmp_path / "rows.copy", 5000)
    # Batch 3 (ids 2000-2999) stops at id 2500 on an advisory lock this test holds: the COPY is caught in its middle.
    execute(db["dsn"], "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = 2500 THEN "
            "PERFORM pg_advisory_xact_lock_shared(4242); END IF; RETURN NEW; END $$",
            "CREATE TRIGGER hold BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION hold()")
    holder = psycopg2.connect(db["dsn"])
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(4242)")
    proc = start_load(db["dsn"], src, [dict(DECL)], 1000, tmp_path / "p")
    try:
        pid, tuples = wait_for(db["dsn"], "SELECT a.pid, p.tuples_processed FROM pg_stat_activity a JOIN pg_stat_progress_copy p"
                               " ON p.pid = a.pid WHERE a.application_name = 'pgvector_load' AND a.wait_event = 'advisory'",
                               "COPY waiting in batch 3", proc)
        assert tuples == 500  # ids 2000..2499 of batch 3 are in, uncommitted
        kill_and_wait_for_backend(db["dsn"], proc, pid)
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
    assert count(db["dsn"]) == (2000, 1999), "not exactly the two committed batches"
    assert index_state(db["dsn"]) is None  # dropped before the COPY: the declaration is the record
    assert vi.ensure_indexes(db["conn"], [dict(DECL)], check_mode=True)["indexes"][0]["action"] == "create"

    r = vl.load(db["conn"], src, "items", [dict(DECL)], columns=["id", "v"], batch_rows=1000, tune=None, check=None)
    assert (r["rows_before"], r["rows_loaded"], r["rows_skipped"], r["dropped"]) == (2000, 3000, 2000, [])
    assert count(db["dsn"]) == (5000, 4999) and index_state(db["dsn"])[1]


def test_killed_in_the_middle_of_the_build_leaves_every_row_and_the_index_phase_rebuilds_it(scratch_db, tmp_path):
    dsn, conn = scratch_db["dsn"], {"dsn": scratch_db["dsn"]}
    make_table(dsn, dims=64)
    decl = [dict(DECL, ef_construction=128)]  # a build of some seconds, so it can be caught
    vi.ensure_indexes(conn, decl)
    src = write_binary(tmp_path / "rows.copy", 10000, dims=64)
    proc = start_load(dsn, src, decl, 2500, tmp_path / "p", build={"parallel_workers": 0})
    try:
        pid, phase = wait_for(dsn, "SELECT p.pid, p.phase FROM pg_stat_progress_create_index p JOIN pg_stat_activity a"
                              " ON a.pid = p.pid WHERE a.application_name = 'pgvector_index' AND p.phase LIKE 'building index%%'"
                              " AND p.blocks_done > 0", "build in progress", proc)
        kill_and_wait_for_backend(dsn, proc, pid)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert count(dsn) == (10000, 9999)
    assert index_state(dsn)[1] is False  # the CREATE INDEX CONCURRENTLY stopped: INVALID
    r = vi.ensure_indexes(conn, decl)  # what site.yml's index phase runs
    assert r["indexes"][0]["action"] == "rebuild" and "INVALID" in r["indexes"][0]["reason"]
    assert index_state(dsn)[1]
    assert execute(dsn, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")[0][0] == 0


# ------------------------------------------------------------------ through Ansible: the role's load entry point


def test_role_load_entry_point_check_mode_then_load_prints_progress(db, local_stack, tmp_path):
    pg = local_stack["pg"]
    vi.ensure_indexes(db["conn"], [dict(DECL)])
    src = write_binary(tmp_path / "rows.copy", 1200)
    play = [{
        "name": "load", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "load", "ansible.builtin.include_role": {"name": "pgvector", "tasks_from": "load"}}],
        "vars": {"pgvector_login_host": pg["host"], "pgvector_login_port": int(pg["port"]), "pgvector_login_user": pg["user"],
                 "pgvector_login_password": local_stack["admin_password"], "pgvector_database": db["name"],
                 "pgvector_ssl_mode": "disable", "pgvector_indexes": [dict(DECL)], "pgvector_load_file": src,
                 "pgvector_load_table": "items", "pgvector_load_columns": ["id", "v"], "pgvector_load_batch_rows": 500,
                 "pgvector_build_poll_interval": 1, "pgvector_recall_sample_size": 30},
    }]
    pb = tmp_path / "play.yml"
    pb.write_text(json.dumps(play))
    check = run_playbook(pb, "--check", localhost=True, timeout=180)
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert 'DROP INDEX CONCURRENTLY IF EXISTS \\"public\\".\\"items_v_hnsw_cosine\\"' in check.stdout
    assert count(db["dsn"]) == (0, -1)
    real = run_playbook(pb, localhost=True, timeout=180)
    assert real.returncode == 0, real.stdout[-4000:] + real.stderr[-2000:]
    out = real.stdout
    assert "load public.items: batch 3 committed, 1200 rows (1200 loaded, 0 skipped)" in out  # default verbosity
    assert "1200 rows loaded, 0 skipped (key present) in 3 batches" in out and "recall@10" in out
    assert local_stack["admin_password"] not in out
    assert count(db["dsn"]) == (1200, 1199) and index_state(db["dsn"])[1]
