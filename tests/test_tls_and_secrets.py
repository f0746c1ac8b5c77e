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
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg2
import pytest

from conftest import REPO_ROOT, make_dsn
from playbook_runner import recap, run_playbook

URL_NAME = "/ndis-chatbot/local/DATABASE_URL"
MASTER_NAME = "/ndis-chatbot/local/rds/master_password"
PROJECT_KEY = "alias/ndis-chatbot-local-test"

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
    ca = converged["tls"]["ca_file"]
    assert redact(url) == (f"postgres://app_user:***@127.0.0.1:{converged['tls']['port']}/ndis_chatbot"
                           f"?sslmode=verify-full&sslrootcert={ca}")
    conn = app_connect(url)  # verify-full against the stack's CA: the certificate names 127.0.0.1
    assert conn.info.ssl_in_use and conn.info.ssl_attribute("protocol").startswith("TLSv1.")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_user"
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
    db = make_dsn(converged, "ndis_chatbot")
    by_hand = [
        "REVOKE SELECT, UPDATE ON embeddings FROM app_user",
        "GRANT TRUNCATE ON embeddings TO app_user",
        "GRANT CREATE ON SCHEMA public TO PUBLIC",
        "REVOKE CONNECT ON DATABASE ndis_chatbot FROM app_user",
        "ALTER DEFAULT PRIVILEGES FOR ROLE ndis_chatbot_owner IN SCHEMA public REVOKE INSERT ON TABLES FROM app_user",
        "REVOKE SELECT ON embeddings FROM ndis_chatbot_readonly",
        "ALTER ROLE app_user CONNECTION LIMIT 3",
    ]
    checks = """
        SELECT has_table_privilege('app_user', 'embeddings', 'SELECT, INSERT, UPDATE, DELETE')
                 AND has_table_privilege('app_user', 'embeddings', 'SELECT')
                 AND has_table_privilege('app_user', 'embeddings', 'UPDATE'),
               has_table_privilege('app_user', 'embeddings', 'TRUNCATE'),
               has_schema_privilege('public', 'public', 'CREATE'),
               has_database_privilege('app_user', 'ndis_chatbot', 'CONNECT'),
               (SELECT count(*) FROM pg_default_acl d
                 WHERE d.defaclrole = 'ndis_chatbot_owner'::regrole AND d.defaclobjtype = 'r'
                   AND array_to_string(d.defaclacl, ',') ~ 'app_user=arwd/'),
               has_table_privilege('ndis_chatbot_readonly', 'embeddings', 'SELECT'),
               (SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app_user')
    """
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(checks)
        assert cur.fetchone() == (True, False, False, True, 1, True, 50)
        for statement in by_hand:
            cur.execute(statement)
        cur.execute(checks)
        assert cur.fetchone() == (False, True, True, False, 0, False, 3)
    conn.close()
    proc = run(converged, sandbox, "converge grants", "--tags", "postgres_db")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 1  # ndis.dbops.pg_database converges all of it in one task
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(checks)
        assert cur.fetchone() == (True, False, False, True, 1, True, 50)
    conn.close()


# --- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("label,args,message", [
    ("short supplied admin password", ["-e", "rds_instance_master_password=Short1234567"],
     "the supplied admin password (dbadmin) has fewer than 16 characters"),
    ("ssm name without /", ["-e", "ssm_secret_parameter_name=ndis-chatbot/local/DATABASE_URL"],
     "the parameter name must start with / (got 'ndis-chatbot/local/DATABASE_URL')"),
    ("kms key that does not exist", ["-e", "ssm_secret_kms_key_id=alias/no-such-key"],
     "KMS key alias/no-such-key does not exist in ap-southeast-2"),
    ("app user is the admin", ["-e", "app_db_user=dbadmin"],
     "the app user (dbadmin) must not be the admin (dbadmin)"),
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
    proc = run(converged, sandbox, "rotate --check", "--check", playbook="playbooks/rotate_app_password.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Would rotate the password of app_user" in proc.stdout
    assert recap(proc.stdout)["changed"] == 1
    assert state(converged, boto3_client) == before
    app_connect(url).close()


@pytest.fixture(scope="module")
def project_key_rotation(converged, boto3_client, sandbox):
    """One rotation that creates the project's KMS key (PROJECT_KEY) and stores the URL with it, recorded once for
    the tests that need it, in whatever order they run: (URL before, URL after, the run)."""
    old = stored_url(boto3_client)
    proc = run(converged, sandbox, "rotate (project key)", "-e",
               f'{{"ssm_secret_kms_key_create": true, "ssm_secret_kms_key_id": "{PROJECT_KEY}"}}',
               playbook="playbooks/rotate_app_password.yml")
    # the parameter's key as the rotation left it: a later site run stores the URL with the inventory's key again
    meta = boto3_client("ssm").describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [URL_NAME]}])["Parameters"][0]
    return old, stored_url(boto3_client), proc, meta


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
    extra.write_text(f"ssm_secret_new_app_password: {attempted}\nssm_secret_kms_key_id: {PROJECT_KEY}\n")
    kms.disable_key(KeyId=key_id)
    try:
        proc = run(converged, sandbox, "rotate with a disabled key (fails)", "-e", f"@{extra}",
                   playbook="playbooks/rotate_app_password.yml")
    finally:
        kms.enable_key(KeyId=key_id)
    return before, stored_url(boto3_client), proc, attempted


def test_rotation_sets_db_then_ssm_and_logs_in(project_key_rotation, boto3_client):
    old, new, proc, meta = project_key_rotation
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert new["Version"] == old["Version"] + 1
    assert len(url_password(new["Value"])) == 32
    assert url_password(new["Value"]) != url_password(old["Value"]), "the password did not change"
    assert f"is now version {new['Version']} and logs in" in proc.stdout
    app_connect(new["Value"]).close()
    with pytest.raises(psycopg2.OperationalError):
        app_connect(old["Value"])
    # the project key was created, tagged, and encrypts the parameter
    kms = boto3_client("kms")
    key = kms.describe_key(KeyId=PROJECT_KEY)["KeyMetadata"]
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]}
    assert tags == {"app": "ndis-chatbot", "env": "local"}
    assert meta["KeyId"] == PROJECT_KEY and meta["Type"] == "SecureString"


def test_failed_ssm_write_puts_the_old_password_back(failed_rotation):
    before, after, proc, attempted = failed_rotation
    assert proc.returncode != 0
    assert "failed at 'store | Store DATABASE_URL as a SecureString'" in proc.stdout, proc.stdout[-4000:]
    assert "SSM still holds the old password, and the old password was put back in the database" in proc.stdout
    assert recap(proc.stdout)["rescued"] == 1
    assert after["Version"] == before["Version"]
    assert after["Value"] == before["Value"], "SSM no longer holds the old URL"
    app_connect(after["Value"]).close()  # nobody is locked out
    with pytest.raises(psycopg2.OperationalError):
        app_connect(after["Value"].replace(url_password(after["Value"]), attempted))


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
    proc = run(converged, sandbox, "master to managed", "--tags", "rds_instance,postgres_db")
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
    proc = run(converged, sandbox, "iam off", "--tags", "rds_instance")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert instance_of(boto3_client)["IAMDatabaseAuthenticationEnabled"] is False


# --- the leak test ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def site_after_rotation(project_key_rotation, converged, sandbox):
    """site.yml, then verify.yml, after the rotation with the project key: (site run, verify run)."""
    return run(converged, sandbox, "site"), run(converged, sandbox, "verify", playbook="playbooks/verify.yml")


def test_site_and_verify_after_rotation(site_after_rotation):
    site, verify = site_after_rotation
    assert site.returncode == 0, site.stdout[-4000:]
    assert re.search(r"PASS\s+App connects as app_user, not the admin\s+user app_user, over TLSv1\.\d \(sslmode=verify-full\)",
                     site.stdout)
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
    for needed in ("site", "verify", "rotate (project key)", "rotate with a disabled key (fails)"):
        assert needed in labels, labels
    hits = leak_hits(converged, boto3_client, sandbox)
    assert not hits, "a password appeared in: " + ", ".join(hits)
    # the scope really was searched: the sandbox holds Ansible's log and temp dirs
    assert (sandbox / "ansible.log").stat().st_size > 0
