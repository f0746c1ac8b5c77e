"""The stored DATABASE_URL, used as it is by each driver an app might use, against the local
stack's TLS endpoint (pgbouncer, certificate from the stack's CA, which stands for the RDS CA).

Drivers: libpq through psycopg2 and through psql (Debian's client, /usr/bin/psql, when installed: named, not
taken from PATH, where `make local-env` puts the embedded server's psql, built without SSL), psycopg 3
(its own libpq), asyncpg (pure Python, parses the URL itself) and node-postgres 8 (pg from
tests/node/package-lock.json, installed with `npm ci` into NDIS_TEST_NODE_DIR; Node is the
machine's). Each must verify the server against the bundle the URL names; a bundle of another
CA must make each refuse the server. The runbook's sslmode=require is checked for what each
driver really does with it.

Reuses the session stack when a module before it converged the site; otherwise (run alone, or first
in a random order) the first fixture converges it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, STACK_DIR
from playbook_runner import run_playbook

URL_NAME = "/ndis-chatbot/local/DATABASE_URL"
NODE_SRC = REPO_ROOT / "tests" / "node"
NODE_DIR = Path(os.environ.get("NDIS_TEST_NODE_DIR", STACK_DIR + "-node"))
# Debian's psql, built with OpenSSL; the embedded server's psql has no SSL and cannot take sslmode=verify-full
SSL_PSQL = os.environ.get("NDIS_TEST_SSL_PSQL", "/usr/bin/psql")
CERT_ERRORS = re.compile(r"certificate verify failed|self[- ]signed certificate|SELF_SIGNED_CERT|unable to verify|"
                         r"CERTIFICATE_VERIFY_FAILED|UNABLE_TO_GET_ISSUER", re.I)


@pytest.fixture(scope="module")
def stored_url(local_stack, boto3_client) -> str:
    ssm = boto3_client("ssm")
    if URL_NAME not in [p["Name"] for p in ssm.describe_parameters()["Parameters"]]:
        proc = run_playbook("site.yml", stack=local_stack, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:]
    return ssm.get_parameter(Name=URL_NAME, WithDecryption=True)["Parameter"]["Value"]


@pytest.fixture(scope="module")
def node_pg() -> Path:
    """node-postgres from the committed lock file: `npm ci` into NODE_DIR when its lock differs."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: node-postgres is untested on this machine")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    lock = (NODE_SRC / "package-lock.json").read_bytes()
    if not (NODE_DIR / "node_modules" / "pg").is_dir() or (NODE_DIR / "package-lock.json").read_bytes() != lock:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NODE_SRC / name, NODE_DIR / name)
        proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.copy(NODE_SRC / "connect.js", NODE_DIR / "connect.js")
    return NODE_DIR


def redact(url: str) -> str:
    return re.sub(r"(postgres://[^:]+:)[^@]+@", r"\1***@", url)


def login(url: str) -> str:
    """The URL's login: one of the app's two (app_user, app_user_clone)."""
    user = re.match(r"postgres://([^:]+):", url).group(1)
    assert user in ("app_user", "app_user_clone"), user
    return user


def with_query(url: str, query: str) -> str:
    return url.split("?", 1)[0] + "?" + query


# Each returns ("ok", user, tls) or ("error", message): the URL is passed as it is, nothing else.
def via_psycopg2(url: str):
    import psycopg2

    try:
        conn = psycopg2.connect(url)
    except psycopg2.Error as e:
        return ("error", str(e))
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        user = cur.fetchone()[0]
    tls = conn.info.ssl_in_use
    conn.close()
    return ("ok", user, tls)


def via_psycopg3(url: str):
    import psycopg

    try:
        conn = psycopg.connect(url)
    except psycopg.Error as e:
        return ("error", str(e))
    user = conn.execute("SELECT current_user").fetchone()[0]
    tls = conn.pgconn.ssl_in_use
    conn.close()
    return ("ok", user, tls)


def via_asyncpg(url: str):
    import asyncpg

    async def go():
        conn = await asyncpg.connect(url, timeout=10)
        try:
            user = await conn.fetchval("SELECT current_user")
            # asyncpg has no public TLS attribute: the transport carries the ssl object
            return ("ok", user, conn._transport.get_extra_info("ssl_object") is not None)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except Exception as e:  # noqa: BLE001 - asyncpg raises ssl, OS and its own errors
        return ("error", f"{type(e).__name__}: {e}")


def via_psql(url: str):
    # psql takes the URL as its database argument; \conninfo says whether TLS is in use
    proc = subprocess.run([SSL_PSQL, "-X", "-At", "-d", url, "-c", "SELECT current_user", "-c", "\\conninfo"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
    if proc.returncode != 0:
        return ("error", proc.stderr)
    lines = proc.stdout.splitlines()
    return ("ok", lines[0], "SSL connection" in proc.stdout)


def via_node(url: str, node_dir: Path, extra_env: dict | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_")}
    env.update(DATABASE_URL=url, **(extra_env or {}))
    proc = subprocess.run(["node", str(node_dir / "connect.js")], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"ok": False, "error": proc.stderr}
    return ("ok", out["user"], out["tls"]) if out["ok"] else ("error", out["error"])


def drivers(node_dir: Path | None):
    out = {"libpq (psycopg2)": via_psycopg2, "psycopg 3": via_psycopg3, "asyncpg": via_asyncpg}
    if os.access(SSL_PSQL, os.X_OK):
        out["libpq (psql)"] = via_psql
    if node_dir is not None:
        out["node-postgres 8"] = lambda url: via_node(url, node_dir)
    return out


def test_stored_url_verifies_the_server_in_every_driver(local_stack, stored_url, node_pg):
    ca = local_stack["tls"]["ca_file"]
    user = login(stored_url)  # either app login: a rotation moves the URL from one to the other
    assert redact(stored_url) == (f"postgres://{user}:***@127.0.0.1:{local_stack['tls']['port']}/ndis_chatbot"
                                  f"?sslmode=verify-full&sslrootcert={ca}")
    results = {name: connect(stored_url) for name, connect in drivers(node_pg).items()}
    assert len(results) >= 4
    assert results == {name: ("ok", user, True) for name in results}


def test_a_server_whose_certificate_is_from_another_ca_is_refused(stored_url, node_pg, other_ca):
    url = re.sub(r"sslrootcert=[^&]+", "sslrootcert=" + other_ca, stored_url)
    results = {name: connect(url) for name, connect in drivers(node_pg).items()}
    refused = {name: r[0] == "error" and bool(CERT_ERRORS.search(r[1])) for name, r in results.items()}
    assert refused == {name: True for name in results}, {n: r[:2] for n, r in results.items()}


def test_require_encrypts_without_checking_and_node_needs_the_bundle(local_stack, stored_url, node_pg, other_ca):
    """The runbook's ?sslmode=require: libpq, psycopg 3 and asyncpg connect without checking the
    certificate (a bundle of another CA in ~/.postgresql would not matter: none is there); node-postgres
    8 treats require as verify-full against Node's CAs and refuses the local (or RDS) CA, until
    NODE_EXTRA_CA_CERTS names the bundle."""
    url = with_query(stored_url, "sslmode=require")
    results = {name: connect(url) for name, connect in drivers(node_pg).items()}
    for name, result in results.items():
        if name == "node-postgres 8":
            assert result[0] == "error" and CERT_ERRORS.search(result[1]), result
        else:
            assert result == ("ok", login(url), True), (name, result)
    assert via_node(url, node_pg, {"NODE_EXTRA_CA_CERTS": local_stack["tls"]["ca_file"]}) == ("ok", login(url), True)
    assert via_node(url, node_pg, {"NODE_EXTRA_CA_CERTS": other_ca})[0] == "error"
