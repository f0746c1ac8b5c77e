"""The Prisma path of the migrations role (migrations_tool: prisma), for real.

The fixture project tests/fixtures/prisma_app (Prisma 6.19.3 with @prisma/adapter-pg, the Wasm
schema engine: no download) is installed with `npm ci` from its committed lock file into a
temporary copy outside the repository, then run by the role through ansible-playbook against the
embedded PostgreSQL, as the schema owner role.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from migrate_helpers import connect, dsn_params, query
from playbook_runner import run_playbook

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "prisma_app"

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")


@pytest.fixture(scope="session")
def prisma_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("prisma") / "app"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--cache", str(project.parent / "npm-cache")],
        cwd=project, check=True, capture_output=True, text=True, timeout=300,
    )
    return project


@pytest.fixture
def owned_db(scratch_db):
    """The scratch database with a NOLOGIN owner role owning its public schema, as postgres_db sets it up."""
    owner = scratch_db["name"] + "_owner"
    conn = connect(scratch_db["dsn"])
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{owner}" NOLOGIN')
        cur.execute(f'GRANT "{owner}" TO CURRENT_USER')
        cur.execute(f'ALTER SCHEMA public OWNER TO "{owner}"')
    try:
        yield {**scratch_db, "owner": owner}
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP OWNED BY "{owner}" CASCADE')
            cur.execute(f'DROP ROLE "{owner}"')
        conn.close()


def _play(tmp_path, db, project, tasks):
    p = dsn_params(db["dsn"])
    role_vars = {
        "migrations_tool": "prisma",
        "migrations_login_host": p["host"],
        "migrations_login_port": int(p["port"]),
        "migrations_login_user": p["user"],
        "migrations_login_password": p["password"],
        "migrations_database": db["name"],
        "migrations_dir": str(project),
        "migrations_ssl_mode": "disable",
        "migrations_role": db["owner"],
        "migrations_prisma_project_dir": str(project),
        "migrations_no_log": True,
    }
    pb = tmp_path / "prisma.yml"
    pb.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "vars": role_vars, "tasks": tasks}]))
    return pb, p["password"]


def _ansible(pb, *extra):
    proc = run_playbook(pb, *extra, localhost=True, env={"ANSIBLE_ROLES_PATH": REPO / "roles"}, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


ROLE = [{"name": "Migrate", "ansible.builtin.include_role": {"name": "migrations"}},
        {"name": "Show", "ansible.builtin.debug": {"msg": "RESULT {{ migrations_result | to_json }}"}}]


def _result(out):
    line = next(x for x in out.splitlines() if '"msg": "RESULT ' in x)
    return json.loads(json.loads("{" + line.strip() + "}")["msg"][len("RESULT "):])


def _prisma_rows(dsn):
    return query(dsn, "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL "
                      "FROM _prisma_migrations ORDER BY migration_name")


def test_prisma_deploy_check_apply_fail_refuse(prisma_project, owned_db, tmp_path):
    db = owned_db["dsn"]
    pb, password = _play(tmp_path, owned_db, prisma_project, ROLE)
    outputs = []

    rc, out = _ansible(pb, "--check")
    outputs.append(out)
    assert rc == 0, out
    assert "20260101000000_init" in out and "20260102000000_note_title" in out
    assert query(db, "SELECT to_regclass('_prisma_migrations')") == [(None,)]

    # what postgres_db's default privileges do for the app group, here for PUBLIC: every table the owner creates is the app's
    query(db, f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owned_db["owner"]}" IN SCHEMA public '
              "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO PUBLIC")
    rc, out = _ansible(pb, "-vvv")
    outputs.append(out)
    assert rc == 0, out
    assert "changed=1" in out, out
    res = _result(out)
    assert res["changed"] and res["applied"] == ["20260101000000_init", "20260102000000_note_title"]
    assert _prisma_rows(db) == [("20260101000000_init", True, False), ("20260102000000_note_title", True, False)]
    owners = query(db, "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    assert owners == [("_prisma_migrations", owned_db["owner"]), ("notes", owned_db["owner"])]
    # the app's tables are the app's; the history is not (an app that could write it could make a deploy skip a migration)
    assert query(db, "SELECT has_table_privilege('public', 'notes', 'INSERT'), "
                     "has_table_privilege('public', '_prisma_migrations', 'SELECT')") == [(True, False)]

    rc, out = _ansible(pb)
    assert rc == 0 and _result(out)["changed"] is False and "changed=0" in out, out

    mig = prisma_project / "prisma" / "migrations" / "20260103000000_bad"
    mig.mkdir()
    (mig / "migration.sql").write_text('CREATE TABLE "half" (id int);\nSELECT 1/0;\n')
    try:
        rc, out = _ansible(pb)
        outputs.append(out)
        assert rc == 2, out
        assert "prisma migrate deploy failed" in out and "division by zero" in out, out
        # The next run refuses with the way out; verify's "Migrations applied" reads _prisma_migrations
        # (its own two tasks, run as verify runs them, in the same play to save a run).
        verify = yaml.safe_load((REPO / "playbooks" / "verify.yml").read_text())
        find, task = [{k: v for k, v in t.items() if k != "when"} for t in verify[0]["tasks"]
                      if t["name"] in ("Find the Prisma migrations on disk", "List Prisma migrations not yet applied, or failed")]
        p = dsn_params(db)
        # verify's play gives the login through module_defaults (db_admin_module_defaults): the same here
        task["community.postgresql.postgresql_query"].update(
            login_host=p["host"], login_port=int(p["port"]), login_user="{{ postgres_db_login_user }}",
            login_password="{{ __verify_admin_password }}", login_db="{{ app_db_name }}")
        vpb, _pw = _play(tmp_path, owned_db, prisma_project, [
            {"block": [{"name": "Migrate", "ansible.builtin.include_role": {"name": "migrations"}}],
             "rescue": [{"ansible.builtin.debug": {"msg": "REFUSED {{ ansible_failed_result.msg }}"}}]},
            {"ansible.builtin.set_fact": {"postgres_db_login_user": p["user"], "__verify_admin_password": password,
                                          "app_db_name": owned_db["name"]}, "no_log": True},
            find, task, {"ansible.builtin.debug": {"msg": "RESULT {{ __verify_prisma.query_result[0] | to_json }}"}}])
        rc, out = _ansible(vpb)
        outputs.append(out)
        assert rc == 0, out
        assert "REFUSED" in out and "P3009" in out, out
        assert "npx prisma migrate resolve --rolled-back 20260103000000_bad" in out, out
        assert _result(out) == {"pending": ["20260103000000_bad"], "failed": ["20260103000000_bad"]}
    finally:
        shutil.rmtree(mig)
    for out in outputs:
        assert password not in out


def test_prisma_deploy_over_tls_checks_the_certificate(prisma_project, owned_db, local_stack, tmp_path, other_ca):
    """Through the local stack's TLS endpoint (PgBouncer, standing in for the server's own TLS) with
    sslmode verify-full and the local CA bundle: a CA that did not sign the server's certificate is
    refused before anything is applied, the right one deploys. A pooler refuses the role= startup
    option, and the role says to connect to the server itself."""
    import secrets

    tls = local_stack["tls"]
    db = owned_db["dsn"]
    # PgBouncer passes no startup options, so through it Prisma logs in as the owner itself.
    owner_password = secrets.token_urlsafe(24)
    conn = connect(db)
    with conn.cursor() as cur:
        cur.execute(f'ALTER ROLE "{owned_db["owner"]}" LOGIN PASSWORD %s', (owner_password,))
    conn.close()
    pb, admin_password = _play(tmp_path, owned_db, prisma_project, ROLE)
    common = ["-e", f"migrations_login_host={tls['host']}", "-e", f"migrations_login_port={tls['port']}",
              "-e", "migrations_ssl_mode=verify-full"]
    as_owner = ["-e", f"migrations_login_user={owned_db['owner']}", "-e", f"migrations_login_password={owner_password}",
                "-e", "migrations_role="]
    outputs = []

    rc, out = _ansible(pb, *common, *as_owner, "-e", f"migrations_ssl_rootcert={other_ca}")
    outputs.append(out)
    assert rc == 2, out
    assert "prisma migrate deploy failed" in out and "self-signed certificate in certificate chain" in out, out
    assert query(db, "SELECT to_regclass('_prisma_migrations')") == [(None,)]

    rc, out = _ansible(pb, *common, *as_owner, "-e", f"migrations_ssl_rootcert={tls['ca_file']}", "--check")
    outputs.append(out)
    assert rc == 0 and "Prisma would apply: 20260101000000_init, 20260102000000_note_title" in out, out

    rc, out = _ansible(pb, *common, *as_owner, "-e", f"migrations_ssl_rootcert={tls['ca_file']}")
    outputs.append(out)
    assert rc == 0, out
    assert _result(out)["applied"] == ["20260101000000_init", "20260102000000_note_title"]
    owners = query(db, "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    assert owners == [("_prisma_migrations", owned_db["owner"]), ("notes", owned_db["owner"])]
    # the deploy really went through TLS: PgBouncer requires it of every client (client_tls_sslmode)
    assert "client_tls_sslmode = require" in (Path(local_stack["dir"]) / "pgbouncer" / "pgbouncer.ini").read_text()

    rc, out = _ansible(pb, *common, "-e", f"migrations_ssl_rootcert={tls['ca_file']}")  # admin + role=owner
    outputs.append(out)
    assert rc == 2, out
    assert "unsupported startup parameter: options" in out and "point migrations_login_host/port at the database server" in out, out
    for out in outputs:
        assert owner_password not in out and admin_password not in out


def test_sql_tool_reads_the_same_ca_bundle(owned_db, local_stack, tmp_path, other_ca):
    """migrations_ssl_rootcert reaches the sql tool too (libpq's PGSSLROOTCERT): through the TLS
    endpoint with verify-full, a wrong CA is refused before anything runs, the right one applies
    (PgBouncer's session pooling keeps pg_migrate's SET ROLE and advisory lock for the run)."""
    tls = local_stack["tls"]
    mig = tmp_path / "sql"
    mig.mkdir()
    (mig / "0001_t.sql").write_text("CREATE TABLE tls_t (id int);\n")
    pb, password = _play(tmp_path, owned_db, tmp_path, ROLE)
    common = ["-e", "migrations_tool=sql", "-e", f"migrations_dir={mig}", "-e", f"migrations_login_host={tls['host']}",
              "-e", f"migrations_login_port={tls['port']}", "-e", "migrations_ssl_mode=verify-full"]
    rc, out = _ansible(pb, *common, "-e", f"migrations_ssl_rootcert={other_ca}")
    assert rc == 2 and "certificate verify failed" in out, out
    assert query(owned_db["dsn"], "SELECT to_regclass('tls_t')") == [(None,)]
    rc, out = _ansible(pb, *common, "-e", f"migrations_ssl_rootcert={tls['ca_file']}")
    assert rc == 0 and _result(out)["applied"], out
    assert query(owned_db["dsn"], "SELECT tableowner FROM pg_tables WHERE tablename = 'tls_t'") == [(owned_db["owner"],)]
    assert password not in out
