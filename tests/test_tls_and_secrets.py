"""TLS, grants, rotation, bad input and the leak test, against the pytest local stack.

The first fixture converges the site on the session stack, unless a module before it did
(tests/test_site.py has a stack of its own). Every ansible-playbook run here uses -vvv --diff with HOME,
ANSIBLE_LOCAL_TEMP, ANSIBLE_REMOTE_TEMP and ANSIBLE_LOG_PATH inside one sandbox directory;
the leak test searches all their output and every file they wrote for every password, and searches again
when the module ends (its tests run in any order). Runs several tests need (the rotation with the project key,
the failed rotation, site and verify after it) are module fixtures, recorded once whichever test comes first.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg2
import pytest
import test_tls_drivers as driver_checks

from conftest import REPO_ROOT, execute, make_dsn
from playbook_runner import changed_tasks, recap, run_playbook

node_pg = driver_checks.node_pg  # the fixture: node-postgres from the committed lock file
drivers = driver_checks.drivers

URL_NAME = "/ndis-chatbot/local/DATABASE_URL"
MASTER_NAME = "/ndis-chatbot/local/rds/master_password"
PROJECT_KEY = "alias/ndis-chatbot-local-test"
ALTERNATE = {"app_user": "app_user_clone", "app_user_clone": "app_user"}  # the app's two logins
ROTATE = "playbooks/rotate_app_password.yml"
NO_WAIT = ("-e", "rotate_app_password_min_hours=0")  # the tests rotate minutes apart
REFUSED = "password authentication failed|SASL authentication failed"  # the server's words, and the TLS endpoint's
NO_LOGIN = "not permitted to log in|no such user"  # a NOLOGIN role: the server's words, and the TLS endpoint's


def logs_in(url: str) -> str:
    """'ok', or the first line of the error: recorded in fixtures right after a run (later tests change passwords)."""
    try:
        app_connect(url).close()
        return "ok"
    except psycopg2.Error as e:
        return str(e).strip().splitlines()[0]

# (label, stdout+stderr) of every run, and passwords known only to the test (supplied ones)
RUNS: list[tuple[str, str]] = []
SUPPLIED: list[str] = []
STARTED = time.time()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ansible-sandbox")
    for sub in ("home", "local_tmp", "remote_tmp"):
        (root / sub).mkdir()
    return root


def run(local_stack, sandbox: Path, label: str, *args: str, playbook: str = "site.yml"):
    proc = run_playbook(playbook, "-vvv", "--diff", *args, stack=local_stack, env={
        "HOME": sandbox / "home",
        "ANSIBLE_HOME": sandbox / "home" / ".ansible",
        "ANSIBLE_LOCAL_TEMP": sandbox / "local_tmp",
        "ANSIBLE_REMOTE_TEMP": sandbox / "remote_tmp",
        "ANSIBLE_LOG_PATH": sandbox / "ansible.log",
    })
    RUNS.append((label, proc.stdout + proc.stderr))
    return proc


def stored_url(boto3_client) -> dict:
    return boto3_client("ssm").get_parameter(Name=URL_NAME, WithDecryption=True)["Parameter"]


def url_password(url: str) -> str:
    return re.match(r"postgres://[^:]+:([^@]+)@", url).group(1)


def url_login(url: str) -> str:
    user = re.match(r"postgres://([^:]+):", url).group(1)
    assert user in ALTERNATE, user
    return user


def redact(url: str) -> str:
    """The URL without its password, for assertions (pytest prints compared values)."""
    return re.sub(r"(postgres://[^:]+:)[^@]+@", r"\1***@", url)


def state(local_stack, boto3_client) -> dict:
    """What a rejected run must leave as it was."""
    with psycopg2.connect(make_dsn(local_stack, "postgres")) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolname, rolconnlimit, coalesce(rolpassword, '') FROM pg_authid"
                    " WHERE rolname !~ '^pg_' ORDER BY 1")
        roles = cur.fetchall()
        cur.execute("SELECT datname, coalesce(datacl::text, '') FROM pg_database ORDER BY 1")
        databases = cur.fetchall()
    conn.close()
    ssm, kms = boto3_client("ssm"), boto3_client("kms")
    return {
        "roles": roles,
        "databases": databases,
        "parameters": sorted((p["Name"], p["Version"]) for p in ssm.describe_parameters()["Parameters"]),
        "keys": sorted(k["KeyId"] for k in kms.list_keys()["Keys"]),
        "aliases": sorted(a["AliasName"] for a in kms.list_aliases()["Aliases"]),
    }


def app_connect(url: str, **overrides):
    return psycopg2.connect(url, connect_timeout=10, **overrides)


class AppLoop:
    """An app that keeps the URL it read: a new connection (and SELECT 1) every 0.2 s, from a thread, until stopped.
    Counts the logins that worked and keeps the errors of those that did not."""

    def __init__(self, url: str, every: float = 0.2):
        self.url, self.every, self.ok, self.failures = url, every, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                conn = psycopg2.connect(self.url, connect_timeout=5)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.close()
                self.ok += 1
            except psycopg2.Error as e:
                self.failures.append(str(e).strip().splitlines()[0])
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def converged(local_stack, boto3_client, sandbox):
    names = [p["Name"] for p in boto3_client("ssm").describe_parameters()["Parameters"]]
    if URL_NAME not in names:
        proc = run(local_stack, sandbox, "converge")
        assert proc.returncode == 0, proc.stdout[-4000:]
    return local_stack


# --- TLS --------------------------------------------------------------------------------
def test_stored_url_connects_over_tls_and_plain_is_refused(converged, boto3_client):
    url = stored_url(boto3_client)["Value"]
    ca, user = converged["tls"]["ca_file"], url_login(url)  # either login: a rotation moves the URL between them
    assert redact(url) == (f"postgres://{user}:***@127.0.0.1:{converged['tls']['port']}/ndis_chatbot"
                           f"?sslmode=verify-full&sslrootcert={ca}")
    conn = app_connect(url)  # verify-full against the stack's CA: the certificate names 127.0.0.1
    assert conn.info.ssl_in_use and conn.info.ssl_attribute("protocol").startswith("TLSv1.")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == user
    conn.close()
    # as rds.force_ssl=1: a client without TLS is refused, whoever it is
    for dsn in (url.split("?")[0] + "?sslmode=disable",
                make_dsn(converged, "postgres").replace(f"port={converged['pg']['port']}",
                                                       f"port={converged['tls']['port']}") + " sslmode=disable"):
        with pytest.raises(psycopg2.OperationalError, match="SSL required"):
            app_connect(dsn)


def test_require_option_writes_the_runbooks_url_and_warns(converged, boto3_client, sandbox):
    proc = run(converged, sandbox, "secrets require", "--tags", "ssm_secret", "-e", "ssm_secret_sslmode=require")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "ssm_secret_sslmode is require" in proc.stdout and "NODE_EXTRA_CA_CERTS" in proc.stdout
    url = stored_url(boto3_client)["Value"]
    assert redact(url).endswith("/ndis_chatbot?sslmode=require")  # the runbook's URL, no bundle
    conn = app_connect(url)  # libpq encrypts and checks nothing
    assert conn.info.ssl_in_use
    conn.close()
    proc = run(converged, sandbox, "secrets verify-full", "--tags", "ssm_secret")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "sslmode=verify-full&sslrootcert=" in redact(stored_url(boto3_client)["Value"])


def test_bundle_path_must_be_absolute_for_verify_modes(converged, boto3_client, sandbox):
    before = state(converged, boto3_client)
    proc = run(converged, sandbox, "bad input: relative bundle", "-e", "ssm_secret_sslrootcert=rds-bundle.pem")
    assert proc.returncode != 0
    assert "needs ssm_secret_sslrootcert, the absolute path of the RDS CA bundle on the app host" in proc.stdout
    assert state(converged, boto3_client) == before


# --- grants converge --------------------------------------------------------------------
def test_grants_removed_or_added_by_hand_are_converged(converged, sandbox):
    """The app group holds the app's privileges, the logins none of their own: drift on the group, a privilege
    granted to one login directly, the readonly role, PUBLIC and the history table is all put right in one task."""
    db = make_dsn(converged, "ndis_chatbot")
    by_hand = [
        "REVOKE SELECT, UPDATE ON embeddings FROM ndis_chatbot_app",
        "GRANT TRUNCATE ON embeddings TO app_user_clone",
        "GRANT CREATE ON SCHEMA public TO PUBLIC",
        "REVOKE CONNECT ON DATABASE ndis_chatbot FROM ndis_chatbot_app",
        "ALTER DEFAULT PRIVILEGES FOR ROLE ndis_chatbot_owner IN SCHEMA public REVOKE INSERT ON TABLES FROM ndis_chatbot_app",
        "REVOKE SELECT ON embeddings FROM ndis_chatbot_readonly",
        "ALTER ROLE app_user CONNECTION LIMIT 3",
        "GRANT SELECT ON schema_migrations TO ndis_chatbot_app",
    ]
    checks = """
        SELECT has_table_privilege('app_user', 'embeddings', 'SELECT, INSERT, UPDATE, DELETE')
                 AND has_table_privilege('app_user', 'embeddings', 'SELECT')
                 AND has_table_privilege('app_user', 'embeddings', 'UPDATE'),
               has_table_privilege('app_user_clone', 'embeddings', 'SELECT')
                 AND has_table_privilege('app_user_clone', 'embeddings', 'UPDATE'),
               has_table_privilege('app_user_clone', 'embeddings', 'TRUNCATE'),
               has_schema_privilege('public', 'public', 'CREATE'),
               has_database_privilege('app_user', 'ndis_chatbot', 'CONNECT'),
               (SELECT count(*) FROM pg_default_acl d
                 WHERE d.defaclrole = 'ndis_chatbot_owner'::regrole AND d.defaclobjtype = 'r'
                   AND array_to_string(d.defaclacl, ',') ~ 'ndis_chatbot_app=arwd/'),
               has_table_privilege('ndis_chatbot_readonly', 'embeddings', 'SELECT'),
               (SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app_user'),
               has_table_privilege('app_user_clone', 'schema_migrations', 'SELECT')
    """
    assert execute(db, checks)[0] == (True, True, False, False, True, 1, True, 50, False)
    execute(db, *by_hand)
    assert execute(db, checks)[0] == (False, False, True, True, False, 0, False, 3, True)
    proc = run(converged, sandbox, "converge grants", "--tags", "postgres_db")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 1  # ndis.dbops.pg_database converges all of it in one task
    assert execute(db, checks)[0] == (True, True, False, False, True, 1, True, 50, False)


# --- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("label,args,message", [
    ("short supplied admin password", ["-e", "rds_instance_master_password=Short1234567"],
     "the supplied admin password (dbadmin) has fewer than 16 characters"),
    ("ssm name without /", ["-e", "ssm_secret_parameter_name=ndis-chatbot/local/DATABASE_URL"],
     "the parameter name must start with / (got 'ndis-chatbot/local/DATABASE_URL')"),
    ("kms key that does not exist", ["-e", "ssm_secret_kms_key_id=alias/no-such-key"],
     "KMS key alias/no-such-key does not exist in ap-southeast-2"),
    ("app user is the admin", ["-e", "app_db_user=dbadmin"],
     "the app user (dbadmin) and its alternate (dbadmin_clone) must not be the admin (dbadmin)"),
    ("short supplied app password", ["-e", "ssm_secret_new_app_password=Short1234567"],
     "the supplied app password (ssm_secret_new_app_password) has fewer than 16 characters"),
    ("hostile app user name", ["-e", json.dumps({"app_db_user": 'app"; DROP TABLE embeddings; --'})],
     "(postgres_db_app_user, from app_db_user) is not a plain PostgreSQL identifier"),
    ("reserved database name, check mode", ["--check", "-e", "app_db_name=select"],
     "(postgres_db_name, from app_db_name) is not a plain PostgreSQL identifier"),
    ("derived role name too long", ["-e", "app_db_name=" + "n" * 60],
     "(postgres_db_owner_role, <database>_owner) is not a plain PostgreSQL identifier"),
])
def test_bad_input_is_rejected_before_any_change(converged, boto3_client, sandbox, label, args, message):
    before = state(converged, boto3_client)
    playbook = "playbooks/rotate_app_password.yml" if "app password" in label else "site.yml"
    proc = run(converged, sandbox, f"bad input: {label}", *args, playbook=playbook)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert "Nothing was changed." in proc.stdout
    assert recap(proc.stdout)["changed"] == 0
    assert state(converged, boto3_client) == before


# --- rotation ---------------------------------------------------------------------------
def test_rotation_in_check_mode_changes_nothing(converged, boto3_client, sandbox):
    before, url = state(converged, boto3_client), stored_url(boto3_client)["Value"]
    proc = run(converged, sandbox, "rotate --check", "--check", *NO_WAIT, playbook=ROTATE)
    assert proc.returncode == 0, proc.stdout[-4000:]
    other = ALTERNATE[url_login(url)]
    assert f"Would set a new password on {other} (the login /ndis-chatbot/local/DATABASE_URL does not use)" in proc.stdout
    assert f"The current URL ({url_login(url)}) would keep working until the next rotation" in proc.stdout
    assert recap(proc.stdout)["changed"] == 1
    assert state(converged, boto3_client) == before
    app_connect(url).close()


@pytest.fixture(scope="module")
def project_key_rotation(converged, boto3_client, sandbox):
    """One rotation that creates the project's KMS key (PROJECT_KEY) and stores the URL with it, while an app that
    keeps the URL it read before opens a new connection every 0.2 s, through the rotation and for 20 s after it.
    Recorded once for the tests that need it, in whatever order they run: (URL before, URL after, the run, the
    parameter's metadata as the rotation left it, the app's loop)."""
    old = stored_url(boto3_client)
    with AppLoop(old["Value"]) as loop:
        proc = run(converged, sandbox, "rotate (project key)", *NO_WAIT, "-e",
                   f'{{"ssm_secret_kms_key_create": true, "ssm_secret_kms_key_id": "{PROJECT_KEY}"}}', playbook=ROTATE)
        time.sleep(20)
    # the parameter's key as the rotation left it: a later site run stores the URL with the inventory's key again
    meta = boto3_client("ssm").describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [URL_NAME]}])["Parameters"][0]
    new = stored_url(boto3_client)
    meta["logins"] = {"new": logs_in(new["Value"]), "old": logs_in(old["Value"])}
    return old, new, proc, meta, loop


@pytest.fixture(scope="module")
def second_rotation(project_key_rotation, converged, boto3_client, sandbox):
    """The next rotation (the inventory's key): the URL moves back to the first login. (URL before, URL after, run)."""
    before = stored_url(boto3_client)
    first = project_key_rotation[0]["Value"]
    proc = run(converged, sandbox, "rotate (second)", *NO_WAIT, playbook=ROTATE)
    after = stored_url(boto3_client)
    logins = {"first": logs_in(first), "before": logs_in(before["Value"]), "after": logs_in(after["Value"])}
    return before, after, proc, logins


@pytest.fixture(scope="module")
def failed_rotation(project_key_rotation, converged, boto3_client, sandbox, tmp_path_factory):
    """A rotation whose SSM write fails for real: the project key is disabled, and moto (patch 5 in
    dbops/moto_server.py) refuses a SecureString with a disabled key, as AWS does. (URL before, URL after, the run,
    the password it tried.)"""
    kms = boto3_client("kms")
    key_id = kms.describe_key(KeyId=PROJECT_KEY)["KeyMetadata"]["KeyId"]
    before = stored_url(boto3_client)
    attempted = "Attempt" + "x" * 18 + "Rotate9"  # supplied, so the leak test can search for it too
    SUPPLIED.append(attempted)
    extra = tmp_path_factory.mktemp("failed-rotation") / "vars.yml"
    extra.write_text(f"ssm_secret_new_app_password: {attempted}\nssm_secret_kms_key_id: {PROJECT_KEY}\n"
                     "rotate_app_password_min_hours: 0\n")
    kms.disable_key(KeyId=key_id)
    try:
        proc = run(converged, sandbox, "rotate with a disabled key (fails)", "-e", f"@{extra}", playbook=ROTATE)
    finally:
        kms.enable_key(KeyId=key_id)
    after = stored_url(boto3_client)
    login, other = url_login(after["Value"]), ALTERNATE[url_login(after["Value"])]
    attempted_url = after["Value"].replace(url_password(after["Value"]), attempted).replace(f"//{login}:", f"//{other}:")
    logins = {"stored": logs_in(after["Value"]), "attempted": logs_in(attempted_url)}
    return before, after, proc, logins


def test_rotation_changes_the_other_login_and_the_cached_url_keeps_working(project_key_rotation, boto3_client):
    old, new, proc, meta, loop = project_key_rotation
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert new["Version"] == old["Version"] + 1
    assert len(url_password(new["Value"])) == 32
    assert url_password(new["Value"]) != url_password(old["Value"]), "the password did not change"
    before, after = url_login(old["Value"]), url_login(new["Value"])
    assert after == ALTERNATE[before], "the rotation did not move the URL to the other login"
    assert f"is now version {new['Version']}, logs in as {after}" in proc.stdout
    assert re.search(rf"The previous URL \({before}\) keeps working until the next rotation changes its password, "
                     r"due \d{4}-\d\d-\d\d \d\d:\d\d UTC \(every 30 d\)", proc.stdout), proc.stdout[-2000:]
    assert meta["logins"] == {"new": "ok", "old": "ok"}  # right after the rotation, the URL an app cached still logs in
    # the app that kept its URL through the rotation and 20 s after: every login worked
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok >= 100, loop.ok
    # the project key was created, tagged, and encrypts the parameter
    kms = boto3_client("kms")
    key = kms.describe_key(KeyId=PROJECT_KEY)["KeyMetadata"]
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]}
    assert tags == {"app": "ndis-chatbot", "env": "local"}
    assert meta["KeyId"] == PROJECT_KEY and meta["Type"] == "SecureString"


def test_a_second_rotation_right_after_is_refused(project_key_rotation, converged, boto3_client, sandbox):
    """Without NO_WAIT, minutes after a rotation: apps may still hold the URL it replaced, so nothing changes."""
    before = state(converged, boto3_client)
    proc = run(converged, sandbox, "rotate too soon (refused)", playbook=ROTATE)
    assert proc.returncode != 0
    assert "less than rotate_app_password_min_hours (2 h): apps may still hold the URL it replaced" in proc.stdout
    assert "Nothing was changed." in proc.stdout and recap(proc.stdout)["changed"] == 0
    assert state(converged, boto3_client) == before


def test_the_second_rotation_retires_the_first_url(project_key_rotation, second_rotation, boto3_client, node_pg):
    first = project_key_rotation[0]["Value"]
    before, after, proc, logins = second_rotation
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert url_login(after["Value"]) == url_login(first) == ALTERNATE[url_login(before["Value"])]
    # two rotations back, the first URL's password was changed; the URL it replaced keeps working
    assert re.search(REFUSED, logins["first"]) and logins["before"] == logins["after"] == "ok", logins
    # the stored URL (this rotation's, or a later one's) logs in through every driver an app might use
    after = stored_url(boto3_client)
    results = {name: connect(after["Value"]) for name, connect in drivers(node_pg).items()}
    assert len(results) >= 4
    assert results == {name: ("ok", url_login(after["Value"]), True) for name in results}
    for url in (after["Value"],):  # the app's login: DML yes, DDL and the history table no
        conn = app_connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM embeddings")
            for statement in ("CREATE TABLE t (id int)", "TRUNCATE embeddings", "SELECT * FROM schema_migrations",
                              "DELETE FROM schema_migrations"):
                with pytest.raises(psycopg2.Error) as failure:
                    cur.execute(statement)
                assert failure.value.pgcode == "42501", statement
        conn.close()


def test_revoke_locks_the_leaked_url_out_at_once(second_rotation, converged, boto3_client, sandbox):
    leaked = stored_url(boto3_client)["Value"]
    held = app_connect(leaked)  # a session opened with the leaked URL
    proc = run(converged, sandbox, "rotate (revoke)", "-e", "rotate_revoke=true", playbook=ROTATE)
    assert proc.returncode == 0, proc.stdout[-4000:]
    new = stored_url(boto3_client)["Value"]
    assert url_login(new) == ALTERNATE[url_login(leaked)]
    assert f"Revoked {url_login(leaked)}: its password is gone and its sessions ended" in proc.stdout
    assert "locked out until they read /ndis-chatbot/local/DATABASE_URL again" in proc.stdout
    with pytest.raises(psycopg2.OperationalError, match=REFUSED):
        app_connect(leaked)
    with pytest.raises(psycopg2.Error):  # its session ended
        with held.cursor() as cur:
            cur.execute("SELECT 1")
    held.close()
    app_connect(new).close()


def test_failed_ssm_write_leaves_the_stored_url_working(failed_rotation):
    before, after, proc, logins = failed_rotation
    assert proc.returncode != 0
    assert "failed at 'store | Store DATABASE_URL as a SecureString'" in proc.stdout, proc.stdout[-4000:]
    login, other = url_login(before["Value"]), ALTERNATE[url_login(before["Value"])]
    assert f"SSM still holds the previous URL, which logs in as {login} (untouched), and the new password of {other} " \
           "was removed" in proc.stdout
    assert recap(proc.stdout)["rescued"] == 1
    assert after["Version"] == before["Version"]
    assert after["Value"] == before["Value"], "SSM no longer holds the URL it had"
    # right after: nobody is locked out, and the other login's new password (never stored) was removed
    assert logins["stored"] == "ok" and re.search(REFUSED, logins["attempted"]), logins


def test_renamed_app_user_leaves_no_login_behind(converged, boto3_client, sandbox):
    """app_db_user renamed and back: each time the logins the inventory no longer names are retired (no LOGIN, out
    of the app group, no privileges), and the stored URL moves to the new name and logs in."""
    db = make_dsn(converged, "ndis_chatbot")
    roles = """SELECT rolname, rolcanlogin, pg_has_role(rolname, 'ndis_chatbot_app', 'MEMBER'),
                      has_table_privilege(rolname, 'embeddings', 'SELECT')
                 FROM pg_roles WHERE rolname ~ '^app_(user|renamed)(_clone)?$' ORDER BY 1"""
    old = stored_url(boto3_client)["Value"]
    proc = run(converged, sandbox, "rename app user", "--tags", "postgres_db,ssm_secret", "-e", "app_db_user=app_renamed")
    try:
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert "Retired app_user, app_user_clone: the declaration no longer names them" in proc.stdout
        renamed = stored_url(boto3_client)["Value"]
        assert redact(renamed).startswith("postgres://app_renamed:***@")
        app_connect(renamed).close()
        with pytest.raises(psycopg2.OperationalError, match=NO_LOGIN):
            app_connect(old)
        assert execute(db, roles) == [("app_renamed", True, True, True), ("app_renamed_clone", True, True, True),
                                      ("app_user", False, False, False), ("app_user_clone", False, False, False)]
    finally:
        back = run(converged, sandbox, "rename app user back", "--tags", "postgres_db,ssm_secret")
    assert back.returncode == 0, back.stdout[-4000:]
    assert "Retired app_renamed, app_renamed_clone" in back.stdout
    assert execute(db, roles) == [("app_renamed", False, False, False), ("app_renamed_clone", False, False, False),
                                  ("app_user", True, True, True), ("app_user_clone", True, True, True)]
    url = stored_url(boto3_client)["Value"]
    assert url_login(url) == "app_user"
    app_connect(url).close()


def test_the_rotation_schedule_runs_the_playbook_only_when_due(converged, boto3_client):
    """The schedule site.yml rendered for the runner (here into the stack directory, checked, not installed): a daily
    timer or cron entry running the rotation with rotate_when_due. Run as cron would run it, on a URL written minutes
    ago it changes nothing."""
    runner = Path(converged["dir"]) / "runner"
    assert "OnCalendar=*-*-* 17:30:00 UTC" in (runner / "ndis-dbops-rotate.timer").read_text()
    service = (runner / "ndis-dbops-rotate.service").read_text()
    assert "playbooks/rotate_app_password.yml --limit ndis-chatbot-local --extra-vars rotate_when_due=true" in service
    cron = [line for line in (runner / "ndis-dbops-rotate.cron").read_text().splitlines() if line.startswith("30 17 * * * ")]
    assert len(cron) == 1, cron
    before = stored_url(boto3_client)
    proc = subprocess.run(cron[0].split(" root ", 1)[1], shell=True, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "HOME": str(runner)})
    RUNS.append(("rotate when due (cron's command)", proc.stdout + proc.stderr))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"Not due: /ndis-chatbot/local/DATABASE_URL was written [\d.]+ h ago; the next rotation is due "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d UTC \(every 30 d\)\. Nothing was changed\.", proc.stdout), proc.stdout[-2000:]
    assert recap(proc.stdout)["changed"] == 0
    assert stored_url(boto3_client)["Version"] == before["Version"]


def test_both_logins_must_get_the_same_search_settings(converged, sandbox):
    """Role settings are not inherited: a setting on one login alone (as pgvector_tuning_scope role would store it)
    is a verify FAIL naming it; the database-level setting the tuner stores reaches both."""
    db = make_dsn(converged, "ndis_chatbot")
    execute(db, "ALTER ROLE app_user_clone IN DATABASE ndis_chatbot SET hnsw.ef_search = 33")
    try:
        proc = run(converged, sandbox, "verify with a setting on one login", playbook="playbooks/verify.yml")
    finally:
        execute(db, "ALTER ROLE app_user_clone IN DATABASE ndis_chatbot RESET hnsw.ef_search")
    assert proc.returncode != 0
    summary = "\n".join(re.findall(r"(?:PASS|FAIL)  .*", proc.stdout))
    assert re.search(r"FAIL\s+App logins get the same search settings\s+hnsw.ef_search differ between app_user and "
                     r"app_user_clone", proc.stdout), summary or proc.stdout[-3000:]
    assert "PASS  App connects as app_user or app_user_clone" in proc.stdout, summary


# --- who keeps the master password, IAM authentication -------------------------------------
def instance_of(boto3_client) -> dict:
    return boto3_client("rds").describe_db_instances(DBInstanceIdentifier="ndis-chatbot-local")["DBInstances"][0]


def test_master_password_switches_between_ssm_and_rds_managed(converged, boto3_client, sandbox):
    """Declared the other way, an existing instance switches (classified immediate, no restart), both ways;
    the database roles keep working with the password from wherever it now is."""
    sm, ssm = boto3_client("secretsmanager"), boto3_client("ssm")
    assert "MasterUserSecret" in instance_of(boto3_client)  # the local default: RDS keeps it
    proc = run(converged, sandbox, "master to ssm", "--tags", "rds_instance,postgres_db",
               "-e", "rds_instance_master_password_mode=ssm")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"master_password_mode\s+managed\s+ssm\s+immediate\s+now", proc.stdout)
    assert "MasterUserSecret" not in instance_of(boto3_client)
    kept = ssm.get_parameter(Name=MASTER_NAME, WithDecryption=True)["Parameter"]
    assert kept["Value"] == converged["admin_password"] and kept["Type"] == "SecureString"
    # the dump's schedule names the secret (a new one now): backup_policy renders it again, so the stack is left converged
    proc = run(converged, sandbox, "master to managed", "--tags", "rds_instance,postgres_db,backup_policy")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"master_password_mode\s+ssm\s+managed\s+immediate\s+now", proc.stdout)
    arn = instance_of(boto3_client)["MasterUserSecret"]["SecretArn"]
    assert json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])["password"] == converged["admin_password"]
    assert MASTER_NAME not in [p["Name"] for p in ssm.describe_parameters()["Parameters"]], "a second copy is kept"
    proc = run(converged, sandbox, "master managed again", "--tags", "rds_instance")
    assert proc.returncode == 0 and recap(proc.stdout)["changed"] == 0, proc.stdout[-4000:]


def test_iam_authentication_flag_and_login_role(converged, boto3_client, sandbox):
    """The instance flag (moto), and app_user_iam: member of rds_iam (a local stand-in: the embedded server
    has none), no password, app_user's privileges. A token login cannot be tested here."""
    proc = run(converged, sandbox, "iam on", "--tags", "rds_instance,postgres_db",
               "-e", '{"rds_instance_iam_database_authentication": true}')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"enable_iam_database_authentication\s+False\s+True\s+immediate\s+now\s+no interruption", proc.stdout)
    assert instance_of(boto3_client)["IAMDatabaseAuthenticationEnabled"] is True
    with psycopg2.connect(make_dsn(converged, "ndis_chatbot")) as conn, conn.cursor() as cur:
        checks = """SELECT r.rolcanlogin, pg_has_role(r.rolname, 'rds_iam', 'MEMBER'), a.rolpassword IS NULL,
                           has_table_privilege(r.rolname, 'embeddings', 'SELECT, INSERT, UPDATE, DELETE'),
                           has_table_privilege(r.rolname, 'embeddings', 'TRUNCATE'),
                           has_schema_privilege(r.rolname, 'public', 'CREATE'), r.rolsuper OR r.rolcreaterole
                      FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = %s"""
        cur.execute(checks, ("app_user_iam",))
        assert cur.fetchone() == (True, True, True, True, False, False, False)
    conn.close()
    proc = run(converged, sandbox, "iam off", "--tags", "rds_instance,postgres_db")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert instance_of(boto3_client)["IAMDatabaseAuthenticationEnabled"] is False
    # the IAM login is no longer declared: retired, not left live
    assert "Retired app_user_iam: the declaration no longer names it" in proc.stdout
    with psycopg2.connect(make_dsn(converged, "ndis_chatbot")) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolcanlogin, pg_has_role('app_user_iam', 'ndis_chatbot_app', 'MEMBER') FROM pg_roles"
                    " WHERE rolname = 'app_user_iam'")
        assert cur.fetchone() == (False, False)
    conn.close()


# --- the leak test ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def site_after_rotation(second_rotation, converged, boto3_client, sandbox):
    """After the app rotations (the last with the inventory's key), RDS rotates the managed master password as it does
    on its schedule: a new password on the server and a new version of the secret. Then site.yml, verify.yml and an
    app rotation run; the stack's own master password is put back afterwards. (site run, verify run, rotation run)."""
    sm = boto3_client("secretsmanager")
    arn = instance_of(boto3_client)["MasterUserSecret"]["SecretArn"]
    user = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])["username"]
    rotated = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    admin = make_dsn(converged, "postgres")

    def set_master(password, dsn):
        execute(dsn, f"ALTER ROLE {user} PASSWORD '{password}'")
        sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": user, "password": password}))

    set_master(rotated, admin)
    try:
        runs = (run(converged, sandbox, "site"), run(converged, sandbox, "verify", playbook="playbooks/verify.yml"),
                run(converged, sandbox, "rotate (after RDS rotated the master)", *NO_WAIT, playbook=ROTATE))
    finally:
        set_master(converged["admin_password"], admin.replace(converged["admin_password"], rotated))
    return runs


def test_site_and_verify_after_rotation(site_after_rotation):
    site, verify, rotation = site_after_rotation
    assert site.returncode == 0, site.stdout[-4000:]
    assert recap(site.stdout)["changed"] == 0, changed_tasks(site.stdout)  # a site run after the rotations
    assert rotation.returncode == 0, rotation.stdout[-4000:]  # with the master password RDS set
    assert re.search(r"PASS\s+App connects as app_user or app_user_clone, not the admin\s+user app_user(_clone)?, "
                     r"over TLSv1\.\d \(sslmode=verify-full\)", site.stdout)
    assert re.search(r"PASS\s+App logins get the same search settings\s+app_user and app_user_clone: ", site.stdout)
    assert re.search(r"PASS\s+App's URL verifies the server \(rds-ca-rsa2048-g1\)\s+certificate chains to ", site.stdout)
    assert verify.returncode == 0, verify.stdout[-4000:]
    assert recap(verify.stdout)["changed"] == 0


def every_password(local_stack, boto3_client) -> set[str]:
    """The admin password, every version of every SSM parameter (the master password and each
    app password ever stored: generated ones), and the passwords the tests supplied."""
    ssm, sm = boto3_client("ssm"), boto3_client("secretsmanager")
    found = {local_stack["admin_password"], *SUPPLIED}
    for secret in sm.list_secrets()["SecretList"]:  # the RDS-managed master password, every version
        for version in sm.list_secret_version_ids(SecretId=secret["ARN"])["Versions"]:
            value = sm.get_secret_value(SecretId=secret["ARN"], VersionId=version["VersionId"])["SecretString"]
            found.add(json.loads(value)["password"])
    for p in ssm.describe_parameters()["Parameters"]:
        for v in ssm.get_parameter_history(Name=p["Name"], WithDecryption=True)["Parameters"]:
            value = v["Value"]
            found.add(url_password(value) if value.startswith("postgres://") else value)
    return {s for s in found if len(s) >= 16}


def leak_hits(local_stack, boto3_client, sandbox) -> list[str]:
    """Where any password appears: the output of every run so far, the sandbox, the stack's files (but its
    admin_password file) and every repository file written since the module started."""
    passwords = every_password(local_stack, boto3_client)
    # admin (locally also the master kept in SSM), >= 2 app passwords, the supplied one
    assert len(passwords) >= 4, f"only {len(passwords)} passwords found"
    needles = {}
    for secret in passwords:
        for form in (secret, quote(secret, safe=""), quote_plus(secret)):
            needles[form.encode()] = secret
    hits: list[str] = []
    for label, output in RUNS:
        for needle in needles:
            if needle.decode() in output:
                hits.append(f"output of run '{label}'")
    stack_dir = Path(local_stack["dir"])
    files = [p for p in sandbox.rglob("*") if p.is_file()]
    files += [p for p in stack_dir.rglob("*") if p.is_file() and p.name != "admin_password"]
    files += [p for p in REPO_ROOT.rglob("*")
              if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts and p.stat().st_mtime >= STARTED]
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for needle in needles:
            if needle in data:
                hits.append(str(path))
    return sorted(set(hits))


@pytest.fixture(scope="module")
def searched_again_after_the_module(converged, boto3_client, sandbox):
    """The module's tests run in any order: the runs of those after the leak test are searched when the module ends
    (a hit fails as an error at teardown)."""
    yield
    hits = leak_hits(converged, boto3_client, sandbox)
    assert not hits, "a password appeared in: " + ", ".join(hits)


@pytest.mark.usefixtures("searched_again_after_the_module")
def test_no_password_in_any_output_or_written_file(converged, boto3_client, sandbox, site_after_rotation, failed_rotation):
    labels = [label for label, _ in RUNS]
    for needed in ("site", "verify", "rotate (project key)", "rotate (second)", "rotate with a disabled key (fails)"):
        assert needed in labels, labels
    hits = leak_hits(converged, boto3_client, sandbox)
    assert not hits, "a password appeared in: " + ", ".join(hits)
    # the scope really was searched: the sandbox holds Ansible's log and temp dirs
    assert (sandbox / "ansible.log").stat().st_size > 0
