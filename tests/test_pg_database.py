"""ndis.dbops.pg_database and its engine (module_utils/pg_access.py) against the real embedded
PostgreSQL: roles, membership, database, the app group and its two logins, the password of the login the
stored URL uses, retired logins, privileges both ways (and none on the project's own tables), check mode."""

from __future__ import annotations

import json
import uuid

import psycopg2
import pytest

from ansible_collections.ndis.dbops.plugins.module_utils import pg_access
from playbook_runner import run_playbook


def sql(dsn, *statements, fetch=False):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            out = None
            for s in statements:
                cur.execute(s)
                if fetch and cur.description:
                    out = cur.fetchall()
            return out
    finally:
        conn.close()


@pytest.fixture()
def env(local_stack, pg_admin_dsn):
    pg = local_stack["pg"]
    tag = uuid.uuid4().hex[:8]
    spec = dict(name=f"acc_{tag}", owner=f"acc_{tag}_owner", schema="public", app_user=f"acc_app_{tag}",
                app_alternate_user=f"acc_app_{tag}_clone", app_group=f"acc_{tag}_app",
                app_password="Pw-" + uuid.uuid4().hex, app_connection_limit=20,
                app_settings={"statement_timeout": "30s"}, app_comment="app login",
                owner_comment="owns it", app_table_privileges=["SELECT", "INSERT", "UPDATE", "DELETE"],
                app_sequence_privileges=["USAGE", "SELECT"], readonly_role=f"acc_ro_{tag}",
                readonly_comment="read only", maintenance_db="postgres")
    conn = dict(host=pg["host"], port=int(pg["port"]), user=pg["user"], password=local_stack["admin_password"],
                connect_timeout=5, sslmode="disable")
    base = " ".join(f"{k}={v}" for k, v in dict(host=pg["host"], port=pg["port"]).items())
    yield dict(spec=spec, conn=conn, admin_dsn=pg_admin_dsn,
               db_dsn=lambda user=None, password=None: (
                   f"{base} dbname={spec['name']} user={user or pg['user']} "
                   f"password={password or local_stack['admin_password']}"))
    sql(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{spec["name"]}" WITH (FORCE)')
    for role in sql(pg_admin_dsn, f"SELECT rolname FROM pg_roles WHERE rolname LIKE 'acc\\_%{tag}%' ORDER BY 1", fetch=True):
        sql(pg_admin_dsn, f'DROP ROLE IF EXISTS "{role[0]}"')


def catalog(dsn, spec):
    """Roles, database and privileges as the server sees them."""
    return sql(dsn, f"""
        SELECT json_build_object(
          'roles', (SELECT json_agg(json_build_object('n', rolname, 'login', rolcanlogin, 'limit', rolconnlimit,
                                                      'pw', rolpassword IS NOT NULL) ORDER BY rolname)
                      FROM pg_authid WHERE rolname IN ('{spec["owner"]}', '{spec["app_user"]}', '{spec["readonly_role"]}',
                                                       '{spec["app_alternate_user"]}', '{spec["app_group"]}')),
          'db', (SELECT json_agg(datname) FROM pg_database WHERE datname = '{spec["name"]}'),
          'members', (SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                       WHERE g.rolname = '{spec["owner"]}'),
          'group', (SELECT json_agg(u.rolname ORDER BY u.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                     JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = '{spec["app_group"]}'),
          'settings', (SELECT json_agg(setconfig ORDER BY r.rolname) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                        WHERE r.rolname IN ('{spec["app_user"]}', '{spec["app_alternate_user"]}')))""", fetch=True)[0][0]


def test_check_apply_check_repeat_on_a_fresh_server(env):
    spec, conn = env["spec"], env["conn"]
    before = catalog(env["admin_dsn"], spec)
    r1 = pg_access.converge(conn, spec, check_mode=True)
    assert r1["changed"] and not r1["database_exists"]
    assert catalog(env["admin_dsn"], spec) == before, "check mode changed the catalog"
    assert f'CREATE DATABASE "{spec["name"]}" OWNER "{spec["owner"]}" ENCODING \'UTF8\'' in r1["queries"]
    assert any(q.startswith(f'GRANT CONNECT ON DATABASE {spec["name"]} TO {spec["app_group"]}') for q in r1["queries"])
    assert not any(spec["app_user"] in q and q.startswith("GRANT CONNECT") for q in r1["queries"]), "a login holds privileges"
    r2 = pg_access.converge(conn, spec)
    assert r2["changed"] and r2["database_exists"]
    # what check mode listed for the cluster level is exactly what ran
    assert [q for q in r1["queries"] if "DATABASE" not in q or q.startswith("CREATE")][:6] == r2["queries"][:6]
    r3 = pg_access.converge(conn, spec, check_mode=True)
    assert not r3["changed"] and r3["queries"] == [], r3["queries"]
    r4 = pg_access.converge(conn, spec)
    assert not r4["changed"] and r4["queries"] == []
    after = catalog(env["admin_dsn"], spec)
    assert after["db"] == [spec["name"]] and after["members"] == 1
    assert after["settings"] == [["statement_timeout=30s"], ["statement_timeout=30s"]]  # both logins
    assert after["group"] == sorted([spec["app_user"], spec["app_alternate_user"]])
    assert {r["n"]: (r["login"], r["limit"], r["pw"]) for r in after["roles"]} == {
        spec["owner"]: (False, -1, False), spec["app_user"]: (True, 20, True), spec["readonly_role"]: (False, -1, False),
        spec["app_group"]: (False, -1, False),
        spec["app_alternate_user"]: (True, 20, False)}  # a new alternate login has no password: nothing logs in as it


def test_app_logins_get_dml_not_ddl_and_privileges_converge_both_ways(env):
    spec, conn = dict(env["spec"], app_table_exceptions={"history": []}), env["conn"]
    pg_access.converge(conn, spec)
    owner_dsn = env["db_dsn"]()
    sql(owner_dsn, f'SET ROLE "{spec["owner"]}"', "CREATE TABLE items (id bigserial PRIMARY KEY, body text)",
        "CREATE TABLE history (version text PRIMARY KEY)")
    app_dsn = env["db_dsn"](spec["app_user"], spec["app_password"])
    sql(app_dsn, "INSERT INTO items (body) VALUES ('x')", "UPDATE items SET body = 'y'", "SELECT * FROM items")
    with pytest.raises(psycopg2.Error) as ei:
        sql(app_dsn, "CREATE TABLE nope (id int)")
    assert ei.value.pgcode == "42501"
    app, clone, group, ro = spec["app_user"], spec["app_alternate_user"], spec["app_group"], spec["readonly_role"]
    # the owner's default privileges handed the new tables to the group, the project's own table too
    plan = pg_access.converge(conn, spec, check_mode=True)
    assert plan["queries"] == [f'REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLE "public"."history" FROM "{group}"',
                               f'REVOKE SELECT ON TABLE "public"."history" FROM "{ro}"']
    pg_access.converge(conn, spec)
    with pytest.raises(psycopg2.Error) as ei:
        sql(app_dsn, "SELECT * FROM history")
    assert ei.value.pgcode == "42501"
    # drift by hand, in every direction the module covers: on the group, and granted to one login directly
    sql(owner_dsn,
        f'REVOKE SELECT ON items FROM "{group}"',
        f'GRANT TRUNCATE ON items TO "{group}"',
        f'GRANT INSERT ON history TO "{group}"',
        f'GRANT UPDATE ON SEQUENCE items_id_seq TO "{clone}"',
        f'GRANT SELECT ON history TO "{app}"',
        f'GRANT INSERT ON items TO "{ro}"',
        "GRANT CREATE ON SCHEMA public TO PUBLIC",
        f'GRANT TEMPORARY ON DATABASE "{spec["name"]}" TO "{app}"',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{spec["owner"]}" IN SCHEMA public REVOKE DELETE ON TABLES FROM "{group}"')
    plan = pg_access.converge(conn, spec, check_mode=True)
    assert sorted(plan["queries"]) == sorted([
        f'REVOKE TEMPORARY ON DATABASE "{spec["name"]}" FROM "{app}"',
        'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC',
        # the group's privileges differ between tables: statements name the tables
        f'GRANT SELECT ON TABLE "public"."items" TO "{group}"',
        f'REVOKE INSERT ON TABLE "public"."history" FROM "{group}"',
        f'REVOKE TRUNCATE ON TABLE "public"."items" FROM "{group}"',
        f'REVOKE SELECT ON ALL TABLES IN SCHEMA "public" FROM "{app}"',
        f'REVOKE INSERT ON TABLE "public"."items" FROM "{ro}"',
        f'REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA "public" FROM "{clone}"',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{spec["owner"]}" IN SCHEMA "public" GRANT DELETE ON TABLES TO "{group}"',
    ]), plan["queries"]
    assert "items lacks SELECT" in plan["diff"]["before"] and "items has TRUNCATE" in plan["diff"]["before"]
    assert f"{group} on 2 tables in public: SELECT, INSERT, UPDATE, DELETE; history: -" in plan["diff"]["after"]
    fixed = pg_access.converge(conn, spec)
    assert sorted(fixed["queries"]) == sorted(plan["queries"])
    assert not pg_access.converge(conn, spec, check_mode=True)["changed"]
    checks = """SELECT has_table_privilege('{r}', 'items', 'SELECT, INSERT, UPDATE, DELETE'),
                       has_table_privilege('{r}', 'items', 'TRUNCATE'),
                       has_table_privilege('{r}', 'history', 'SELECT') OR has_table_privilege('{r}', 'history', 'INSERT'),
                       has_schema_privilege('{r}', 'public', 'CREATE'),
                       has_sequence_privilege('{r}', 'items_id_seq', 'UPDATE')"""
    got = {r: sql(owner_dsn, checks.format(r=r), fetch=True)[0] for r in (app, clone)}
    assert got[app] == got[clone] == (True, False, False, False, False)  # the same, through the group
    row = sql(owner_dsn, f"""SELECT has_table_privilege('{ro}', 'items', 'INSERT'),
                                    has_table_privilege('{ro}', 'items', 'SELECT')""", fetch=True)[0]
    assert row == (False, True)


def test_password_is_compared_by_login_and_sent_as_a_scram_verifier(env):
    spec, conn = env["spec"], env["conn"]
    app, clone, group = spec["app_user"], spec["app_alternate_user"], spec["app_group"]
    pg_access.converge(conn, spec)
    # a revoked CONNECT does not look like a wrong password
    sql(env["admin_dsn"], f'REVOKE CONNECT ON DATABASE "{spec["name"]}" FROM "{group}"')
    plan = pg_access.converge(conn, spec, check_mode=True)
    assert plan["queries"] == [f'GRANT CONNECT ON DATABASE "{spec["name"]}" TO "{group}"']
    pg_access.converge(conn, spec)
    new = dict(spec, app_password="New-" + uuid.uuid4().hex)
    plan = pg_access.converge(conn, new, check_mode=True)
    assert plan["queries"] == [f"ALTER ROLE \"{app}\" PASSWORD '********'"]
    assert new["app_password"] not in json.dumps(plan)
    done = pg_access.converge(conn, new)
    assert new["app_password"] not in json.dumps(done)
    stored = sql(env["admin_dsn"], f"SELECT rolpassword FROM pg_authid WHERE rolname = '{app}'", fetch=True)
    assert stored[0][0].startswith("SCRAM-SHA-256$4096:")
    sql(env["db_dsn"](app, new["app_password"]), "SELECT 1")
    with pytest.raises(psycopg2.OperationalError):
        sql(env["db_dsn"](app, spec["app_password"]), "SELECT 1")
    assert not pg_access.converge(conn, new)["changed"]
    # the stored URL moved to the alternate login: its password is set, app_user's is left as it was
    moved = dict(new, app_password="Alt-" + uuid.uuid4().hex, app_login=clone)
    assert pg_access.converge(conn, moved)["queries"] == [f"ALTER ROLE \"{clone}\" PASSWORD '********'"]
    sql(env["db_dsn"](clone, moved["app_password"]), "SELECT 1")
    sql(env["db_dsn"](app, new["app_password"]), "SELECT 1")  # the previous URL still logs in
    assert not pg_access.converge(conn, moved)["changed"]


def test_logins_no_longer_declared_are_retired(env):
    """A renamed app user leaves no live login: the previous ones lose LOGIN, the group, their direct privileges and
    their sessions, in check mode only listed; renamed back, the first ones come back and the others go."""
    spec, conn = env["spec"], env["conn"]
    pg_access.converge(conn, spec)
    old, old_clone, group = spec["app_user"], spec["app_alternate_user"], spec["app_group"]
    sql(env["db_dsn"](), "CREATE TABLE t_ret (id int)", f'ALTER TABLE t_ret OWNER TO "{spec["owner"]}"',
        f'GRANT TRUNCATE ON t_ret TO "{old}"')
    held = psycopg2.connect(env["db_dsn"](old, spec["app_password"]))  # a session of the app, open through the rename
    renamed = dict(spec, app_user=old + "_v2", app_alternate_user=old + "_v2_clone")
    try:
        plan = pg_access.converge(conn, renamed, check_mode=True)
        assert plan["retired"] == sorted([old, old_clone])
        assert f'ALTER ROLE "{old}" NOLOGIN' in plan["queries"] and f'REVOKE "{group}" FROM "{old_clone}"' in plan["queries"]
        assert any("pg_terminate_backend" in q and old in q for q in plan["queries"])
        assert sql(env["admin_dsn"], f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{old}'", fetch=True) == [(True,)]
        done = pg_access.converge(conn, renamed)
        assert done["retired"] == sorted([old, old_clone])
        row = sql(env["db_dsn"](), f"""SELECT r.rolcanlogin, pg_has_role(r.oid, '{group}', 'MEMBER'),
                                             has_table_privilege(r.oid, 't_ret', 'TRUNCATE'),
                                             has_database_privilege(r.oid, current_database(), 'CONNECT'),
                                             shobj_description(r.oid, 'pg_authid')
                                        FROM pg_roles r WHERE r.rolname = '{old}'""", fetch=True)[0]
        assert row[:4] == (False, False, False, False) and row[4].startswith("Retired")
        with pytest.raises(psycopg2.Error):  # its session was ended
            with held.cursor() as cur:
                cur.execute("SELECT 1")
        with pytest.raises(psycopg2.OperationalError, match="not permitted to log in"):
            sql(env["db_dsn"](old, spec["app_password"]), "SELECT 1")
        sql(env["db_dsn"](renamed["app_user"], spec["app_password"]), "SELECT 1")
        again = pg_access.converge(conn, renamed)
        assert not again["changed"] and again["retired"] == [], again["queries"]
        back = pg_access.converge(conn, spec)
        assert back["retired"] == sorted([renamed["app_user"], renamed["app_alternate_user"]])
        sql(env["db_dsn"](old, spec["app_password"]), "INSERT INTO t_ret VALUES (1)")
        assert not pg_access.converge(conn, spec)["changed"]
    finally:
        held.close()


def test_verifier_format_and_non_ascii_fallback():
    salt = b"0123456789abcdef"
    v = pg_access.scram_verifier("secret-password", salt=salt)
    assert v.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert pg_access.scram_verifier("pässword") is None  # SASLprep is the server's job


def test_bad_inputs_name_the_problem(env, local_stack):
    spec, conn = env["spec"], env["conn"]
    with pytest.raises(pg_access.AccessError) as ei:
        pg_access.converge(dict(conn, port=1, connect_timeout=2), spec)
    assert ei.value.msg.startswith(f"Cannot connect to PostgreSQL at {conn['host']}:1 as {conn['user']} within 2 s")
    with pytest.raises(pg_access.AccessError) as ei:
        pg_access.converge(conn, dict(spec, app_table_privileges=["SELECT", "DROP"]))
    assert "app_table_privileges: DROP not among SELECT, INSERT" in ei.value.msg
    with pytest.raises(pg_access.AccessError) as ei:
        pg_access.converge(conn, dict(spec, schema="app"))
    assert f"schema app does not exist in database {spec['name']}" in ei.value.msg
    with pytest.raises(pg_access.AccessError) as ei:
        pg_access.converge(conn, dict(spec, encoding="LATIN1"))
    assert "exists with encoding UTF8, not LATIN1" in ei.value.msg


def test_module_four_steps_through_ansible(env, local_stack, tmp_path):
    spec, conn = env["spec"], env["conn"]
    args = dict(spec, login_host=conn["host"], login_port=conn["port"], login_user=conn["user"],
                login_password=conn["password"], ssl_mode="disable")
    play = [{
        "name": "four steps", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "check", "ndis.dbops.pg_database": args, "check_mode": True, "register": "s1", "diff": True},
            {"name": "apply", "ndis.dbops.pg_database": args, "register": "s2"},
            {"name": "check again", "ndis.dbops.pg_database": args, "check_mode": True, "register": "s3"},
            {"name": "apply again", "ndis.dbops.pg_database": args, "register": "s4", "diff": True},
            {"name": "same role twice", "ndis.dbops.pg_database": dict(args, readonly_role=spec["app_user"]),
             "register": "s5", "ignore_errors": True},
            {"name": "assert", "ansible.builtin.assert": {"that": [
                "s1.changed and not s1.database_exists and s1.diff.before is search('database %s: absent')" % spec["name"],
                "s2.changed and s2.database_exists", "not s3.changed", "not s4.changed and s4.queries == []",
                "s5.failed and s5.msg is search('must be different roles')",
            ]}},
        ],
    }]
    pb = tmp_path / "play.yml"
    pb.write_text(json.dumps(play))
    proc = run_playbook(pb, "-vvv", "--diff", localhost=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for secret in (conn["password"], spec["app_password"]):
        assert secret not in proc.stdout + proc.stderr
    assert "PASSWORD '********'" in proc.stdout


def test_iam_login_role_has_rds_iam_and_only_the_app_users_privileges(env):
    """IAM database authentication: the login role is a member of rds_iam, has no password and holds
    exactly what app_user holds. The embedded server has no rds_iam (RDS creates it on every instance):
    without create_rds_iam_role that is an error naming the fix; with it a NOLOGIN stand-in is made.
    Logging in with an IAM token cannot be tested here: nothing checks tokens locally."""
    spec, conn = dict(env["spec"], iam_user=env["spec"]["app_user"] + "_iam", iam_comment="iam login"), env["conn"]
    had_rds_iam = sql(env["admin_dsn"], "SELECT count(*) FROM pg_roles WHERE rolname = 'rds_iam'", fetch=True)[0][0]
    try:
        if not had_rds_iam:
            with pytest.raises(pg_access.AccessError, match="role rds_iam does not exist on this server"):
                pg_access.converge(conn, spec)
        spec["create_rds_iam_role"] = True
        planned = pg_access.converge(conn, spec, check_mode=True)
        assert any(q == f'GRANT "rds_iam" TO "{spec["iam_user"]}"' for q in planned["queries"]), planned["queries"]
        pg_access.converge(conn, spec)
        sql(env["db_dsn"](), "CREATE TABLE t_iam (id int)", f'ALTER TABLE t_iam OWNER TO "{spec["owner"]}"')
        assert pg_access.converge(conn, spec)["changed"]  # the new table's direct grants to the IAM login, revoked
        again = pg_access.converge(conn, spec)
        assert not again["changed"], again["queries"]
        iam, app = spec["iam_user"], spec["app_user"]
        row = sql(env["admin_dsn"], f"""
            SELECT r.rolcanlogin, r.rolsuper OR r.rolcreatedb OR r.rolcreaterole, a.rolpassword IS NULL,
                   pg_has_role('{iam}', 'rds_iam', 'MEMBER'), r.rolconnlimit,
                   (SELECT setconfig FROM pg_db_role_setting WHERE setrole = r.oid),
                   (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rds_iam')
              FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = '{iam}'""", fetch=True)[0]
        assert row == (True, False, True, True, 20, ["statement_timeout=30s"], False)
        privs = """SELECT has_database_privilege('{r}', current_database(), 'CONNECT'),
                          has_database_privilege('{r}', current_database(), 'CREATE'),
                          has_schema_privilege('{r}', 'public', 'CREATE'),
                          has_table_privilege('{r}', 't_iam', 'SELECT, INSERT, UPDATE, DELETE'),
                          has_table_privilege('{r}', 't_iam', 'TRUNCATE'),
                          has_table_privilege('{r}', 't_iam', 'REFERENCES')"""
        got = {r: sql(env["db_dsn"](), privs.format(r=r), fetch=True)[0] for r in (iam, app)}
        assert got[iam] == got[app] == (True, False, False, True, False, False)
    finally:
        sql(env["admin_dsn"], f'DROP DATABASE IF EXISTS "{spec["name"]}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{spec["iam_user"]}"')
        if not had_rds_iam:
            sql(env["admin_dsn"], "DROP ROLE IF EXISTS rds_iam")
