"""The local stack CLI against real processes (no mocks)."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from conftest import STACK_DIR, execute, free_port, make_dsn, run_stack, stack_args


def status_json(*args: str) -> tuple[int, dict]:
    proc = run_stack("status", "--json", *args, check=False)
    return proc.returncode, json.loads(proc.stdout)


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(addr)
    return found


def test_start_is_idempotent(local_stack):
    rc, before = status_json(*stack_args())
    assert rc == 0
    proc = run_stack("start", *stack_args())
    assert "already running" in proc.stderr
    rc, after = status_json(*stack_args())
    assert rc == 0
    assert after["pg"]["pid"] == before["pg"]["pid"]
    assert after["moto"]["pid"] == before["moto"]["pid"]
    assert json.loads((Path(STACK_DIR) / "stack.json").read_text())["network"] == local_stack["network"]


def test_status_reports_both(local_stack):
    proc = run_stack("status", *stack_args())
    assert re.search(r"postgresql\s+running\s+\d+\s+127\.0\.0\.1:%d" % local_stack["pg"]["port"], proc.stdout)
    assert re.search(r"moto\s+running\s+\d+\s+%s" % re.escape(local_stack["aws"]["endpoint_url"]), proc.stdout)
    assert STACK_DIR in proc.stdout
    rc, st = status_json(*stack_args())
    assert rc == 0 and st["pg"]["running"] and st["moto"]["running"]
    assert st["pg"]["version"].startswith("16.")


def test_stack_json_shape(local_stack):
    assert local_stack["pg"]["host"] == "127.0.0.1"
    assert local_stack["pg"]["user"] == "dbadmin"
    assert local_stack["pg"]["version"].startswith("16.")
    assert Path(local_stack["pg"]["bindir"], "psql").exists()
    assert local_stack["aws"]["region"] == "ap-southeast-2"
    assert local_stack["network"]["vpc_id"].startswith("vpc-")
    assert len(local_stack["network"]["subnet_ids"]) == 2


def test_seeded_network(local_stack, boto3_client):
    ec2 = boto3_client("ec2")
    vpc = ec2.describe_vpcs(VpcIds=[local_stack["network"]["vpc_id"]])["Vpcs"][0]
    assert vpc["CidrBlock"] == "10.20.0.0/16"
    subnets = ec2.describe_subnets(SubnetIds=local_stack["network"]["subnet_ids"])["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == ["ap-southeast-2a", "ap-southeast-2b"]


def test_env_is_valid_shell_and_psql_works(local_stack, scratch_db, tmp_path):
    proc = run_stack("env", *stack_args())
    lines = proc.stdout.strip().splitlines()
    names = [re.match(r"export ([A-Z_]+)=", line).group(1) for line in lines]
    assert set(names) == {
        "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "AWS_ENDPOINT_URL", "AWS_REGION",
        "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PATH",
    }
    envfile = tmp_path / "env.sh"
    envfile.write_text(proc.stdout)
    assert subprocess.run(["bash", "-n", str(envfile)]).returncode == 0
    script = (
        f". {shlex.quote(str(envfile))}\n"
        'test "$(command -v psql)" = "$PSQL_EXPECTED" || { echo "wrong psql: $(command -v psql)"; exit 9; }\n'
        f"psql -X -v ON_ERROR_STOP=1 -At -d {shlex.quote(scratch_db['name'])} "
        "-c 'CREATE EXTENSION vector' "
        "-c \"SELECT extversion FROM pg_extension WHERE extname = 'vector'\" "
        "-c 'SHOW server_version' "
        "-c 'SELECT current_user'\n"
    )
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
    clean_env["PSQL_EXPECTED"] = str(Path(local_stack["pg"]["bindir"]) / "psql")
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=clean_env, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout.split()
    assert out[0] == "CREATE"  # "CREATE EXTENSION"
    assert "0.8.5" in out
    assert any(v.startswith("16.") for v in out)
    assert out[-1] == "dbadmin"


def test_listens_only_on_localhost(local_stack):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    for port in (local_stack["pg"]["port"], int(local_stack["aws"]["endpoint_url"].rsplit(":", 1)[1])):
        addrs = listening_addresses(port)
        assert addrs, f"nothing listens on {port}"
        assert addrs <= loopback, f"port {port} listens on {addrs}"


def test_shared_buffers_as_rds_gives_prod(local_stack, scratch_db):
    """1 GB, RDS's 25% of prod's db.t4g.medium, or a quarter of this machine's memory when that is less."""
    from dbops import local_stack as ls

    total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:"))
    want = max(128, min(1024, total_kb // 4096))
    assert ls.shared_buffers_mb() == want
    conn = psycopg2.connect(scratch_db["dsn"])
    with conn.cursor() as cur:
        cur.execute("SELECT setting::bigint * 8 / 1024, source FROM pg_settings WHERE name = 'shared_buffers'")
        assert cur.fetchone() == (want, "configuration file")
    conn.close()


def test_password_file_private_and_stack_json_clean(local_stack):
    pw_file = Path(local_stack["pg"]["password_file"])
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert pw_file.stat().st_uid == os.geteuid()
    assert len(local_stack["admin_password"]) == 32
    assert local_stack["admin_password"].isalnum()
    stack_json = Path(STACK_DIR) / "stack.json"
    assert stat.S_IMODE(stack_json.stat().st_mode) == 0o644
    assert local_stack["admin_password"] not in stack_json.read_text()
    assert stat.S_IMODE(Path(STACK_DIR).stat().st_mode) == 0o755
    # admin password really is required (scram over TCP)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(make_dsn({**local_stack, "admin_password": "wrong"}, "postgres"))


@pytest.mark.parametrize("which", ["pg", "moto"])
def test_taken_port_is_a_clear_error(tmp_path, which):
    directory = f"{STACK_DIR}-portstack-{which}"
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        if which == "pg":
            args = stack_args(directory, pg_port=taken, moto_port=free_port())
            flag, envvar = "--pg-port", "NDIS_LOCAL_PG_PORT"
        else:
            args = stack_args(directory, pg_port=free_port(), moto_port=taken)
            flag, envvar = "--moto-port", "NDIS_LOCAL_MOTO_PORT"
        proc = run_stack("start", *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert str(taken) in proc.stderr and flag in proc.stderr and envvar in proc.stderr
        assert proc.stdout == ""
        assert not Path(directory, "pgdata").exists()  # nothing was started
        rc, st = status_json(*args)
        assert rc == 3 and not st["pg"]["running"] and not st["moto"]["running"]
    finally:
        blocker.close()
        run_stack("down", "--dir", directory, check=False)


def test_stop_start_keeps_data_and_down_removes_dir():
    directory = f"{STACK_DIR}-stopstack"
    args = stack_args(directory, pg_port=free_port(), moto_port=free_port())
    run_stack("down", *args, check=False)
    try:
        run_stack("start", *args)
        stack = json.loads(Path(directory, "stack.json").read_text())
        stack["admin_password"] = Path(directory, "admin_password").read_text().strip()
        dsn = make_dsn(stack, "postgres")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('still here')")
        conn.close()

        run_stack("stop", *args)
        run_stack("stop", *args)  # idempotent
        rc, st = status_json(*args)
        assert rc == 3 and not st["pg"]["running"] and not st["moto"]["running"]
        env_proc = run_stack("env", *args, check=False)
        assert env_proc.returncode == 3 and "not running" in env_proc.stderr

        run_stack("start", *args)
        assert Path(directory, "admin_password").read_text().strip() == stack["admin_password"]
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM keep_me")
            assert cur.fetchall() == [("still here",)]
        conn.close()
        # moto lost its state on restart and was re-seeded
        assert json.loads(Path(directory, "stack.json").read_text())["network"]["vpc_id"].startswith("vpc-")
    finally:
        run_stack("down", *args)
    assert not Path(directory).exists()
    proc = run_stack("down", *args)  # idempotent
    assert "nothing to remove" in proc.stderr
    env_proc = run_stack("env", *args, check=False)
    assert env_proc.returncode == 3 and "not started" in env_proc.stderr


def test_an_older_build_runs_and_switches_over_the_same_data():
    """A stack born on the 16.11 build (pgvector 0.8.1, installed into the stack's directory, not
    the venv) keeps its data when switch-build restarts it on the pinned 16.14 build."""
    directory = f"{STACK_DIR}-build"
    args = stack_args(directory, pg_port=free_port(), moto_port=free_port())
    run_stack("down", *args, check=False)
    try:
        bad = run_stack("start", *args, "--pg-version", "16.99", check=False)
        assert bad.returncode == 2 and "no local server build of PostgreSQL 16.99" in bad.stderr
        assert "16.11 (pgvector 0.8.1)" in bad.stderr
        run_stack("start", *args, "--pg-version", "16.11")
        stack = json.loads(Path(directory, "stack.json").read_text())
        assert stack["pg"]["version"] == "16.11" and stack["pg"]["bindir"].startswith(f"{directory}/builds/16.11/")
        stack["admin_password"] = Path(directory, "admin_password").read_text().strip()
        dsn = make_dsn(stack, "postgres")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE EXTENSION vector; CREATE TABLE keep_me (v vector(2)); INSERT INTO keep_me VALUES ('[1,2]')")
            cur.execute("SELECT current_setting('server_version'), "
                        "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector')")
            assert cur.fetchone() == ("16.11", "0.8.1")
        conn.close()
        run_stack("stop", *args)
        run_stack("start", *args)  # the data directory's own build, whatever --pg-version says
        assert json.loads(Path(directory, "stack.json").read_text())["pg"]["version"] == "16.11"
        run_stack("switch-build", *args, "--pg-version", "16.14")
        assert json.loads(Path(directory, "stack.json").read_text())["pg"]["version"] == "16.14"
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version'), v::text,"
                        " (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
                        " (SELECT default_version FROM pg_available_extensions WHERE name = 'vector') FROM keep_me")
            assert cur.fetchone() == ("16.14", "[1,2]", "0.8.1", "0.8.5")
        conn.close()
    finally:
        run_stack("down", *args, check=False)


def wait_status(rds, identifier: str, leaving: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        inst = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        if inst["DBInstanceStatus"] != leaving or time.monotonic() > deadline:
            return inst
        time.sleep(0.2)


def test_patch17_a_read_replica_is_a_real_standby_and_delete_removes_it(local_stack, boto3_client, pg_admin_dsn):
    """moto's read replica of an instance on the local stack is a hot standby of the embedded server
    (base backup, slot, streaming) on a port and TLS endpoint of its own, recorded in stack.json and
    listed by status; a row written on the primary is read on it over verify-full TLS within a
    bound; it refuses writes; DeleteDBInstance stops it and drops its slot."""
    rds = boto3_client("rds")
    source, replica = f"rsrc-{uuid.uuid4().hex[:6]}", f"rrep-{uuid.uuid4().hex[:6]}"
    rds.create_db_instance(DBInstanceIdentifier=source, Engine="postgres", EngineVersion="16.11",
                           DBInstanceClass="db.t4g.micro", AllocatedStorage=20, MasterUsername="dbadmin",
                           ManageMasterUserPassword=True, BackupRetentionPeriod=7)
    started = time.monotonic()
    answer = rds.create_db_instance_read_replica(DBInstanceIdentifier=replica, SourceDBInstanceIdentifier=source)
    assert answer["DBInstance"]["DBInstanceStatus"] == "creating"
    assert wait_status(rds, replica, "creating")["DBInstanceStatus"] == "available"
    created_in = time.monotonic() - started
    entry = json.loads((Path(STACK_DIR) / "stack.json").read_text())["instances"][replica]
    assert entry["role"] == "replica" and entry["source"] == source
    reserved = {local_stack["pg"]["port"], local_stack["tls"]["port"], 55432, 55433, 55434, 55442,
                55500, 55501, 55502, 55512, 56432, 56433, 56434}
    assert entry["port"] not in reserved and entry["tls"]["port"] not in reserved
    assert entry["port"] > local_stack["pg"]["port"] and entry["tls"]["port"] != entry["port"]
    proc = run_stack("status", *stack_args())
    assert re.search(r"postgresql %s\s+running\s+\d+\s+127\.0\.0\.1:%d\s+replica of %s"
                     % (replica, entry["port"], source), proc.stdout), proc.stdout
    assert re.search(r"pgbouncer %s\s+running\s+\d+\s+127\.0\.0\.1:%d" % (replica, entry["tls"]["port"]), proc.stdout)

    table = f"replayed_{uuid.uuid4().hex[:6]}"
    execute(pg_admin_dsn, f"CREATE TABLE {table} (x int)", f"INSERT INTO {table} VALUES (42)")
    written = time.monotonic()
    reader = psycopg2.connect(host="127.0.0.1", port=entry["tls"]["port"], user=local_stack["pg"]["user"],
                              password=local_stack["admin_password"], dbname="postgres", sslmode="verify-full",
                              sslrootcert=local_stack["tls"]["ca_file"], connect_timeout=10)
    reader.autocommit = True
    try:
        with reader.cursor() as cur:
            while True:
                try:
                    cur.execute(f"SELECT x FROM {table}")
                    if cur.fetchall() == [(42,)]:
                        break
                except psycopg2.errors.UndefinedTable:
                    pass
                assert time.monotonic() - written < 5, "the row did not reach the replica within 5 s"
                time.sleep(0.02)
            replayed_in = time.monotonic() - written
            cur.execute("SELECT pg_is_in_recovery(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone() == (True, False)  # pgbouncer terminates TLS; its link to the server is local
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
                cur.execute(f"INSERT INTO {table} VALUES (1)")
    finally:
        reader.close()
    print(f"replica made in {created_in:.1f} s; a committed row read on it after {replayed_in * 1000:.0f} ms")
    assert execute(pg_admin_dsn, "SELECT application_name, state FROM pg_stat_replication "
                                 "WHERE application_name = %s", params=(replica,)) == [(replica, "streaming")]

    rds.delete_db_instance(DBInstanceIdentifier=replica, SkipFinalSnapshot=True)
    assert replica not in json.loads((Path(STACK_DIR) / "stack.json").read_text())["instances"]
    assert not Path(entry["dir"]).exists()
    assert not listening_addresses(entry["port"]) and not listening_addresses(entry["tls"]["port"])
    assert execute(pg_admin_dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                   params=(entry["slot"],)) == [(0,)]
    assert replica not in run_stack("status", *stack_args()).stdout
    rds.delete_db_instance(DBInstanceIdentifier=source, SkipFinalSnapshot=True)
    execute(pg_admin_dsn, f"DROP TABLE {table}")
