"""The validate play refuses, before anything changes, a run that names no environment and
values the region's RDS catalogue would refuse.

- The environment guard: site.yml without -l (every environment of inventories/) in check mode
  and for real, and with -l naming two environments: refused by the first task, AWS and the
  catalog unchanged.
- ndis.dbops.rds_preflight case by case: its main() runs in this process with real module args
  against the session stack's moto over HTTP (the project's catalogue patches), one call per case.
- site.yml with bad values, in check mode and for real: every refused value is named with what
  the region offers, the change plan never runs, nothing changed (snapshot of AWS and the catalog).
- The prod inventory's values (group_vars/prod.yml over the role defaults, as the validate task
  passes them) pass against the local stack.
- The pure rules where moto cannot show them (a major past its end of standard support, a class
  that is not Multi-AZ capable) and the reserved words against the embedded PostgreSQL 16.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import uuid

import psycopg2
import pytest
import yaml
from test_site import snapshot

from ansible_collections.ndis.dbops.plugins.module_utils import rds_catalogue as rc
from conftest import REPO_ROOT, make_dsn
from playbook_runner import recap, run_playbook

RUNNING = f"preflight-running-{uuid.uuid4().hex[:6]}"  # an existing instance on 16.10
FRESH = f"preflight-fresh-{uuid.uuid4().hex[:6]}"  # not created: its master user name is checked


@pytest.fixture(scope="module")
def running_instance(boto3_client):
    boto3_client("rds").create_db_instance(
        DBInstanceIdentifier=RUNNING, Engine="postgres", EngineVersion="16.10", DBInstanceClass="db.t4g.medium",
        AllocatedStorage=20, StorageType="gp3", MasterUsername="admin", MasterUserPassword="not-used-locally-1")
    return RUNNING


# --- The environment guard ------------------------------------------------------------------

@pytest.mark.parametrize("mode,limit,message", [
    ("check", None, "This run reaches local (ndis-chatbot-local), prod (ndis-chatbot-prod), "
                  "staging (ndis-chatbot-staging), with no -l."),
    ("real", None, "This run reaches local (ndis-chatbot-local), prod (ndis-chatbot-prod), "
                 "staging (ndis-chatbot-staging), with no -l."),
    ("real", "local,prod", "This run reaches local (ndis-chatbot-local), prod (ndis-chatbot-prod)."),
])
def test_run_that_names_no_environment_is_refused_first(local_stack, boto3_client, mode, limit, message):
    before = snapshot(local_stack, boto3_client)
    proc = run_playbook("site.yml", *(["--check", "--diff"] if mode == "check" else []), stack=local_stack,
                        limit=limit)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert "Nothing was changed." in proc.stdout
    assert "Name one environment: -l local, -l staging or -l prod" in proc.stdout
    assert "add -e deploy_fleet=<env>,<env> naming each" in proc.stdout
    # the guard is the first task: nothing else ran
    tasks = [line for line in proc.stdout.splitlines() if line.startswith("TASK [")]
    assert len(tasks) == 1 and "Refuse a run that does not name its environment" in tasks[0], tasks
    assert snapshot(local_stack, boto3_client) == before


# --- The module, case by case ---------------------------------------------------------------

GOOD = dict(engine_version="16.11", parameter_group_family="postgres16", db_instance_class="db.t4g.medium",
            storage_type="gp3", allocated_storage=20, max_allocated_storage=100, multi_az=False,
            parameters={"rds.force_ssl": 1}, master_username="dbadmin")

# id: (existing instance?, overrides, None when accepted else the substrings of the refusal)
CASES = {
    "good": (False, {}, None),
    "good booleans, negative range, list, formula": (False, {"parameters": {
        "rds.force_ssl": True, "log_min_duration_statement": -1, "max_connections": "{DBInstanceClassMemory/9531392}",
        "shared_preload_libraries": "pg_stat_statements,pg_cron", "log_statement": "ddl"}}, None),
    "good prod shape": (False, {"multi_az": True, "allocated_storage": 50}, None),
    "good gp3 iops at 400 GiB": (False, {"allocated_storage": 400, "iops": 12000}, None),
    "good existing master user not rechecked": (True, {"engine_version": "16.10", "master_username": "admin"}, None),
    "version not offered": (False, {"engine_version": "16.99"},
                            ["engine version 16.99 is not offered in ap-southeast-2",
                             "PostgreSQL 16 versions offered there: 16.9, 16.10, 16.11, 16.14"]),
    "version deprecated": (False, {"engine_version": "16.8"},
                           ["engine version 16.8 is deprecated in ap-southeast-2",
                            "past its end of standard support", "offered: 16.9, 16.10, 16.11, 16.14"]),
    "version not an upgrade target": (True, {"engine_version": "16.9"},
                                      ["engine version 16.9 is not a valid upgrade target from 16.10",
                                       "declare 16.10 to keep it", "valid targets: 16.11, 16.14, 17.7"]),
    "version of another family": (False, {"engine_version": "17.7"},
                                  ["engine version 17.7 needs parameter group family postgres17, not postgres16"]),
    "class not orderable": (False, {"db_instance_class": "db.t4g.hyper"},
                            ["instance class db.t4g.hyper is not orderable for postgres 16.11 in ap-southeast-2",
                             "classes orderable there with gp3: ", "db.t4g.medium"]),
    "storage below the minimum": (False, {"allocated_storage": 10, "max_allocated_storage": 20},
                                  ["allocated_storage 10 GiB is outside gp3's range for db.t4g.medium: 20 to 65536 GiB"]),
    "ceiling above the maximum": (False, {"max_allocated_storage": 70000},
                                  ["max_allocated_storage 70000 GiB is outside gp3's range", "20 to 65536 GiB"]),
    "io1 below its minimum size": (False, {"storage_type": "io1", "allocated_storage": 50, "iops": 1000},
                                   ["allocated_storage 50 GiB is outside io1's range for db.t4g.medium: 100 to 65536 GiB"]),
    "gp3 iops out of range": (False, {"allocated_storage": 400, "iops": 5000},
                              ["iops 5000 is outside gp3's range on db.t4g.medium: 12000 to 64000"]),
    "iops on gp2": (False, {"storage_type": "gp2", "iops": 3000}, ["iops 3000: gp2 storage on db.t4g.medium has no provisioned IOPS"]),
    "io1 iops per GiB": (False, {"storage_type": "io1", "allocated_storage": 100, "iops": 10000},
                         ["iops 10000 on 100 GiB is 100.00 IOPS per GiB", "at 100 GiB that is 100 to 5000 IOPS"]),
    "parameter unknown": (False, {"parameters": {"no_such_param": 5}},
                          ["parameter no_such_param is not a parameter of family postgres16",
                           "describe-engine-default-parameters --db-parameter-group-family postgres16"]),
    "parameter misspelt": (False, {"parameters": {"log_min_duration_statment": 5}},
                           ["parameter log_min_duration_statment is not a parameter of family postgres16",
                            "did you mean log_min_duration_statement"]),
    "parameter value outside AllowedValues": (False, {"parameters": {"rds.force_ssl": 5}},
                                              ["parameter rds.force_ssl = 5 is not allowed: rds.force_ssl takes 0,1 (boolean)"]),
    "parameter value below its range": (False, {"parameters": {"statement_timeout": -5}},
                                        ["parameter statement_timeout = -5 is not allowed", "takes 0-2147483647 (integer)"]),
    "parameter value with a unit": (False, {"parameters": {"work_mem": "64MB"}},
                                    ["parameter work_mem = 64MB is not allowed", "takes 64-2147483647"]),
    "parameter list item not allowed": (False, {"parameters": {"shared_preload_libraries": "pg_stat_statements,pg_crom"}},
                                        ["shared_preload_libraries = pg_stat_statements,pg_crom: pg_crom is not allowed",
                                         "auto_explain,orafce,pg_cron"]),
    "parameter enum not allowed": (False, {"parameters": {"log_statement": "everything"}},
                                   ["log_statement = everything is not allowed", "takes none,ddl,mod,all"]),
    "parameter not modifiable": (False, {"parameters": {"rds.extensions": "vector"}},
                                 ["parameter rds.extensions cannot be modified in family postgres16"]),
    "master user reserved word": (False, {"master_username": "user"},
                                  ["master user name 'user' is a reserved word of PostgreSQL", "e.g. dbadmin"]),
    "master user admin": (False, {"master_username": "admin"}, ["master user name 'admin' is reserved by RDS for PostgreSQL"]),
    "master user rdsadmin": (False, {"master_username": "rdsadmin"}, ["master user name 'rdsadmin' is reserved by RDS"]),
    "master user pg_": (False, {"master_username": "pg_owner"}, ["'pg_owner' starts with pg_, which PostgreSQL reserves"]),
    "master user too long": (False, {"master_username": "a" * 17},
                             ["RDS needs 1 to 16 letters, digits or underscores, starting with a letter"]),
    "master user starts with a digit": (False, {"master_username": "1admin"}, ["starting with a letter"]),
    "master user with a hyphen": (False, {"master_username": "db-admin"}, ["letters, digits or underscores"]),
}

def run_module(local_stack, args: dict, check_mode: bool = True) -> dict:
    """ndis.dbops.rds_preflight's main() in this process, with real module args, against the
    session stack's moto over HTTP; returns its result (exit_json or fail_json)."""
    from ansible.module_utils.testing import patch_module_args

    from ansible_collections.ndis.dbops.plugins.modules import rds_preflight

    aws = local_stack["aws"]
    full = dict(args, region=aws["region"], endpoint_url=aws["endpoint_url"], access_key=aws["access_key_id"],
                secret_key=aws["secret_access_key"], _ansible_check_mode=check_mode)
    out = io.StringIO()
    with patch_module_args(full), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        rds_preflight.main()
    return json.loads(out.getvalue())


@pytest.mark.parametrize("case_id", list(CASES))
def test_preflight_case(local_stack, running_instance, case_id):
    existing, overrides, expected = CASES[case_id]
    result = run_module(local_stack, {**GOOD, "db_instance_identifier": RUNNING if existing else FRESH, **overrides})
    assert result["changed"] is False
    if expected is None:
        assert not result.get("failed"), result.get("msg")
        assert result["problems"] == []
        assert result["exists"] is existing
        return
    assert result.get("failed"), f"{case_id}: accepted, expected a refusal"
    assert "RDS would refuse" in result["msg"] and "nothing was changed" in result["msg"]
    for text in expected:
        assert text in result["msg"], f"{text!r} not in {result['msg']}"
    assert len(result["problems"]) == 1, result["problems"]  # one bad value, one problem


@pytest.mark.parametrize("declared", ["16", ""])
def test_empty_or_major_only_version_resolves_and_says_which(local_stack, running_instance, declared):
    """A new instance takes the region's default minor; a running one keeps its minor."""
    shown = "empty" if declared == "" else "'16'"
    fresh = run_module(local_stack, {**GOOD, "engine_version": declared, "db_instance_identifier": FRESH})
    assert (fresh["engine_version"], fresh["problems"]) == ("16.11", [])
    assert fresh["engine_version_note"] == f"engine version {shown}: 16.11, the region's default minor for PostgreSQL 16"
    running = run_module(local_stack, {**GOOD, "engine_version": declared, "db_instance_identifier": RUNNING})
    assert (running["engine_version"], running["problems"]) == ("16.10", [])
    assert running["engine_version_note"] == (f"engine version {shown}: keeps 16.10, the version the instance runs "
                                              "(the region's default minor for PostgreSQL 16 is 16.11)")


def test_prod_inventory_values_pass_against_the_local_stack(local_stack):
    """Prod's group_vars over the role defaults, as the validate play passes them."""
    defaults = yaml.safe_load((REPO_ROOT / "roles" / "rds_instance" / "defaults" / "main.yml").read_text())
    prod = yaml.safe_load((REPO_ROOT / "group_vars" / "prod.yml").read_text())
    task = yaml.safe_load((REPO_ROOT / "roles" / "rds_instance" / "tasks" / "validate.yml").read_text())[0]
    args = task["ndis.dbops.rds_preflight"]
    values = {**defaults, **prod}
    resolved = {}
    for option, template in args.items():
        if isinstance(template, str) and template.startswith("{{"):
            resolved[option] = values[template.strip("{} ")]
        else:
            resolved[option] = template
    assert resolved["multi_az"] is True and resolved["allocated_storage"] == 50  # prod's own values
    assert resolved["db_instance_identifier"] == "ndis-chatbot-prod"  # new here: its master user is checked
    result = run_module(local_stack, resolved)
    assert not result.get("failed"), result.get("msg")
    assert result["problems"] == [] and result["engine_version"] == defaults["rds_instance_engine_version"]
    assert "master user name %s" % defaults["rds_instance_master_username"] in result["checked"]


# --- site.yml with bad values, in check mode and for real ------------------------------------

SITE_CASES = {
    # a new instance: version, three parameter problems, master user name, all named at once
    "new instance": (FRESH, {"rds_instance_engine_version": "16.99",
                             "rds_instance_parameters": {"no_such_param": 5, "rds.force_ssl": 5, "rds.extensions": "x"},
                             "rds_instance_master_username": "user"},
                     ["rds_instance_engine_version: engine version 16.99 is not offered in ap-southeast-2; "
                      "PostgreSQL 16 versions offered there: 16.9, 16.10, 16.11, 16.14",
                      "rds_instance_parameters: parameter no_such_param is not a parameter of family postgres16",
                      "rds_instance_parameters: parameter rds.force_ssl = 5 is not allowed: rds.force_ssl takes 0,1",
                      "rds_instance_parameters: parameter rds.extensions cannot be modified",
                      "rds_instance_master_username: master user name 'user' is a reserved word of PostgreSQL",
                      "RDS would refuse these 5 (nothing was changed)"]),
}


@pytest.mark.parametrize("mode", ["check", "real"])
@pytest.mark.parametrize("case_id", list(SITE_CASES))
def test_site_refuses_bad_values_before_any_change(local_stack, boto3_client, tmp_path, case_id, mode):
    identifier, values, expected = SITE_CASES[case_id]
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"rds_instance_identifier": identifier, **values}))
    before = snapshot(local_stack, boto3_client)
    proc = run_playbook("site.yml", "-e", f"@{extra}", *(["--check", "--diff"] if mode == "check" else []),
                        stack=local_stack)
    assert proc.returncode != 0
    output = proc.stdout.replace("\\n", "\n")
    for text in expected:
        assert text in output, f"{text!r} not in output:\n{proc.stdout[-3000:]}"
    assert recap(proc.stdout)["changed"] == 0
    assert "TASK [rds_instance : plan |" not in proc.stdout  # the change plan never saw the refused values
    assert snapshot(local_stack, boto3_client) == before


# --- Pure rules -----------------------------------------------------------------------------

def test_reserved_words_are_postgresql_16s(local_stack):
    conn = psycopg2.connect(make_dsn(local_stack, "postgres"))
    with conn.cursor() as cur:
        cur.execute("SELECT word FROM pg_get_keywords() WHERE catcode = 'R'")
        reserved = {r[0] for r in cur.fetchall()}
        assert reserved == rc.POSTGRES_RESERVED_KEYWORDS
        # what the engine really refuses as a role name, and accepts otherwise
        cur.execute("CREATE ROLE dbadmin_probe_ok NOLOGIN")
        cur.execute("DROP ROLE dbadmin_probe_ok")
        with pytest.raises(psycopg2.errors.SyntaxError):
            cur.execute("CREATE ROLE user NOLOGIN")
    conn.rollback()
    conn.close()
    assert rc.check_master_username("dbadmin") == [] and rc.check_master_username("Postgres") == []


def test_major_past_its_end_of_standard_support_is_refused():
    lifecycle = [{"LifecycleSupportName": "open-source-rds-standard-support",
                  "LifecycleSupportEndDate": datetime.datetime(2029, 2, 28, tzinfo=datetime.timezone.utc)}]
    catalogue = [{"EngineVersion": "16.11", "DBParameterGroupFamily": "postgres16", "Status": "available"}]
    before = rc.check_engine_version("16.11", "postgres16", catalogue, "r", lifecycle=lifecycle,
                                     today=datetime.date(2029, 2, 28))
    after = rc.check_engine_version("16.11", "postgres16", catalogue, "r", lifecycle=lifecycle,
                                    today=datetime.date(2029, 3, 1))
    assert before == []
    assert after == ["PostgreSQL 16 is past its RDS end of standard support (2029-02-28): RDS charges Extended "
                     "Support for it; move to a major version under standard support"]
    assert rc.check_engine_version("16.11", "postgres16", catalogue, "r", lifecycle=None,
                                   today=datetime.date(2040, 1, 1)) == []  # the region did not say


def test_class_without_multi_az_is_refused_for_a_multi_az_instance():
    option = {"DBInstanceClass": "db.x", "StorageType": "gp3", "MultiAZCapable": False,
              "MinStorageSize": 20, "MaxStorageSize": 100}
    declared = dict(db_instance_class="db.x", engine_version="16.11", storage_type="gp3", multi_az=True,
                    allocated_storage=20, max_allocated_storage=100, iops=None)
    assert rc.check_orderable(declared, [option], "r") == [
        "instance class db.x with gp3 storage cannot run Multi-AZ for postgres 16.11 in r; set multi_az false or "
        "choose a Multi-AZ capable class"]
    assert rc.check_orderable({**declared, "multi_az": False}, [option], "r") == []
    other = {**option, "StorageType": "gp2"}
    assert rc.check_orderable(declared, [other], "r") == [
        "instance class db.x is not orderable with storage type gp3 for postgres 16.11 in r; its storage types: gp2"]
