"""Shared fixtures: a real local stack (PostgreSQL 16 + pgvector, patched moto).

Fixtures
--------
local_stack   (session)  parsed ``stack.json`` plus ``admin_password``; the stack
                         lives in /tmp/ndis-pytest-stack (NDIS_TEST_STACK_DIR),
                         ports NDIS_TEST_PG_PORT / NDIS_TEST_MOTO_PORT
                         (55433 / 55501), TLS endpoint NDIS_TEST_TLS_PORT (the
                         PostgreSQL port + 1000); ``down`` at session end.
pg_admin_dsn  (session)  libpq keyword DSN to database ``postgres`` as admin.
scratch_db    (function) fresh uniquely named database: {"name", "dsn"};
                         dropped WITH (FORCE) afterwards.
aws_env       (session)  env vars for boto3 / ansible against moto.
boto3_client  (session)  factory: ``boto3_client("rds")``.

site_stack    (session)  the site's stack, on which moto enforces IAM, and site_runs, its one recording
                         of site.yml (tests/site_state.py).

``own_stack(NAME)`` starts a stack of a module's or test's own (NDIS_TEST_<NAME>_STACK_DIR and
_PG_PORT / _MOTO_PORT / _TLS_PORT, else a fresh directory and free ports); ``boto3_factory`` and
``execute`` serve any stack. Playbook runs: tests/playbook_runner.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from playbook_runner import REPO_ROOT, stack_aws_env

# A developer's shell may carry `make local-env`'s exports: PG* and AWS_* pointing at the `make local` stack, and
# PATH with the embedded server's bindir first. What a test sees must not depend on them: libpq and boto3 defaults
# are dropped here, and tests name the binaries they mean (tests/test_tls_drivers.py: Debian's psql, with SSL).
for _name in [n for n in os.environ if n.startswith(("PG", "AWS_"))]:
    del os.environ[_name]

# pytest-xdist (make pytest runs PYTEST_WORKERS workers): worker gwN, N > 0, gets a session stack of its own,
# in the directory with -gwN appended and on the ports + 20*N; gw0 (and a run without xdist) gets them as given.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
STACK_DIR = os.environ.get("NDIS_TEST_STACK_DIR", "/tmp/ndis-pytest-stack") + (f"-gw{WORKER}" if WORKER else "")
_PG_PORT = int(os.environ.get("NDIS_TEST_PG_PORT", "55433"))
PG_PORT = _PG_PORT + 20 * WORKER
MOTO_PORT = int(os.environ.get("NDIS_TEST_MOTO_PORT", "55501")) + 20 * WORKER
TLS_PORT = int(os.environ.get("NDIS_TEST_TLS_PORT") or _PG_PORT + 1000) + 20 * WORKER  # the TLS endpoint (pgbouncer)
# Modules whose tests share a session fixture too costly to build twice run on the same xdist worker; every
# other module runs whole on one worker, so its module fixtures are built once (pytest_xdist_make_scheduler).
XDIST_SCOPES = {"tests/test_iam_enforced.py": "tests/test_site.py"}


def _order_seed(config):
    """pytest-randomly's seed, or None when the plugin is off (-p no:randomly)."""
    try:
        return config.getoption("randomly_seed")
    except ValueError:
        return None


def pytest_sessionstart(session):
    seed = _order_seed(session.config)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if seed is not None and reporter is not None:  # -q hides the header line pytest-randomly prints
        reporter.write_line(f"tests in random order, seed {seed}; replay it: make pytest PYTEST_ARGS='--randomly-seed={seed}'")


def pytest_xdist_make_scheduler(config, log):
    """Modules whole on one worker (their module fixtures built once), two that share a session fixture together."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return XDIST_SCOPES.get(module, module)

    return ModuleScheduling(config, log)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    seed = _order_seed(config)
    if seed is not None and exitstatus not in (0, 5):
        terminalreporter.write_line(f"replay this order: make pytest PYTEST_ARGS='--randomly-seed={seed}'")


def run_stack(*args: str, check: bool = True, timeout: int = 180) -> subprocess.CompletedProcess:
    """Run ``python -m dbops.local_stack ARGS`` and return the completed process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "dbops.local_stack", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"local_stack {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def stack_args(directory: str = STACK_DIR, pg_port: int = PG_PORT, moto_port: int = MOTO_PORT,
               tls_port: int | None = None) -> list[str]:
    # Another stack (other ports) gets its own TLS port: its PostgreSQL port + 1000.
    tls = tls_port or (TLS_PORT if directory == STACK_DIR else pg_port + 1000)
    return ["--dir", directory, "--pg-port", str(pg_port), "--moto-port", str(moto_port), "--tls-port", str(tls)]


def dsn_quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def make_dsn(stack: dict, dbname: str) -> str:
    pg = stack["pg"]
    return (
        f"host={pg['host']} port={pg['port']} user={dsn_quote(pg['user'])} "
        f"password={dsn_quote(stack['admin_password'])} dbname={dsn_quote(dbname)}"
    )


def stack_data(directory: str) -> dict:
    """A running stack's ``stack.json`` plus its ``admin_password``."""
    data = json.loads((Path(directory) / "stack.json").read_text())
    data["admin_password"] = Path(data["pg"]["password_file"]).read_text().strip()
    return data


# The fixed ports of the session stacks (every worker's), Molecule's and the Docker scenario's: a free port is
# never one of them, even while it is still free (a worker's stack or Molecule may take it later).
RESERVED_PORTS = range(55400, 55600), range(56400, 56600)


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not any(port in reserved for reserved in RESERVED_PORTS):
            return port


@contextlib.contextmanager
def own_stack(name: str, *start_args: str):
    """A stack apart from the session's, taken down afterwards (see the module docstring); ``start_args``
    go to ``start`` (``"--pg-version", "16.11"``: a stack born on another server build; ``--enforce-iam``)."""
    prefix = f"NDIS_TEST_{name.upper()}_"
    directory = os.environ.get(prefix + "STACK_DIR", f"/tmp/ndis-pytest-{name.lower()}-{uuid.uuid4().hex[:8]}")
    ports = [int(os.environ.get(prefix + what) or free_port()) for what in ("PG_PORT", "MOTO_PORT", "TLS_PORT")]
    args = stack_args(directory, *ports[:2], tls_port=ports[2])
    run_stack("start", *args, *start_args)
    try:
        yield stack_data(directory)
    finally:
        run_stack("down", *args, check=False)


def execute(dsn: str, *statements: str, params=None):
    """Run STATEMENTS in autocommit on one connection; the last one's rows, if it returns any."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def boto3_factory(stack: dict):
    """``factory("rds")``: a boto3 client of the stack's moto."""
    import boto3

    aws = stack["aws"]

    def factory(service: str, **kwargs):
        params = dict(
            endpoint_url=aws["endpoint_url"],
            region_name=aws["region"],
            aws_access_key_id=aws["access_key_id"],
            aws_secret_access_key=aws["secret_access_key"],
        )
        params.update(kwargs)
        return boto3.client(service, **params)

    return factory


@pytest.fixture(scope="session")
def local_stack():
    run_stack("start", *stack_args())
    try:
        yield stack_data(STACK_DIR)
    finally:
        run_stack("down", *stack_args(), check=False)


@pytest.fixture(scope="session")
def pg_admin_dsn(local_stack) -> str:
    return make_dsn(local_stack, "postgres")


@pytest.fixture()
def scratch_db(local_stack, pg_admin_dsn):
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    execute(pg_admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield {"name": name, "dsn": make_dsn(local_stack, name)}
    finally:
        execute(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def site_stack():
    """The site's stack, on which moto enforces IAM (tests/site_state.py): test_site.py and test_iam_enforced.py."""
    with own_stack("site", "--enforce-iam") as stack:
        yield stack


@pytest.fixture(scope="session")
def site_runs(site_stack):
    """The one recording of site.yml on the site's stack while it is fresh (site_state.record_site)."""
    from site_state import record_site

    return record_site(site_stack, boto3_factory(site_stack))


@pytest.fixture(scope="session")
def aws_env(local_stack) -> dict[str, str]:
    return stack_aws_env(local_stack)


@pytest.fixture(scope="session")
def boto3_client(local_stack):
    return boto3_factory(local_stack)


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory) -> str:
    """A CA that did not sign the endpoint's certificate: the bundle of somebody else's server."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("other-ca") / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)
