"""Engine upgrades: the pgvector CVE path rehearsed for real, resume, refusal, the rule.

The module fixture ``cve_path`` is one recording on a stack of its own (conftest.own_stack,
NDIS_TEST_UPGRADE_*), born on the PostgreSQL 16.11 build with pgvector 0.8.1 (dbops.pg_builds):
site.yml converges it (the HNSW index built with no parallel workers, verify WARNs), rows go
in (some deleted, then VACUUM: what the HNSW vacuuming defect feeds on), a dry run declares
16.14, the real run upgrades it (the local server restarts on the 16.14 build, pgvector 0.8.5)
while an app queries through the stored URL, then the same again. Each test asserts on the
recording. The other tests use the session stack and moto alone.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import engine_upgrade as eu
from ansible_collections.ndis.dbops.plugins.module_utils import vector_extension as vext
from ansible_collections.ndis.dbops.plugins.module_utils import vector_upgrade as vu
from conftest import boto3_factory, execute, make_dsn, own_stack
from playbook_runner import changed_tasks, recap, run_playbook

UPGRADE = ["-e", '{"rds_instance_engine_version": "16.14", "rds_instance_allow_outage": true}']
ROWS = 1300  # rows inserted; every 10th is deleted again: 1170 stay, above the 1000 the recall check needs
CHECKSUM = ("SELECT count(*), md5(string_agg(id::text || ':' || embedding::text, ',' ORDER BY id)) FROM embeddings")
APP_QUERY = "SELECT id FROM embeddings ORDER BY embedding <=> (SELECT embedding FROM embeddings LIMIT 1) LIMIT 10"


class App:
    """An app that queries through the whole upgrade with the stored URL, reconnecting by itself."""

    def __init__(self, url):
        self.url, self.log, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conn = None
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg2.connect(self.url, connect_timeout=2)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(APP_QUERY)
                    ok = len(cur.fetchall()) == 10
            except psycopg2.Error:
                ok = False
                if conn is not None:
                    conn.close()
                conn = None
            self.log.append((started, time.monotonic(), ok))
            time.sleep(0.05)
        if conn is not None:
            conn.close()

    def outage(self):
        """(seconds from the start of the first failed query to the end of the next good one (its connect
        included), failed queries, queries)."""
        failed = [start for start, _, ok in self.log if not ok]
        if not failed:
            return 0.0, 0, len(self.log)
        good_after = [end for start, end, ok in self.log if ok and start > failed[-1]]
        return (good_after[0] - failed[0]) if good_after else float("inf"), len(failed), len(self.log)


def manual_snapshots(rds, ident=None):
    """Manual snapshots (moto also lists the instance's automated one, rds:<instance>-<date>)."""
    found = rds.describe_db_snapshots(**({"DBInstanceIdentifier": ident} if ident else {}))["DBSnapshots"]
    return sorted(s["DBSnapshotIdentifier"] for s in found if s.get("SnapshotType") == "manual")


def state(stack, boto):
    """What the upgrade changes: engine version, snapshots, server build, extension, index, rows."""
    rds = boto("rds")
    inst = rds.describe_db_instances(DBInstanceIdentifier="ndis-chatbot-local")["DBInstances"][0]
    dsn = make_dsn(stack, "ndis_chatbot")
    return dict(
        engine=inst["EngineVersion"], status=inst["DBInstanceStatus"],
        snapshots=manual_snapshots(rds),
        server=execute(dsn, "SHOW server_version")[0][0],
        vector=execute(dsn, "SELECT extversion FROM pg_extension WHERE extname = 'vector'")[0][0],
        index=execute(dsn, "SELECT c.oid::bigint, x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
                           " WHERE c.relname = 'embeddings_embedding_hnsw_cosine'")[0],
        rows=execute(dsn, CHECKSUM)[0],
    )


@pytest.fixture(scope="module")
def cve_path():
    timings = {}
    with own_stack("upgrade", "--pg-version", "16.11") as stack:
        boto = boto3_factory(stack)
        t0 = time.monotonic()
        # verify at its end: a warning window wide enough to reach PostgreSQL 16's end of standard support
        runs = {"converge": run_playbook("site.yml", "-e", "engine_support_warn_days=1200", stack=stack, timeout=900)}
        timings["converge"] = time.monotonic() - t0
        assert runs["converge"].returncode == 0, runs["converge"].stdout[-4000:]
        dsn = make_dsn(stack, "ndis_chatbot")
        execute(dsn, "INSERT INTO embeddings (doc_id, chunk_idx, embedding) SELECT 'doc' || (i % 40), i,"
                     " (SELECT array_agg(random()::real) FROM generate_series(1, 1536) WHERE i > 0)::vector"
                     f" FROM generate_series(1, {ROWS}) i",
                "DELETE FROM embeddings WHERE chunk_idx % 10 = 0", "VACUUM embeddings")
        before = state(stack, boto)
        runs["refused"] = run_playbook("site.yml", "-e", "rds_instance_engine_version=16.10", stack=stack)
        after_refusal = state(stack, boto)
        runs["check"] = run_playbook("site.yml", "--check", *UPGRADE, stack=stack, timeout=900)
        after_check = state(stack, boto)
        url = boto("ssm").get_parameter(Name="/ndis-chatbot/local/DATABASE_URL", WithDecryption=True)["Parameter"]["Value"]
        app = App(url)
        app.thread.start()
        time.sleep(1)
        t0 = time.monotonic()
        runs["upgrade"] = run_playbook("site.yml", *UPGRADE, stack=stack, timeout=900)
        timings["upgrade"] = time.monotonic() - t0
        app.stop.set()
        app.thread.join(10)
        after = state(stack, boto)
        runs["blue_green_plan"] = run_playbook("playbooks/major_upgrade_plan.yml", "-e", '{"rds_instance_major_upgrade_method": '
                                               '"blue_green", "rds_instance_allow_major_version_upgrade": true}', stack=stack)
        t0 = time.monotonic()
        runs["repeat"] = run_playbook("site.yml", *UPGRADE, stack=stack, timeout=900)
        timings["repeat"] = time.monotonic() - t0
        print("\nCVE path timings (s): " + ", ".join("%s %.1f" % kv for kv in timings.items())
              + "; app outage %.2f s (%d failed of %d queries)" % app.outage())
        yield dict(stack=stack, runs=runs, before=before, after_refusal=after_refusal, after_check=after_check,
                   after=after, app=app)


def test_born_on_the_affected_build_and_verify_warns(cve_path):
    before, out = cve_path["before"], cve_path["runs"]["converge"].stdout
    assert (before["engine"], before["server"], before["vector"]) == ("16.11", "16.11", "0.8.1"), before
    verify = out[out.index("VERIFY ndis-chatbot-local"):]
    assert "WARN pgvector 0.8.1: CVE-2026-3172" in verify and "13/13 passed" in verify
    assert "index builds run with max_parallel_maintenance_workers = 0" in verify
    assert "postgres 16.11; WARN PostgreSQL 16 reaches its RDS end of standard support on 2029-02-28" in verify


def test_invalid_target_is_refused_before_any_change(cve_path):
    run = cve_path["runs"]["refused"]
    assert run.returncode != 0 and recap(run.stdout)["changed"] == 0
    assert "engine version 16.10 is not a valid upgrade target from 16.11" in run.stdout, run.stdout[-3000:]
    assert cve_path["after_refusal"] == cve_path["before"]


def test_check_mode_names_each_step_with_its_downtime_and_changes_nothing(cve_path):
    run = cve_path["runs"]["check"]
    assert run.returncode == 0, run.stdout[-4000:]
    # the tuner's measurement is owed too: the rows went in after the converge
    assert changed_tasks(run.stdout) == ["rds_instance : upgrade | Snapshot, move to the declared engine version and wait for it",
                                         "pgvector : tuning | Set ef_search / probes to the smallest values reaching recall 0.95"]
    for text in ("snapshot ndis-chatbot-local-before-16-11-to-16-14", "a brief I/O pause (Single-AZ)",
                 "modify ndis-chatbot-local engine version 16.11 -> 16.14", "outage: the engine stops and starts",
                 "ALTER EXTENSION vector UPDATE", "REINDEX INDEX CONCURRENTLY", "re-measure recall (tuning) and verify",
                 "rollback: aws rds restore-db-instance-from-db-snapshot"):
        assert text in run.stdout, text
    assert cve_path["after_check"] == cve_path["before"]


def test_the_site_upgrades_the_engine_and_pgvector_for_real(cve_path):
    run, before, after = cve_path["runs"]["upgrade"], cve_path["before"], cve_path["after"]
    assert run.returncode == 0, run.stdout[-4000:]
    assert (after["engine"], after["status"], after["server"], after["vector"]) == ("16.14", "available", "16.14", "0.8.5")
    assert after["snapshots"] == ["ndis-chatbot-local-before-16-11-to-16-14"]
    assert after["rows"] == before["rows"] and after["rows"][0] == ROWS - ROWS // 10
    # the rule: 0.8.1 -> 0.8.5 rebuilds every HNSW index (vacuum corruption fixed in 0.8.3): a new index, valid
    assert after["index"][0] != before["index"][0] and after["index"][1] is True
    for line in ("engine upgrade ndis-chatbot-local 16.11 -> 16.14: upgrading", "available on 16.14",
                 "ndis_chatbot: index public.embeddings_embedding_hnsw_cosine: running REINDEX INDEX CONCURRENTLY",
                 "ndis_chatbot: extension vector: done"):
        assert line in run.stdout, line


def test_after_the_upgrade_recall_is_remeasured_and_verify_is_clean(cve_path):
    out = cve_path["runs"]["upgrade"].stdout
    verify = out[out.index("VERIFY ndis-chatbot-local"):]
    assert "13/13 passed" in verify and "WARN pgvector" not in verify and "vector 0.8.5" in verify
    assert "measured because no measurement stored" in out or "measured because the index was rebuilt" in out


def test_the_app_reconnects_by_itself_after_a_measured_outage(cve_path):
    seconds, failed, total = cve_path["app"].outage()
    assert total > 20 and seconds < 30, (seconds, failed, total)
    assert cve_path["app"].log[-1][2], "the app's last query failed"


def test_a_second_run_changes_nothing(cve_path):
    run = cve_path["runs"]["repeat"]
    assert run.returncode == 0 and recap(run.stdout)["changed"] == 0, changed_tasks(run.stdout)


# --------------------------------------------------------------------- resume, step by step


@pytest.fixture()
def moto_instance(local_stack):
    """An instance on 16.9 in the session stack's moto (no local build: moto's states only)."""
    import uuid

    rds = boto3_factory(local_stack)("rds")
    ident = "upg-" + uuid.uuid4().hex[:8]
    rds.create_db_instance(DBInstanceIdentifier=ident, Engine="postgres", EngineVersion="16.9",
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="dbadmin",
                           MasterUserPassword="x" * 16)
    yield rds, ident
    rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True)


def run_upgrade_module(local_stack, ident, *extra, version="16.10", check=False):
    args = " ".join(["db_instance_identifier=" + ident, "engine_version=" + version, "poll_interval=0.3", *extra])
    play = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            f"    - ndis.dbops.rds_engine_upgrade: {args}\n      register: r\n"
            "    - ansible.builtin.debug: {var: r}\n")
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write(play)
    return run_playbook(fh.name, *(["--check"] if check else []), localhost=True, stack=local_stack)


def test_an_upgrade_stopped_after_the_snapshot_resumes_without_a_second_one(local_stack, moto_instance):
    rds, ident = moto_instance
    snap = eu.snapshot_identifier(ident, "16.9", "16.10")
    rds.create_db_snapshot(DBSnapshotIdentifier=snap, DBInstanceIdentifier=ident)  # the run that died after it
    run = run_upgrade_module(local_stack, ident, "apply_immediately=true")
    assert run.returncode == 0, run.stdout[-3000:]
    assert '"state": "upgraded"' in run.stdout
    assert manual_snapshots(rds, ident) == [snap]
    assert rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["EngineVersion"] == "16.10"


def test_an_upgrade_stopped_while_rds_upgrades_is_waited_for(local_stack, moto_instance):
    rds, ident = moto_instance
    rds.modify_db_instance(DBInstanceIdentifier=ident, EngineVersion="16.10", ApplyImmediately=True)  # then the run died
    assert rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["DBInstanceStatus"] == "upgrading"
    run = run_upgrade_module(local_stack, ident, "apply_immediately=true")
    assert run.returncode == 0 and '"state": "upgraded"' in run.stdout, run.stdout[-3000:]
    inst = rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
    assert (inst["EngineVersion"], inst["DBInstanceStatus"]) == ("16.10", "available")
    # no snapshot is taken of an instance already upgrading
    assert manual_snapshots(rds, ident) == []


def test_in_the_window_the_version_is_queued_and_said_when(local_stack, moto_instance):
    rds, ident = moto_instance
    first = run_upgrade_module(local_stack, ident, "apply_immediately=false")
    again = run_upgrade_module(local_stack, ident, "apply_immediately=false")
    dry = run_upgrade_module(local_stack, ident, "apply_immediately=false", check=True)
    assert '"changed": false' in dry.stdout and '"state": "queued"' in dry.stdout  # check mode says the same
    inst = rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
    assert (inst["EngineVersion"], inst["PendingModifiedValues"]) == ("16.9", {"EngineVersion": "16.10"})
    assert '"state": "queued"' in first.stdout and "queued for the maintenance window" in first.stdout
    assert '"changed": true' in first.stdout and '"changed": false' in again.stdout and '"state": "queued"' in again.stdout


def test_a_major_version_is_refused_unless_declared(local_stack, moto_instance):
    rds, ident = moto_instance
    run = run_upgrade_module(local_stack, ident, "apply_immediately=true", version="17.7")
    assert run.returncode != 0 and "is a major version upgrade. Declare it on purpose" in run.stdout, run.stdout[-2000:]
    assert "Nothing was changed" in run.stdout
    assert rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["EngineVersion"] == "16.9"
    assert manual_snapshots(rds, ident) == []


# ----------------------------------------------------------------- the database side alone


def test_the_rule_rebuilds_what_the_changelog_says():
    assert vext.rebuild_reasons("0.8.1", "0.8.5", "hnsw") and vext.rebuild_reasons("0.8.2", "0.8.3", "hnsw")
    assert vext.rebuild_reasons("0.8.3", "0.8.5", "hnsw") == []      # fixed already
    assert vext.rebuild_reasons("0.8.1", "0.8.2", "hnsw")            # the parallel-build overflow fix alone
    assert vext.rebuild_reasons("0.8.1", "0.8.5", "ivfflat") == []   # no IVFFlat damage between them
    assert vext.rebuild_reasons("0.3.0", "0.5.0", "ivfflat")         # 0.3.1: recreate all ivfflat indexes
    assert vext.rebuild_reasons("0.7.1", "0.8.5", "ivfflat", unlogged=True)
    assert vext.rebuild_reasons("0.7.1", "0.8.5", "ivfflat", unlogged=False) == []


def test_a_rebuild_interrupted_midway_is_cleaned_and_redone(scratch_db, local_stack):
    dsn = scratch_db["dsn"]
    execute(dsn, "CREATE EXTENSION vector",
            "CREATE TABLE items (id bigint PRIMARY KEY, v vector(64) NOT NULL)",
            "INSERT INTO items SELECT i, (SELECT array_agg(random()::real) FROM generate_series(1, 64) WHERE i > 0)::vector"
            " FROM generate_series(1, 3000) i",
            "CREATE INDEX items_v_hnsw ON items USING hnsw (v vector_cosine_ops)",
            "CREATE INDEX items_v_ivf ON items USING ivfflat (v vector_l2_ops) WITH (lists = 10)",
            # the catalog says 0.8.1 (the SQL version before the engine upgrade); the server ships 0.8.5
            "UPDATE pg_extension SET extversion = '0.8.1' WHERE extname = 'vector'")
    params = dict(host=local_stack["pg"]["host"], port=local_stack["pg"]["port"], user=local_stack["pg"]["user"],
                  password=local_stack["admin_password"], dbname=scratch_db["name"])
    plan = vu.upgrade(params, wanted=[scratch_db["name"]], check_mode=True)
    assert plan["queries"] == [f'{scratch_db["name"]}: REINDEX INDEX CONCURRENTLY "public"."items_v_hnsw"',
                               f'{scratch_db["name"]}: ALTER EXTENSION vector UPDATE']
    # a REINDEX CONCURRENTLY cut off midway leaves an INVALID <index>_ccnew (the run died with it)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    killer = threading.Timer(0.3, lambda: execute(
        dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'REINDEX%' AND pid <> pg_backend_pid()"))
    killer.start()
    with pytest.raises(psycopg2.Error):
        conn.cursor().execute("REINDEX INDEX CONCURRENTLY items_v_hnsw")
    killer.join()
    leftovers = execute(dsn, "SELECT relname FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid"
                             " WHERE NOT x.indisvalid")
    assert leftovers == [("items_v_hnsw_ccnew",)], leftovers
    oid_before = execute(dsn, "SELECT 'items_v_hnsw'::regclass::oid::bigint")[0][0]
    ivf_before = execute(dsn, "SELECT 'items_v_ivf'::regclass::oid::bigint")[0][0]
    done = vu.upgrade(params, wanted=[scratch_db["name"]])
    assert done["queries"][0].endswith('DROP INDEX CONCURRENTLY IF EXISTS "public"."items_v_hnsw_ccnew"')
    assert execute(dsn, "SELECT extversion FROM pg_extension WHERE extname = 'vector'") == [("0.8.5",)]
    assert execute(dsn, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]
    assert execute(dsn, "SELECT 'items_v_hnsw'::regclass::oid::bigint")[0][0] != oid_before
    assert execute(dsn, "SELECT 'items_v_ivf'::regclass::oid::bigint")[0][0] == ivf_before
    assert vu.upgrade(params, wanted=[scratch_db["name"]])["changed"] is False


# ------------------------------------------------------------------ warn before AWS forces it


def support_info(local_stack, ident, warn_days):
    import tempfile

    play = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            f"    - ndis.dbops.rds_engine_support_info: {{db_instance_identifier: {ident}, warn_days: {warn_days}}}\n"
            "      register: r\n    - ansible.builtin.debug: {var: r}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write(play)
    run = run_playbook(fh.name, localhost=True, stack=local_stack)
    assert run.returncode == 0, run.stdout[-2000:]
    return run.stdout


@pytest.mark.parametrize("version,days,expected", [
    ("16.8", 180, ['"status": "WARN"', "PostgreSQL 16.8 is deprecated in ap-southeast-2",
                   "its end of standard support was 2026-05-31", 'move to 16.14: declare rds_instance_engine_version: \\"16.14\\"',
                   '"target": "16.14"']),
    ("16.11", 1200, ['"status": "WARN"', "PostgreSQL 16 reaches its RDS end of standard support on 2029-02-28",
                     "plan the major upgrade to 17"]),
    ("16.11", 180, ['"status": "PASS"', "16.11 available; PostgreSQL 16 standard support until 2029-02-28"]),
])
def test_the_deprecation_warning_names_the_date_and_the_target(local_stack, version, days, expected):
    import uuid

    rds = boto3_factory(local_stack)("rds")
    ident = "sup-" + uuid.uuid4().hex[:8]
    rds.create_db_instance(DBInstanceIdentifier=ident, Engine="postgres", EngineVersion=version,
                           DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="dbadmin",
                           MasterUserPassword="x" * 16)
    try:
        out = support_info(local_stack, ident, days)
        for text in expected:
            assert text in out, (text, out[-1500:])
    finally:
        rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True)


# ------------------------------------------------------------------------- major upgrades, planned


def test_a_blue_green_plan_on_the_upgraded_stack_stops_on_the_rds_managed_password(cve_path):
    run = cve_path["runs"]["blue_green_plan"]
    assert run.returncode != 0 and recap(run.stdout)["changed"] == 0
    out = run.stdout
    for text in ("major upgrade (blue_green)", "create parameter group ndis-chatbot-local-postgres17 (family postgres17)",
                 "rds.force_ssl=1", "set rds.logical_replication = 1", "switchover with timeout 300 s",
                 "STOP: blue/green deployments are not supported for an instance whose master password RDS manages",
                 "rds_instance_master_password_mode: ssm", "the major upgrade cannot go ahead as declared (nothing was changed)"):
        assert text in out, text
    assert "without a primary key" not in out  # embeddings and schema_migrations have one


def plan_module(local_stack, ident, **options):
    import json
    import tempfile

    play = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            "    - ndis.dbops.rds_major_upgrade_plan: %s\n      register: r\n"
            "    - ansible.builtin.copy: {content: '{{ r | to_json }}', dest: %s.json}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write(play % (json.dumps(dict(db_instance_identifier=ident, **options)), fh.name))
    run = run_playbook(fh.name, localhost=True, stack=local_stack)
    assert run.returncode == 0, run.stdout[-2000:]
    return json.loads(open(fh.name + ".json").read())


def test_an_in_place_major_plan_carries_the_parameters_and_checks_the_database(local_stack, moto_instance):
    rds, ident = moto_instance
    plan = plan_module(local_stack, ident, engine_version="17.7", allow_major_version_upgrade=True,
                       parameters={"rds.force_ssl": 1, "no_such_param": 3},
                       db_facts={"prepared_transactions": 0, "logical_slots": []})
    steps = [s["step"] for s in plan["steps"]]
    assert plan["problems"] == [] and plan["target_parameters"] == {"rds.force_ssl": 1}
    assert steps[0].startswith("check: no prepared transaction, no logical replication slot")
    assert steps[1] == "create parameter group %s-postgres17 (family postgres17) with rds.force_ssl=1" % ident
    assert any("AllowMajorVersionUpgrade, parameter group %s-postgres17" % ident in s for s in steps)
    assert any(s.startswith("in every database: ANALYZE") for s in steps)
    assert "parameter(s) no_such_param do not exist in postgres17" in " ".join(plan["notes"])
    # what the database says stops it, each with the fix; the target defaults to the next major's default minor
    stopped = plan_module(local_stack, ident, db_facts={"prepared_transactions": 2, "logical_slots": ["cdc"]})
    assert stopped["engine_version"] == "17.7"
    text = " | ".join(stopped["problems"])
    assert "rds_instance_allow_major_version_upgrade: true" in text and "2 open prepared transaction(s)" in text
    assert "logical replication slot(s) cdc" in text and "pg_drop_replication_slot" in text


def test_a_blue_green_plan_with_the_password_in_ssm(local_stack, moto_instance):
    rds, ident = moto_instance  # created with a password of its own (mode ssm)
    plan = plan_module(local_stack, ident, engine_version="17.7", method="blue_green", allow_major_version_upgrade=True,
                       switchover_timeout=4000, db_facts={"tables_without_primary_key": ["public.audit_log"]})
    text = " | ".join(plan["problems"])
    assert "Secrets Manager" not in text
    assert "switchover timeout 4000 s: RDS takes 30 to 3600" in text
    assert "public.audit_log" in text and "REPLICA IDENTITY FULL" in text
    steps = [s["step"] for s in plan["steps"]]
    assert steps[0].startswith("set rds.logical_replication = 1")
    assert any(s.startswith("create blue/green deployment") for s in steps)
    assert any("recall measured" in s for s in steps) and any("keep the old blue" in s for s in steps)
