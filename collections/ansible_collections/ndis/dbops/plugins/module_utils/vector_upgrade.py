# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""pgvector after an engine upgrade: every database's indexes rebuilt per the rule, then
``ALTER EXTENSION vector UPDATE``.

RDS does not update extensions during an engine upgrade (RDS for PostgreSQL release notes,
"Extension versions for Amazon RDS for PostgreSQL": extension versions don't automatically
upgrade during engine version upgrade workflows). The new server loads the new pgvector
library at once, while each database's ``pg_extension.extversion`` still names the old SQL
version: an installed version older than the server's ``default_version`` is the mark of an
upgrade whose database steps have not run. Per database:

1. drop the INVALID leftovers (``<index>_ccnew``) of an interrupted ``REINDEX CONCURRENTLY``;
2. ``REINDEX INDEX CONCURRENTLY`` each vector index the rule names
   (``vector_extension.rebuild_reasons``: the old version had a defect that damaged indexes of
   its kind, the new one fixes it): writes and searches go on, the index is swapped at the end;
3. ``ALTER EXTENSION vector UPDATE`` (catalog only; a brief lock on the extension's objects).

The update comes last, so the installed version still records the rebuild owed: a run stopped
anywhere redoes what is left on the next run (a rebuild already done is done again, never
skipped). The application's database goes last, so once it is updated every database is.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils import progress as prog
from ansible_collections.ndis.dbops.plugins.module_utils import vector_extension as vext

APP_NAME = "pgvector_upgrade"


def _ident(name):
    return '"%s"' % str(name).replace('"', '""')


def databases(conn, wanted=None, last=None):
    """Databases to visit: ``wanted``, else every one that accepts connections; ``last`` at the end."""
    cur = conn.cursor()
    cur.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
    names = [r[0] for r in cur.fetchall()]
    if wanted:
        missing = [d for d in wanted if d not in names]
        if missing:
            raise pg.PostgresError("database(s) %s do not exist or refuse connections; the server has: %s"
                                   % (", ".join(missing), ", ".join(names)))
        names = [d for d in names if d in wanted]
    if last in names:
        names = [d for d in names if d != last] + [last]
    return names


def vector_indexes(cur):
    """Every hnsw/ivfflat index of the database: name, schema, table, method, unlogged, valid."""
    cur.execute(
        "SELECT n.nspname, c.relname, t.relname, am.amname, t.relpersistence = 'u', x.indisvalid"
        " FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam"
        " WHERE am.amname IN ('hnsw', 'ivfflat') ORDER BY n.nspname, c.relname")
    return [dict(schema=r[0], name=r[1], table=r[2], method=r[3], unlogged=r[4], valid=r[5]) for r in cur.fetchall()]


def plan_database(cur):
    """What one database needs: {installed, available, leftovers, rebuild: [{index, reasons}], update}."""
    info = vext.extension_info(cur)
    out = dict(installed=info["installed"], available=info["available"], leftovers=[], rebuild=[], update=False)
    if not info["installed"] or not info["available"]:
        return out
    if vext.version_tuple(info["available"]) <= vext.version_tuple(info["installed"]):
        return out
    out["update"] = True
    indexes = vector_indexes(cur)
    out["leftovers"] = [i for i in indexes if not i["valid"] and "_ccnew" in i["name"]]
    for i in indexes:
        if i in out["leftovers"]:
            continue
        reasons = vext.rebuild_reasons(info["installed"], info["available"], i["method"], i["unlogged"])
        if reasons:
            out["rebuild"].append(dict(index="%s.%s" % (i["schema"], i["name"]), table=i["table"],
                                       method=i["method"], reasons=reasons))
    return out


def statements(plan):
    """The statements one database's plan runs, in order."""
    out = ["DROP INDEX CONCURRENTLY IF EXISTS %s.%s" % (_ident(i["schema"]), _ident(i["name"])) for i in plan["leftovers"]]
    for r in plan["rebuild"]:
        schema, name = r["index"].split(".", 1)
        out.append("REINDEX INDEX CONCURRENTLY %s.%s" % (_ident(schema), _ident(name)))
    if plan["update"]:
        out.append("ALTER EXTENSION vector UPDATE")
    return out


def upgrade(conn_params, wanted=None, last=None, rebuild=True, parallel_workers=None, check_mode=False,
            progress_file="", progress_interval=5.0):
    """Plan (and outside check mode run) the steps in every database. Returns the module result."""
    progress = prog.ProgressFile(progress_file)
    admin = pg.connect(conn_params, APP_NAME)
    try:
        names = databases(admin, wanted, last)
    finally:
        admin.close()
    result = dict(changed=False, databases=[], queries=[], steps=[])
    for name in names:
        params = dict(conn_params, dbname=name)
        conn = pg.connect(params, APP_NAME)
        try:
            cur = conn.cursor()
            plan = plan_database(cur)
            if not rebuild:
                plan["rebuild"] = []
            stmts = statements(plan)
            entry = dict(database=name, installed=plan["installed"], available=plan["available"],
                         rebuild=plan["rebuild"], leftovers=[i["name"] for i in plan["leftovers"]], seconds={})
            result["databases"].append(entry)
            if not stmts:
                continue
            result["changed"] = True
            result["queries"].extend("%s: %s" % (name, s) for s in stmts)
            for r in plan["rebuild"]:
                result["steps"].append(dict(step="%s: REINDEX INDEX CONCURRENTLY %s" % (name, r["index"]),
                                            downtime="none (concurrent: reads and writes go on)",
                                            reason="; ".join(r["reasons"])))
            result["steps"].append(dict(step="%s: ALTER EXTENSION vector UPDATE (%s -> %s)"
                                        % (name, plan["installed"], plan["available"]),
                                        downtime="none (catalog only, a brief lock)", reason="RDS does not update "
                                        "extensions during an engine upgrade"))
            if check_mode:
                continue
            workers = vext.parallel_workers_for(plan["available"], parallel_workers)
            if workers is not None:
                cur.execute("SET max_parallel_maintenance_workers = %s", (int(workers),))
            for stmt in stmts:
                what = "%s: %s" % (name, "extension vector" if stmt.startswith("ALTER") else
                                   "index " + stmt.split()[-1].replace('"', ""))
                started = time.monotonic()
                progress.line(what, "running " + " ".join(stmt.split()[:3 if stmt.startswith("ALTER") else 4]))
                if stmt.startswith("REINDEX"):
                    poll = prog.index_build_poll(lambda p=params: pg.connect(p, APP_NAME + "_watch"), conn.get_backend_pid())
                    try:
                        with prog.Ticker(progress, what, poll, progress_interval):
                            _run(cur, stmt, name)
                    finally:
                        poll.close()
                else:
                    _run(cur, stmt, name)
                entry["seconds"][stmt] = round(time.monotonic() - started, 2)
                progress.line(what, "done")
            entry["installed"] = vext.extension_info(cur)["installed"]
        finally:
            conn.close()
    return result


def _run(cur, stmt, dbname):
    try:
        cur.execute(stmt)
    except Exception as e:
        raise pg.PostgresError("%s in database %s failed: %s. Nothing after it ran; the next run starts again from "
                               "the first step still owed." % (stmt, dbname, pg.error_text(e)))
