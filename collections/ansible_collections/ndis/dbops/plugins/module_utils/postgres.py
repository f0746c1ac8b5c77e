# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""PostgreSQL plumbing shared by every PostgreSQL module of the collection.

One home for what each module needs around its own work:

* the psycopg2 import check (``HAS_PSYCOPG2``, ``require_psycopg2``);
* the connection options (``CONNECTION_ARGS``, the names and aliases of community.postgresql's,
  documented in plugins/doc_fragments/postgres.py) and ``conn_params`` from them;
* ``connect``, whose failure says where it tried, as whom, and what to check;
* the error class ``PostgresError`` (its subclasses name the engine that raised it) and
  ``error_text``, the one text of a server error: message, DETAIL, HINT, CONTEXT, position
  and SQLSTATE, where the server sent them;
* the module exit/fail glue (``run_module``, ``exit_module``, ``fail_module``): warnings become module
  warnings, ``diff`` is kept only when ``--diff`` is asked, a failure returns the partial result.

Plain Python + psycopg2 apart from the glue, which takes an AnsibleModule.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    import psycopg2
    import psycopg2.errors  # noqa: F401  (registers the error classes)
    import psycopg2.extensions
    import psycopg2.extras  # noqa: F401  (RealDictCursor for the modules that read rows by name)
    from psycopg2 import sql as pgsql

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None
    pgsql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# The connection options of community.postgresql's modules, with the same names and aliases, so
# that one `module_defaults: group/ndis.dbops.postgres:` serves both collections' modules. Each
# module adds its own login_user default and its database option (login_db, alias db).
CONNECTION_ARGS = dict(
    login_host=dict(type="str", default="", aliases=["host"]),
    login_port=dict(type="int", default=5432, aliases=["port"]),
    login_password=dict(type="str", default="", no_log=True),
    login_unix_socket=dict(type="str", default="", aliases=["unix_socket"]),
    connect_timeout=dict(type="int", default=10),
    connect_params=dict(type="dict", default={}),
    ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
    ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
    ssl_cert=dict(type="path"),
    ssl_key=dict(type="path", no_log=False),
)


def conn_params(p, dbname=None):
    """psycopg2.connect keyword arguments from the module parameters (``dbname`` when given).

    ``connect_params`` (libpq keywords) take precedence, as in community.postgresql.
    """
    params = dict(
        host=p.get("login_host") or p.get("login_unix_socket") or None,
        port=p.get("login_port"),
        user=p.get("login_user"),
        password=p.get("login_password") or None,
        connect_timeout=p.get("connect_timeout"),
        sslmode=p.get("ssl_mode"),
    )
    if dbname is not None:
        params["dbname"] = dbname
    for option, keyword in (("ca_cert", "sslrootcert"), ("ssl_cert", "sslcert"), ("ssl_key", "sslkey")):
        if p.get(option):
            params[keyword] = p[option]
    params.update(p.get("connect_params") or {})
    return dict((k, v) for k, v in params.items() if v is not None)


class PostgresError(Exception):
    """A PostgreSQL job failed.  ``str(e)`` says what, where and what to do next.

    ``details`` holds machine-readable facts (file, line, sqlstate, ...), returned beside the
    message; ``result`` is the partial result (what was done, or would be, before the failure).
    """

    def __init__(self, msg, result=None, **details):
        super(PostgresError, self).__init__(msg)
        self.msg = msg
        self.details = details
        self.result = result


def require_psycopg2(error=PostgresError):
    if not HAS_PSYCOPG2:
        raise error("the Python library psycopg2 is required (pip install psycopg2-binary): %s" % PSYCOPG2_IMPORT_ERROR)


def _one_line(text):
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def error_text(e):
    """The one text of a PostgreSQL error: message; DETAIL; HINT; CONTEXT; position; SQLSTATE.

    Each part only where the server sent it (a connection failure has none but the message).
    CONTEXT keeps its innermost line (where a PL/pgSQL function or a COPY row failed).
    """
    diag = getattr(e, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or _one_line(e) or e.__class__.__name__
    parts = [primary]
    if diag is not None:
        if diag.message_detail:
            parts.append("DETAIL: " + _one_line(diag.message_detail))
        if diag.message_hint:
            parts.append("HINT: " + _one_line(diag.message_hint))
        if diag.context:
            parts.append("CONTEXT: " + diag.context.strip().split("\n")[0])
        if diag.statement_position:
            parts.append("at character %s of the statement" % diag.statement_position)
    if getattr(e, "pgcode", None):
        parts.append("SQLSTATE " + e.pgcode)
    return "; ".join(parts)


def describe_target(params):
    """(host:port, database, user) of psycopg2.connect keyword arguments, a ``dsn`` included."""
    params = dict(params)
    dsn = params.pop("dsn", None)
    if dsn:
        try:
            parsed = psycopg2.extensions.parse_dsn(dsn)
            parsed.update(params)
            params = parsed
        except Exception:
            pass
    host = params.get("host") or params.get("hostaddr") or "(local socket)"
    port = params.get("port") or 5432
    db = params.get("dbname") or params.get("database") or params.get("user") or "?"
    return "%s:%s" % (host, port), db, params.get("user") or "?"


def connect(conn_params, application_name=None, error=PostgresError, autocommit=True):
    """An autocommit connection; a failure raises ``error`` naming host, port, user, database and the fix.

    ``conn_params``: psycopg2.connect keyword arguments and/or ``dsn``; empty values are left out
    (libpq's defaults apply), ``database`` is read as ``dbname``, connect_timeout defaults to 10 s.
    ``application_name`` applies unless ``conn_params`` names one.
    """
    require_psycopg2(error)
    params = dict((k, v) for k, v in conn_params.items() if v is not None and v != "")
    if "database" in params and "dbname" not in params:
        params["dbname"] = params.pop("database")
    params.setdefault("connect_timeout", 10)
    if application_name:
        params.setdefault("application_name", application_name)
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as e:
        where, db, user = describe_target(params)
        raise error(
            "Cannot connect to PostgreSQL at %s as %s within %s s (database %s): %s. Check that the server is up and "
            "that this machine can reach it (a private instance needs a tunnel or a runner inside its network: "
            "login_host/login_port), the password of %s (login_password) and that database %s exists (login_db)."
            % (where, user, params["connect_timeout"], db, error_text(e), user, db),
            target="%s/%s" % (where, db),
        )
    conn.autocommit = autocommit
    return conn


# ---------------------------------------------------------------- module glue


def fail_without_psycopg2(module):
    """Fail the module, before anything runs, when psycopg2 is missing."""
    if not HAS_PSYCOPG2:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(msg=missing_required_lib("psycopg2"), exception=str(PSYCOPG2_IMPORT_ERROR))


def _shape(module, result):
    for w in result.pop("warnings", None) or []:
        module.warn(w)
    if not module._diff:
        result.pop("diff", None)
    return result


def exit_module(module, result):
    """exit_json with ``result``: its warnings as module warnings, its diff only under ``--diff``."""
    module.exit_json(**_shape(module, dict(result)))


def fail_module(module, e, **defaults):
    """fail_json for a PostgresError: its message, its partial result and details, ``changed`` as far as it got."""
    partial = dict(defaults)
    partial.update(_shape(module, dict(e.result or {})))
    partial.update(e.details)
    partial.setdefault("changed", False)
    module.fail_json(msg=e.msg, **partial)


def run_module(module, job, **fail_defaults):
    """Exit the module with what ``job()`` returns, or fail it with the PostgresError it raises."""
    try:
        result = job()
    except PostgresError as e:
        fail_module(module, e, **fail_defaults)
    exit_module(module, result)
