"""Progress lines of long work at default verbosity: the shared format
(module_utils/progress.py), and an index build run as ansible-playbook does it (async, then
ndis.dbops.progress_wait) printing its phase, share done and elapsed time without -v.
The restore test's lines are checked where it runs (tests/test_backup_playbooks.py)."""

from __future__ import annotations

import json
import re
import time

import psycopg2

from ansible_collections.ndis.dbops.plugins.module_utils import progress
from playbook_runner import run_playbook

ROWS, DIMS = 6000, 64


def test_line_format():
    assert progress.format_line("index i", "building index: loading tuples", 4500, 10000, 12.34) == \
        "index i: building index: loading tuples, 45% (4500/10000), 12.3 s"
    assert progress.format_line("restore test x", "downloading", elapsed=0) == "restore test x: downloading, 0.0 s"
    assert progress.format_line("w", "p", 20, 10, 1) == "w: p, 100% (20/10), 1.0 s"  # estimates can overshoot


def test_progress_file_and_ticker(tmp_path):
    path = tmp_path / "p.log"
    said = []
    pf = progress.ProgressFile(str(path), also=said.append)
    answers = iter([("phase one", 1, 4), None, ("phase two", 3, 4)])
    with progress.Ticker(pf, "job", lambda: next(answers, None), interval=0.05):
        time.sleep(0.4)
    pf.line("job", "done")
    lines = path.read_text().splitlines()
    assert [re.sub(r", [\d.]+ s$", "", x) for x in lines] == ["job: phase one, 25% (1/4)", "job: phase two, 75% (3/4)", "job: done"]
    assert said == lines
    with progress.Ticker(pf, "job", lambda: 1 / 0, interval=0.01):  # a failing poll ends the ticking, not the work
        time.sleep(0.05)
    assert progress.ProgressFile(None).line("w", "p").startswith("w: p, ")  # no file: only the text


def test_index_build_prints_progress_at_default_verbosity(scratch_db, local_stack, tmp_path):
    with psycopg2.connect(scratch_db["dsn"]) as conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION vector")
        cur.execute(f"CREATE TABLE items (id bigserial PRIMARY KEY, v vector({DIMS}) NOT NULL)")
        cur.execute(f"INSERT INTO items (v) SELECT (SELECT array_agg(random()) FROM generate_series(1, {DIMS}) WHERE g > 0)::vector"
                    f" FROM generate_series(1, {ROWS}) g")
    conn.close()
    pg = local_stack["pg"]
    pfile = tmp_path / "build.progress"
    args = {"login_host": pg["host"], "login_port": int(pg["port"]), "login_user": pg["user"],
            "login_password": local_stack["admin_password"], "login_db": scratch_db["name"], "ssl_mode": "disable",
            "indexes": [{"table": "items", "column": "v", "metric": "l2", "method": "hnsw"}],
            "max_parallel_maintenance_workers": 0, "progress_file": str(pfile), "progress_interval": 0.3}
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "build", "ndis.dbops.pgvector_index": args, "async": 600, "poll": 0, "register": "job"},
        {"name": "wait", "ndis.dbops.progress_wait": {"jid": "{{ job.ansible_job_id }}", "progress_file": str(pfile),
                                                       "delay": 0.5, "label": "test"}, "register": "built"},
        {"name": "assert", "ansible.builtin.assert": {"that": ["built.changed", "built.indexes[0].action == 'create'",
                                                               "built.progress | length >= 2"]}},
    ]}]
    pb = tmp_path / "play.yml"
    pb.write_text(json.dumps(play))
    proc = run_playbook(pb, localhost=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    lines = re.findall(r"^  test \| (index items_v_hnsw_l2: .*)$", proc.stdout, re.M)
    assert lines, proc.stdout[-3000:]
    # a line per poll: phase, share done, elapsed; the last one says it is built
    assert any(re.fullmatch(r"index items_v_hnsw_l2: (building index|initializing|waiting)[^,]*(, \d+% \(\d+/\d+\))?, [\d.]+ s", x)
               for x in lines[:-1]), lines
    assert re.fullmatch(rf"index items_v_hnsw_l2: built, 100% \({ROWS}/{ROWS}\), [\d.]+ s", lines[-1]), lines
    assert local_stack["admin_password"] not in proc.stdout
