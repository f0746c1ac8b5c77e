# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Converge an application database, its roles and their privileges over two connections.

Plain Python + psycopg2, importable without Ansible (the tests call it directly)::

    from ansible_collections.ndis.dbops.plugins.module_utils import pg_access
    result = pg_access.converge(conn_params, spec, check_mode=False)

`spec` is the module's options (see plugins/modules/pg_database.py). The work, in order:

1. cluster level, connected to the maintenance database: the owner role, the admin's
   membership in it, the database (owned by the owner role), the app's NOLOGIN group role, its
   logins (the app user and its alternate: attributes, connection limit, settings, membership;
   the password of the one the stored URL uses), the optional read-only role and IAM login, and
   the retirement of logins the declaration no longer names (NOLOGIN, out of the group, their
   sessions ended);
2. in the app database: privileges on the database, the schema, every table and sequence in
   the schema and the owner role's default privileges, converged both ways (missing ones
   granted, extra ones revoked), for PUBLIC, the app group, the read-only role and every login
   (which hold nothing directly: the group holds the app's privileges, so both logins always
   hold the same). Tables the project keeps for itself (the migration history) get their own,
   usually none.

Each step reads the catalog first and runs only the statements that change something; in
check mode it runs none and returns them. Passwords are sent as SCRAM-SHA-256 verifiers
computed here, so the server never sees (or logs) the plain text, and the returned queries
show them masked.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import hmac
import os

from ansible_collections.ndis.dbops.plugins.module_utils import postgres as pg
from ansible_collections.ndis.dbops.plugins.module_utils.postgres import PostgresError, error_text, pgsql, psycopg2

APPLICATION_NAME = "ndis.dbops.pg_database"
MASK = "********"

# Privileges that exist per object type (PostgreSQL 16), in the order GRANT lists them.
DATABASE_PRIVS = ("CREATE", "CONNECT", "TEMPORARY")
SCHEMA_PRIVS = ("USAGE", "CREATE")
TABLE_PRIVS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVS = ("USAGE", "SELECT", "UPDATE")
# GRANT ... ON ALL TABLES IN SCHEMA covers these relation kinds; sequences are their own.
TABLE_RELKINDS = ("r", "p", "v", "m", "f")

LOGIN_ROLE_ATTRS = dict(rolsuper=False, rolcreatedb=False, rolcreaterole=False, rolreplication=False,
                        rolbypassrls=False)
ATTR_KEYWORDS = dict(rolcanlogin=("LOGIN", "NOLOGIN"), rolsuper=("SUPERUSER", "NOSUPERUSER"),
                     rolcreatedb=("CREATEDB", "NOCREATEDB"), rolcreaterole=("CREATEROLE", "NOCREATEROLE"),
                     rolreplication=("REPLICATION", "NOREPLICATION"), rolbypassrls=("BYPASSRLS", "NOBYPASSRLS"))


class AccessError(PostgresError):
    """A convergence step failed; ``queries`` (also the partial result) lists what ran or would run before it."""

    def __init__(self, msg, queries=None, **details):
        self.queries = queries if queries is not None else []
        super(AccessError, self).__init__(msg, result={"queries": self.queries}, **details)


def scram_verifier(password, iterations=4096, salt=None):
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (as libpq's PQencryptPasswordConn).

    Returns None for a password that is not plain ASCII: the server's SASLprep normalisation
    is not reproduced here, so such a password is sent as it is and hashed by the server.
    """
    try:
        raw = password.encode("ascii")
    except UnicodeEncodeError:
        return None
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", raw, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(stored_key), b64(server_key))


class Session(object):
    """One autocommit connection that records what it runs (or, in check mode, would run)."""

    def __init__(self, conn, check_mode, queries):
        self.conn = conn
        self.conn.autocommit = True
        self.check_mode = check_mode
        self.queries = queries

    def rows(self, query, args=None):
        with self.conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()

    def one(self, query, args=None):
        rows = self.rows(query, args)
        return rows[0] if rows else None

    def run(self, statement, args=None, shown=None):
        """Run a change. `shown` is what the result lists when the text carries a secret."""
        text = shown if shown is not None else self.conn.cursor().mogrify(statement, args).decode()
        self.queries.append(text)
        if self.check_mode:
            return
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, args)
        except psycopg2.Error as e:
            raise AccessError("%s failed: %s" % (text, error_text(e)), self.queries)

    def close(self):
        self.conn.close()


def _ident(name):
    return pgsql.Identifier(name)


def _privs_sql(privs):
    return pgsql.SQL(", ").join(pgsql.SQL(p) for p in privs)


def _grantee(role):
    return pgsql.SQL("PUBLIC") if role == "PUBLIC" else _ident(role)


def _ordered(privs, universe):
    return [p for p in universe if p in privs]


def connect(conn_params, dbname):
    return pg.connect(dict(conn_params, dbname=dbname), application_name=APPLICATION_NAME, error=AccessError)


def password_matches(conn_params, user, password, dbname):
    """Whether `user` can authenticate with `password`: a login is the comparison that works on RDS,
    where the admin cannot read pg_authid. A refusal after authentication (no CONNECT on the
    database, NOLOGIN, connection limit) still proves the password."""
    params = dict(conn_params, user=user, password=password, dbname=dbname)
    params.setdefault("application_name", APPLICATION_NAME)
    try:
        psycopg2.connect(**params).close()
        return True
    except psycopg2.Error as e:
        text = str(e)
        if "password authentication failed" in text or "no password supplied" in text:
            return False
        if "permission denied for database" in text or "not permitted to log in" in text \
                or "too many connections for role" in text:
            return True
        return False


# ---------------------------------------------------------------- cluster level


def _role(s, name):
    row = s.one(
        "SELECT r.oid, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls,"
        " r.rolconnlimit, shobj_description(r.oid, 'pg_authid'),"
        " coalesce((SELECT setconfig FROM pg_db_role_setting WHERE setrole = r.oid AND setdatabase = 0), '{}')"
        " FROM pg_roles r WHERE r.rolname = %s", (name,))
    if row is None:
        return None
    keys = ("oid", "rolcanlogin", "rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls",
            "rolconnlimit", "comment")
    role = dict(zip(keys, row[:9]))
    role["settings"] = dict(item.split("=", 1) for item in row[9])
    return role


def _describe_role(role, name):
    if role is None:
        return "role %s: absent" % name
    flags = [ATTR_KEYWORDS[k][0 if role[k] else 1] for k in ATTR_KEYWORDS]
    text = "role %s: %s connection_limit=%s" % (name, " ".join(flags), role["rolconnlimit"])
    if role["settings"]:
        text += " " + " ".join("%s=%s" % kv for kv in sorted(role["settings"].items()))
    return text + (" comment=%r" % role["comment"] if role["comment"] else "")


_UNREAD = object()


def ensure_role(s, name, login, comment, conn_limit=None, settings=None, password=None, password_ok=None,
                before=None, after=None, current=_UNREAD):
    """Create or alter a role to the declared attributes (`current`: the role as already read, or None
    for absent). Returns whether anything changed."""
    role = _role(s, name) if current is _UNREAD else current
    want = dict(LOGIN_ROLE_ATTRS, rolcanlogin=login)
    settings = settings or {}
    n = len(s.queries)
    if before is not None:
        before.append(_describe_role(role, name))
    if role is None:
        stmt = pgsql.SQL("CREATE ROLE {} {}").format(_ident(name), pgsql.SQL("LOGIN" if login else "NOLOGIN"))
        if conn_limit is not None:
            stmt = stmt + pgsql.SQL(" CONNECTION LIMIT {}").format(pgsql.Literal(int(conn_limit)))
        if password is not None:
            _run_with_password(s, stmt, name, password)
        else:
            s.run(stmt)
        role = dict(want, rolconnlimit=conn_limit if conn_limit is not None else -1, comment=None, settings={})
    else:
        changes = [ATTR_KEYWORDS[k][0 if v else 1] for k, v in sorted(want.items()) if role[k] != v]
        if conn_limit is not None and role["rolconnlimit"] != int(conn_limit):
            changes.append("CONNECTION LIMIT %d" % int(conn_limit))
        if changes:
            s.run(pgsql.SQL("ALTER ROLE {} {}").format(_ident(name), pgsql.SQL(" ".join(changes))))
        if password is not None and not password_ok:
            _run_with_password(s, pgsql.SQL("ALTER ROLE {}").format(_ident(name)), name, password)
    for key, value in sorted(settings.items()):
        if role["settings"].get(key) != str(value):
            s.run(pgsql.SQL("ALTER ROLE {} SET {} = {}").format(_ident(name), _ident(key), pgsql.Literal(str(value))))
    if comment is not None and (role.get("comment") or "") != comment:
        s.run(pgsql.SQL("COMMENT ON ROLE {} IS {}").format(_ident(name), pgsql.Literal(comment)))
    if after is not None:
        after.append(_describe_role(dict(role, rolconnlimit=conn_limit if conn_limit is not None else role["rolconnlimit"],
                                         settings=dict(role["settings"], **{k: str(v) for k, v in settings.items()}),
                                         comment=comment if comment is not None else role.get("comment"), **want), name))
    return len(s.queries) > n


def _run_with_password(s, stmt, name, password):
    verifier = scram_verifier(password)
    secret = verifier if verifier is not None else password
    full = stmt + pgsql.SQL(" PASSWORD {}").format(pgsql.Literal(secret))
    shown = s.conn.cursor().mogrify(stmt).decode() + " PASSWORD '%s'" % MASK
    s.run(full, shown=shown)


def ensure_membership(s, group, member, before, after):
    """Make `member` able to SET ROLE to `group` (RDS's master is no superuser: it needs this to own
    objects through the group and to run migrations as it)."""
    if s.conn.server_version >= 160000:
        row = s.one("SELECT m.set_option FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                    " JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND u.rolname = %s"
                    " ORDER BY m.set_option DESC LIMIT 1", (group, member))
        have = bool(row and row[0])
        stmt = pgsql.SQL("GRANT {} TO {} WITH SET TRUE")
    else:
        row = s.one("SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                    " JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND u.rolname = %s", (group, member))
        have = row is not None
        stmt = pgsql.SQL("GRANT {} TO {}")
    before.append("%s member of %s: %s" % (member, group, "yes" if have else "no"))
    after.append("%s member of %s: yes" % (member, group))
    if not have:
        s.run(stmt.format(_ident(group), _ident(member)))


def ensure_database(s, name, owner, encoding, before, after):
    row = s.one("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s",
                (name,))
    before.append("database %s: %s" % (name, "owner=%s encoding=%s" % row if row else "absent"))
    after.append("database %s: owner=%s encoding=%s" % (name, owner, row[1] if row else encoding))
    if row is None:
        s.run(pgsql.SQL("CREATE DATABASE {} OWNER {} ENCODING {}").format(
            _ident(name), _ident(owner), pgsql.Literal(encoding)))
        return False
    if row[1].upper().replace("-", "") != encoding.upper().replace("-", ""):
        raise AccessError(
            "database %s exists with encoding %s, not %s: the encoding of a database cannot be changed. Create the "
            "database anew (dump, drop, restore) or declare encoding %s." % (name, row[1], encoding, row[1]),
            s.queries)
    if row[0] != owner:
        s.run(pgsql.SQL("ALTER DATABASE {} OWNER TO {}").format(_ident(name), _ident(owner)))
    return True


def ensure_member(s, group, member, before, after):
    """Make `member` inherit `group`'s privileges (a plain GRANT: INHERIT, no ADMIN)."""
    if s.conn.server_version >= 160000:
        row = s.one("SELECT bool_or(m.inherit_option) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                    " JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND u.rolname = %s", (group, member))
        have = bool(row and row[0])
        stmt = pgsql.SQL("GRANT {} TO {} WITH INHERIT TRUE")
    else:
        have = s.one("SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                     " JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND u.rolname = %s",
                     (group, member)) is not None
        stmt = pgsql.SQL("GRANT {} TO {}")
    before.append("%s member of %s: %s" % (member, group, "yes" if have else "no"))
    after.append("%s member of %s: yes" % (member, group))
    if not have:
        s.run(stmt.format(_ident(group), _ident(member)))


RETIRED_COMMENT = "Retired: no longer named by the declaration of database %s"


def retire_logins(s, spec, admin, before, after):
    """Logins the project made for this database that the declaration no longer names (a renamed app user,
    a dropped IAM login): members of the app group, or carrying the comment the project gives its logins.
    Each is disabled, not dropped (it may own objects, and its name stays in the audit trail): NOLOGIN, out
    of the group, a comment saying so, its sessions ended; its direct privileges are revoked with the rest.
    Returns their names."""
    group = spec["app_group"]
    keep = set(app_logins(spec) + [spec.get("iam_user") or "", admin, spec["owner"], spec.get("readonly_role") or ""])
    comments = [c for c in (spec.get("app_comment"), spec.get("iam_comment")) if c]
    rows = s.rows(
        "SELECT rolname, rolcanlogin, member, sessions FROM ("
        " SELECT r.rolname, r.rolcanlogin, r.rolsuper, shobj_description(r.oid, 'pg_authid') AS comment,"
        "  EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        "           WHERE g.rolname = %s AND m.member = r.oid) AS member,"
        "  (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname) AS sessions"
        " FROM pg_roles r WHERE r.rolname <> ALL(%s)) c"
        " WHERE NOT rolsuper AND (member OR rolcanlogin AND comment = ANY(%s)) ORDER BY 1",
        (group, sorted(keep), comments))
    retired = []
    for name, can_login, member, sessions in rows:
        retired.append(name)
        before.append("role %s: %s%s, %d sessions" % (name, "LOGIN" if can_login else "NOLOGIN",
                                                       ", member of %s" % group if member else "", sessions))
        after.append("role %s: retired (NOLOGIN, not a member of %s, no sessions): the declaration no longer names it"
                     % (name, group))
        if can_login:
            s.run(pgsql.SQL("ALTER ROLE {} NOLOGIN").format(_ident(name)))
        if member:
            s.run(pgsql.SQL("REVOKE {} FROM {}").format(_ident(group), _ident(name)))
        s.run(pgsql.SQL("COMMENT ON ROLE {} IS {}").format(_ident(name), pgsql.Literal(RETIRED_COMMENT % spec["name"])))
        if sessions:
            s.run(pgsql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}").format(
                pgsql.Literal(name)))
    return retired


# ---------------------------------------------------------------- IAM database authentication

RDS_IAM_ROLE = "rds_iam"


def ensure_iam_user(s, spec, before, after):
    """The login role for IAM database authentication: LOGIN without a password, member of rds_iam
    (on RDS, a member of rds_iam can only log in with an IAM token), the app's connection limit and
    settings; its privileges are the app's (grants_for). RDS creates rds_iam on every PostgreSQL
    instance; a server without it (the local stack's) gets a NOLOGIN stand-in only when
    create_rds_iam_role says so."""
    name = spec["iam_user"]
    if _role(s, RDS_IAM_ROLE) is None:
        if not spec.get("create_rds_iam_role"):
            raise AccessError(
                "role %s does not exist on this server: RDS creates it on every PostgreSQL instance (is this RDS?). On "
                "another server set create_rds_iam_role to create a NOLOGIN stand-in, or leave iam_user empty."
                % RDS_IAM_ROLE, s.queries)
        ensure_role(s, RDS_IAM_ROLE, login=False, comment="Stands for RDS's rds_iam role: this server is not RDS",
                    before=before, after=after, current=None)
    ensure_role(s, name, login=True, comment=spec.get("iam_comment"), conn_limit=spec.get("app_connection_limit"),
                settings=spec.get("app_settings"), before=before, after=after)
    row = s.one("SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
                " WHERE g.rolname = %s AND u.rolname = %s", (RDS_IAM_ROLE, name))
    before.append("%s member of %s: %s" % (name, RDS_IAM_ROLE, "yes" if row else "no"))
    after.append("%s member of %s: yes" % (name, RDS_IAM_ROLE))
    if row is None:
        s.run(pgsql.SQL("GRANT {} TO {}").format(_ident(RDS_IAM_ROLE), _ident(name)))
    # A password would be a second way in; on RDS, membership in rds_iam already disables it.
    if _can_read_authid(s) and s.one("SELECT 1 FROM pg_authid WHERE rolname = %s AND rolpassword IS NOT NULL",
                                     (name,)):
        s.run(pgsql.SQL("ALTER ROLE {} PASSWORD NULL").format(_ident(name)))


def _can_read_authid(s):
    """Whether the admin may read pg_authid (a superuser; RDS's master may not)."""
    return bool(s.one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0])


# ---------------------------------------------------------------- privileges


def _acl_privs(s, acl_sql, args, roles):
    """{role: set(privileges)} held directly (not through membership) on one object."""
    rows = s.rows(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type"
        " FROM (" + acl_sql + ") o, aclexplode(o.acl) a", args)
    out = dict((r, set()) for r in roles)
    for grantee, priv in rows:
        if grantee in out:
            out[grantee].add(priv)
    return out


class Grant(object):
    """Declared privileges of one grantee on one kind of object: `want` granted, `deny` revoked.
    `only` maps a relation name to the privileges the grantee holds on it instead of `want` (the others
    are revoked): tables the project keeps for itself."""

    def __init__(self, grantee, want, deny, only=None):
        self.grantee = grantee
        self.want = set(want)
        self.deny = set(deny) - self.want
        self.only = dict((rel, set(privs)) for rel, privs in (only or {}).items())

    def want_on(self, rel):
        return self.only.get(rel, self.want)

    def deny_on(self, rel, universe):
        return set(universe) - self.only[rel] if rel in self.only else self.deny


def converge_object(s, kind, label, target_sql, have, grants, before, after, universe):
    """GRANT/REVOKE on one object (database or schema) to match `grants`."""
    for g in grants:
        held = have.get(g.grantee, set())
        before.append("%s on %s %s: %s" % (g.grantee, kind, label, ", ".join(_ordered(held, universe)) or "-"))
        after.append("%s on %s %s: %s" % (g.grantee, kind, label,
                                          ", ".join(_ordered((held | g.want) - g.deny, universe)) or "-"))
        missing, extra = g.want - held, held & g.deny
        if missing:
            s.run(pgsql.SQL("GRANT {} ON {} {} TO {}").format(
                _privs_sql(_ordered(missing, universe)), pgsql.SQL(kind.upper()), target_sql, _grantee(g.grantee)))
        if extra:
            s.run(pgsql.SQL("REVOKE {} ON {} {} FROM {}").format(
                _privs_sql(_ordered(extra, universe)), pgsql.SQL(kind.upper()), target_sql, _grantee(g.grantee)))


def converge_relations(s, schema, label, relkinds, universe, grants, before, after):
    """GRANT/REVOKE ... ON ALL TABLES (or SEQUENCES) IN SCHEMA when any relation differs; relation by
    relation where a grantee's privileges differ between relations (Grant.only)."""
    roles = [g.grantee for g in grants]
    rows = s.rows(
        "SELECT c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\","
        " c.relowner))) a ON true WHERE n.nspname = %s AND c.relkind = ANY(%s)", (schema, list(relkinds)))
    held = {}
    for relname, grantee, priv in rows:
        held.setdefault(relname, dict((r, set()) for r in roles))
        if grantee in held[relname]:
            held[relname][grantee].add(priv)
    n = len(held)
    for g in grants:
        lack = dict((rel, g.want_on(rel) - p[g.grantee]) for rel, p in held.items())
        beyond = dict((rel, p[g.grantee] & g.deny_on(rel, universe)) for rel, p in held.items())
        summary = "%s on %d %s in %s: " % (g.grantee, n, label, schema)
        lacking = ["%s lacks %s" % (rel, ", ".join(_ordered(lack[rel], universe))) for rel in sorted(held) if lack[rel]]
        extra = ["%s has %s" % (rel, ", ".join(_ordered(beyond[rel], universe))) for rel in sorted(held) if beyond[rel]]
        declared = ", ".join(_ordered(g.want, universe)) or "-"
        own = "".join("; %s: %s" % (rel, ", ".join(_ordered(g.only[rel], universe)) or "-")
                      for rel in sorted(g.only) if rel in held)
        before.append(summary + ("; ".join(lacking + extra) or declared + own))
        after.append(summary + declared + own)
        if not any(rel in g.only for rel in held):
            missing = sorted(set(p for privs in lack.values() for p in privs))
            surplus = sorted(set(p for privs in beyond.values() for p in privs))
            if missing:
                s.run(pgsql.SQL("GRANT {} ON ALL {} IN SCHEMA {} TO {}").format(
                    _privs_sql(_ordered(missing, universe)), pgsql.SQL(label.upper()), _ident(schema), _grantee(g.grantee)))
            if surplus:
                s.run(pgsql.SQL("REVOKE {} ON ALL {} IN SCHEMA {} FROM {}").format(
                    _privs_sql(_ordered(surplus, universe)), pgsql.SQL(label.upper()), _ident(schema), _grantee(g.grantee)))
            continue
        # One statement per set of privileges, naming the relations that differ by it.
        kind = pgsql.SQL("SEQUENCE" if label == "sequences" else "TABLE")
        for verb, per_rel, word in (("GRANT", lack, "TO"), ("REVOKE", beyond, "FROM")):
            by_privs = {}
            for rel in sorted(per_rel):
                if per_rel[rel]:
                    by_privs.setdefault(tuple(_ordered(per_rel[rel], universe)), []).append(rel)
            for privs, rels in sorted(by_privs.items()):
                s.run(pgsql.SQL("{} {} ON {} {} {} {}").format(
                    pgsql.SQL(verb), _privs_sql(privs), kind,
                    pgsql.SQL(", ").join(pgsql.Identifier(schema, rel) for rel in rels), pgsql.SQL(word),
                    _grantee(g.grantee)))


def converge_default_privs(s, owner, schema, objtype, label, universe, grants, before, after):
    """ALTER DEFAULT PRIVILEGES FOR ROLE owner IN SCHEMA ...: what the owner's future objects grant."""
    rows = s.rows(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type"
        " FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a"
        " WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %s) AND n.nspname = %s"
        " AND d.defaclobjtype = %s", (owner, schema, objtype))
    have = dict((g.grantee, set()) for g in grants)
    for grantee, priv in rows:
        if grantee in have:
            have[grantee].add(priv)
    for g in grants:
        held = have[g.grantee]
        what = "%s on future %s of %s in %s: " % (g.grantee, label, owner, schema)
        before.append(what + (", ".join(_ordered(held, universe)) or "-"))
        after.append(what + (", ".join(_ordered((held | g.want) - g.deny, universe)) or "-"))
        prefix = pgsql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} ").format(_ident(owner), _ident(schema))
        missing, extra = g.want - held, held & g.deny
        if missing:
            s.run(prefix + pgsql.SQL("GRANT {} ON {} TO {}").format(
                _privs_sql(_ordered(missing, universe)), pgsql.SQL(label.upper()), _grantee(g.grantee)))
        if extra:
            s.run(prefix + pgsql.SQL("REVOKE {} ON {} FROM {}").format(
                _privs_sql(_ordered(extra, universe)), pgsql.SQL(label.upper()), _grantee(g.grantee)))


def _upper(privs, universe, what):
    out = [p.strip().upper() for p in privs]
    bad = [p for p in out if p not in universe]
    if bad:
        raise AccessError("%s: %s not among %s" % (what, ", ".join(bad), ", ".join(universe)))
    return out


def app_logins(spec):
    """The app's password logins: the app user and, unless empty, its alternate."""
    return [spec["app_user"]] + ([spec["app_alternate_user"]] if spec.get("app_alternate_user") else [])


def grants_for(spec, retired=()):
    """The declared privileges, per object kind, as Grant lists. The app group holds the app's privileges
    (on the tables in app_table_exceptions, those instead); the logins (and retired ones) hold none directly."""
    group, ro = spec["app_group"], spec.get("readonly_role") or None
    app_tables = _upper(spec["app_table_privileges"], TABLE_PRIVS, "app_table_privileges")
    app_seqs = _upper(spec["app_sequence_privileges"], SEQUENCE_PRIVS, "app_sequence_privileges")
    only = dict((table, _upper(privs or [], TABLE_PRIVS, "app_table_exceptions[%s]" % table))
                for table, privs in (spec.get("app_table_exceptions") or {}).items())
    out = dict(
        database=[Grant("PUBLIC", [], DATABASE_PRIVS), Grant(group, ["CONNECT"], DATABASE_PRIVS)],
        schema=[Grant("PUBLIC", [], ["CREATE"]), Grant(group, ["USAGE"], SCHEMA_PRIVS)],
        tables=[Grant(group, app_tables, TABLE_PRIVS, only=only)],
        sequences=[Grant(group, app_seqs, SEQUENCE_PRIVS)],
    )
    # the logins work through the group: anything granted to one of them directly is revoked
    iam = [spec["iam_user"]] if spec.get("iam_user") else []
    for login in app_logins(spec) + iam + list(retired):
        out["database"].append(Grant(login, [], DATABASE_PRIVS))
        out["schema"].append(Grant(login, [], SCHEMA_PRIVS))
        out["tables"].append(Grant(login, [], TABLE_PRIVS))
        out["sequences"].append(Grant(login, [], SEQUENCE_PRIVS))
    if ro:
        out["database"].append(Grant(ro, ["CONNECT"], DATABASE_PRIVS))
        out["schema"].append(Grant(ro, ["USAGE"], SCHEMA_PRIVS))
        out["tables"].append(Grant(ro, ["SELECT"], TABLE_PRIVS, only=dict((table, []) for table in only)))
        out["sequences"].append(Grant(ro, ["SELECT"], SEQUENCE_PRIVS))
    return out


def converge_privileges(s, spec, before, after, retired=()):
    db, schema, owner = spec["name"], spec["schema"], spec["owner"]
    grants = grants_for(spec, retired)
    roles = lambda kind: [g.grantee for g in grants[kind]]  # noqa: E731
    if s.one("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) is None:
        raise AccessError("schema %s does not exist in database %s: create it in the first migration or set the "
                          "schema option to an existing one." % (schema, db), s.queries)
    have = _acl_privs(s, "SELECT coalesce(datacl, acldefault('d'::\"char\", datdba)) AS acl FROM pg_database WHERE datname = %s",
                      (db,), roles("database"))
    converge_object(s, "database", db, _ident(db), have, grants["database"], before, after, DATABASE_PRIVS)
    have = _acl_privs(s, "SELECT coalesce(nspacl, acldefault('n'::\"char\", nspowner)) AS acl FROM pg_namespace WHERE nspname = %s",
                      (schema,), roles("schema"))
    converge_object(s, "schema", schema, _ident(schema), have, grants["schema"], before, after, SCHEMA_PRIVS)
    converge_relations(s, schema, "tables", TABLE_RELKINDS, TABLE_PRIVS, grants["tables"], before, after)
    converge_relations(s, schema, "sequences", ("S",), SEQUENCE_PRIVS, grants["sequences"], before, after)
    converge_default_privs(s, owner, schema, "r", "tables", TABLE_PRIVS, grants["tables"], before, after)
    converge_default_privs(s, owner, schema, "S", "sequences", SEQUENCE_PRIVS, grants["sequences"], before, after)


def predicted_privileges(spec):
    """The statements the real run makes on a database that does not exist yet (check mode)."""
    grants = grants_for(spec)
    db, schema, owner = spec["name"], spec["schema"], spec["owner"]
    out = ["REVOKE ALL ON DATABASE %s FROM PUBLIC" % db]
    for g in grants["database"][1:] + grants["schema"][1:]:
        if g.want:
            kind = "DATABASE %s" % db if g in grants["database"] else "SCHEMA %s" % schema
            out.append("GRANT %s ON %s TO %s" % (", ".join(sorted(g.want)), kind, g.grantee))
    for label in ("tables", "sequences"):
        for g in grants[label]:
            if g.want:
                out.append("ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA %s GRANT %s ON %s TO %s"
                           % (owner, schema, ", ".join(sorted(g.want)), label.upper(), g.grantee))
    return out


# ---------------------------------------------------------------- entry point


def converge(conn_params, spec, check_mode=False):
    """Converge everything `spec` declares. Returns changed, queries, database_exists, retired, diff."""
    pg.require_psycopg2(AccessError)
    spec = dict(spec, app_group=spec.get("app_group") or spec["name"] + "_app")
    queries, before, after = [], [], []
    maint = spec.get("maintenance_db") or "postgres"
    s = Session(connect(conn_params, maint), check_mode, queries)
    try:
        admin = conn_params["user"]
        ensure_role(s, spec["owner"], login=False, comment=spec.get("owner_comment"), before=before, after=after)
        ensure_membership(s, spec["owner"], admin, before, after)
        existed = ensure_database(s, spec["name"], spec["owner"], spec.get("encoding") or "UTF8", before, after)
        group = spec["app_group"]
        ensure_role(s, group, login=False, comment=spec.get("app_group_comment"), before=before, after=after)
        password_user = spec.get("app_login") or spec["app_user"]
        for login in app_logins(spec):
            role = _role(s, login)
            password = spec["app_password"] if login == password_user else None
            password_ok = None
            if role is not None and password is not None:
                password_ok = password_matches(conn_params, login, password, spec["name"] if existed else maint)
            ensure_role(s, login, login=True, comment=spec.get("app_comment"),
                        conn_limit=spec.get("app_connection_limit"), settings=spec.get("app_settings"),
                        password=password, password_ok=password_ok, before=before, after=after, current=role)
            if password_ok is False:
                before.append("role %s: password differs" % login)
                after.append("role %s: password set" % login)
            ensure_member(s, group, login, before, after)
        if spec.get("readonly_role"):
            ensure_role(s, spec["readonly_role"], login=False, comment=spec.get("readonly_comment"),
                        before=before, after=after)
        if spec.get("iam_user"):
            ensure_iam_user(s, spec, before, after)
            ensure_member(s, group, spec["iam_user"], before, after)
        retired = retire_logins(s, spec, admin, before, after)
    finally:
        s.close()
    if existed or not check_mode:
        s = Session(connect(conn_params, spec["name"]), check_mode, queries)
        try:
            converge_privileges(s, spec, before, after, retired)
        finally:
            s.close()
    else:  # check mode, and the database does not exist yet: say what the real run grants
        queries.extend(predicted_privileges(spec))
        after.extend("%s (after the database is created)" % q for q in predicted_privileges(spec))
    changed = bool(queries)
    diff = dict(before="\n".join(before) + "\n", after="\n".join(after) + "\n")
    return dict(changed=changed, queries=queries, database_exists=existed or not check_mode, retired=retired,
                app_group=spec["app_group"], diff=diff)
