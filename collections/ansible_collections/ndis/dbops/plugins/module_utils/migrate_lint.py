# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Lint of pending migration files, judged against the live catalog: the statements that would
lock or rewrite a table the app uses.  Used by ``ndis.dbops.pg_migrate`` before any file runs.

SQL is read with pglast, which wraps PostgreSQL's own parser: statements, their locations and
the comments come from it, never from regular expressions.  A statement is a risk only for a
table that exists and has rows when the run starts: a table created earlier in the same run,
or empty, is locked by nobody and rewritten in no time.

A reviewed statement passes when a comment ``-- migrate:allow RULE reason`` stands on the lines
just above it (or at the end of its last line); the run records the override in the history
table's ``lint_overrides`` column.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import time

from ansible_collections.ndis.dbops.plugins.module_utils.migrate_files import statement_line

try:
    from pglast import ast as pg_ast
    from pglast import enums as pg_enums
    from pglast import parser as pg_parser

    HAS_PGLAST = True
    PGLAST_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without pglast
    pg_ast = pg_enums = pg_parser = None
    HAS_PGLAST = False
    PGLAST_IMPORT_ERROR = exc

# name: (what it does to a live table, the safe form)
RULES = {
    "create-index-non-concurrently": (
        "CREATE INDEX without CONCURRENTLY blocks every write to the table for the whole build",
        "CREATE INDEX CONCURRENTLY in a file of its own with a '-- migrate:no-transaction' header",
    ),
    "drop-index-non-concurrently": (
        "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the index's table",
        "DROP INDEX CONCURRENTLY in a file with a '-- migrate:no-transaction' header",
    ),
    "reindex-non-concurrently": (
        "REINDEX without CONCURRENTLY blocks writes (and reads that use the index) for the whole rebuild",
        "REINDEX ... CONCURRENTLY in a file with a '-- migrate:no-transaction' header",
    ),
    "adding-not-null-column-without-default": (
        "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table with rows",
        "add the column with a constant DEFAULT (no rewrite since PostgreSQL 11), or nullable, backfill, then "
        "CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT and SET NOT NULL",
    ),
    "volatile-default": (
        "ADD COLUMN with a volatile DEFAULT (random(), gen_random_uuid(), clock_timestamp(), a serial or identity, "
        "a stored generated column) rewrites the whole table under an ACCESS EXCLUSIVE lock",
        "add the column without a default (or with a constant one), backfill in batches, then SET DEFAULT",
    ),
    "changing-column-type": (
        "ALTER COLUMN ... TYPE rewrites the table (and its indexes) under an ACCESS EXCLUSIVE lock",
        "add a new column of the new type, backfill it in batches, switch the app over, then drop the old one",
    ),
    "setting-not-null": (
        "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
        "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c (a later file); then SET NOT NULL "
        "uses the validated constraint and skips the scan",
    ),
    "constraint-missing-not-valid": (
        "ADD FOREIGN KEY / CHECK without NOT VALID checks every row while holding a lock that blocks writes "
        "(a foreign key locks the referenced table too)",
        "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a later file (it takes a lock that allows writes)",
    ),
    "adding-unique-without-index": (
        "ADD UNIQUE / PRIMARY KEY / EXCLUDE builds its index while blocking every write to the table",
        "CREATE UNIQUE INDEX CONCURRENTLY (a '-- migrate:no-transaction' file), then "
        "ADD CONSTRAINT c UNIQUE USING INDEX (or PRIMARY KEY USING INDEX)",
    ),
    "dropping-column": (
        "DROP COLUMN breaks app code still reading the column and takes an ACCESS EXCLUSIVE lock",
        "stop the app using the column first (deploy), then drop it in a later migration",
    ),
    "dropping-table": (
        "DROP TABLE deletes its rows and breaks app code still using it",
        "stop the app using the table first (deploy), keep a dump, then drop it in a later migration",
    ),
    "renaming-column": (
        "RENAME COLUMN breaks app code that uses the old name the moment it commits",
        "add the new column, write both, backfill, switch reads, then drop the old one (or a view with the old name)",
    ),
    "renaming-table": (
        "RENAME (TO) of a table breaks app code that uses the old name the moment it commits",
        "create a view with the old name in the same migration, move the app over, then drop the view",
    ),
    "vacuum-full": (
        "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock: no reads, no writes until it ends",
        "plain VACUUM (no lock on reads and writes), or pg_repack outside the migrations",
    ),
    "cluster": (
        "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock: no reads, no writes until it ends",
        "pg_repack --order-by outside the migrations, or leave the physical order alone",
    ),
    "lock-table": (
        "LOCK TABLE holds an explicit lock until the file's transaction ends, queueing the app behind it",
        "drop the LOCK: each statement takes the lock it needs, and pg_migrate bounds every wait with pg_lock_timeout",
    ),
    "concurrently-in-transaction": (
        "CREATE/DROP INDEX CONCURRENTLY and REINDEX CONCURRENTLY cannot run inside a transaction: the file fails",
        "put the statement in a file with a '-- migrate:no-transaction' header line",
    ),
}

ALLOW_RE = re.compile(r"^--\s*migrate:allow\s+(?P<rule>[A-Za-z0-9_-]+)(?:\s+(?P<reason>.*\S))?\s*$", re.IGNORECASE)
SERIAL_TYPES = ("serial", "serial2", "serial4", "serial8", "smallserial", "bigserial")
RISK_RELKINDS = ("r", "p", "m")


class LintError(Exception):
    """A file's annotations are malformed: the message names file, line and the fix."""


class Finding(object):
    __slots__ = ("file", "line", "rule", "statement", "table", "why", "allowed_reason")

    def __init__(self, file, line, rule, statement, table, why):
        self.file = file
        self.line = line
        self.rule = rule
        self.statement = statement
        self.table = table
        self.why = why
        self.allowed_reason = None

    def describe(self):
        summary, safe = RULES[self.rule]
        return "%s line %s: %s: %s (%s; %s). Safe form: %s" % (
            self.file, self.line, self.rule, self.statement, summary, self.why, safe,
        )

    def as_dict(self):
        d = {"file": self.file, "line": self.line, "rule": self.rule, "statement": self.statement, "table": self.table}
        if self.allowed_reason is not None:
            d["reason"] = self.allowed_reason
        return d


class Catalog(object):
    """Read-only questions to the live catalog, each asked once per run."""

    def __init__(self, cur):
        self.cur = cur
        self._tables = {}
        self._funcs = {}

    def table_state(self, schema, name):
        """(qualified name, 'missing' | 'empty' | 'rows' | 'other')."""
        key = (schema, name)
        if key not in self._tables:
            self._tables[key] = self._probe_table(self._regclass_text(schema, name))
        return self._tables[key]

    @staticmethod
    def _regclass_text(schema, name):
        quote = lambda s: '"%s"' % s.replace('"', '""')  # noqa: E731
        return (quote(schema) + "." if schema else "") + quote(name)

    def _probe_table(self, regclass_text):
        cur = self.cur
        cur.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s)",
            (regclass_text,),
        )
        row = cur.fetchone()
        if row is None:
            return (regclass_text, "missing")
        qualified = "%s.%s" % (row[0], row[1])
        if row[2] not in RISK_RELKINDS:
            return (qualified, "other")
        try:
            cur.execute("SELECT EXISTS (SELECT FROM %s)" % self._regclass_text(row[0], row[1]))
            has_rows = cur.fetchone()[0]
        except Exception:  # no SELECT privilege: judge as a table with rows
            has_rows = True
        return (qualified, "rows" if has_rows else "empty")

    def index_table(self, schema, name):
        """(schema, table) of an existing index, or None."""
        self.cur.execute(
            "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass(%s)",
            (self._regclass_text(schema, name),),
        )
        row = self.cur.fetchone()
        return (row[0], row[1]) if row else None

    def exists(self, schema, name):
        self.cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self._regclass_text(schema, name),))
        return self.cur.fetchone()[0]

    def volatility(self, schema, name):
        """'v', 's' or 'i' (the most volatile overload), or None for an unknown function."""
        key = (schema, name)
        if key not in self._funcs:
            if schema:
                self.cur.execute(
                    "SELECT max(p.provolatile) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE p.proname = %s AND n.nspname = %s",
                    (name, schema),
                )
            else:
                self.cur.execute(
                    "SELECT max(p.provolatile) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE p.proname = %s AND n.nspname = ANY (current_schemas(true))",
                    (name,),
                )
            # 'v' > 's' > 'i': max() is the most volatile overload
            self._funcs[key] = self.cur.fetchone()[0]
        return self._funcs[key]

    def validated_not_null_check(self, schema, table, column):
        """True when the table has a validated CHECK (column IS NOT NULL)."""
        self.cur.execute(
            "SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'c' "
            "AND convalidated AND pg_get_constraintdef(oid) IN (%s, %s))",
            (self._regclass_text(schema, table), "CHECK ((%s IS NOT NULL))" % column,
             'CHECK (("%s" IS NOT NULL))' % column.replace('"', '""')),
        )
        return self.cur.fetchone()[0]


def _annotations(m, text):
    """[(line, end_offset, rule, reason)] of the ``-- migrate:allow`` comments of a file."""
    out = []
    for tok in pg_parser.scan(text):
        if tok.name != "SQL_COMMENT":
            continue
        comment = text[tok.start:tok.end + 1]
        if not comment.lstrip("-").strip().lower().startswith("migrate:allow"):
            continue
        line = text.count("\n", 0, tok.start) + 1
        match = ALLOW_RE.match(comment.strip())
        if not match:
            raise LintError(
                "%s line %d: malformed annotation %r: write '-- migrate:allow RULE reason' (rules: %s)"
                % (m.file, line, comment.strip(), ", ".join(sorted(RULES)))
            )
        rule = match.group("rule").lower()
        if rule not in RULES:
            raise LintError(
                "%s line %d: unknown lint rule %r in %r; the rules are: %s"
                % (m.file, line, rule, comment.strip(), ", ".join(sorted(RULES)))
            )
        if not match.group("reason"):
            raise LintError(
                "%s line %d: '-- migrate:allow %s' needs a reason after the rule name (it is recorded in the history)"
                % (m.file, line, rule)
            )
        out.append((line, tok.end + 1, rule, match.group("reason")))
    return out


def _node_name(node):
    return node.sval if isinstance(node, pg_ast.String) else str(node)


def _short(text, limit=80):
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def _is_concurrent_reindex(stmt):
    for p in stmt.params or ():
        if isinstance(p, pg_ast.DefElem) and p.defname == "concurrently":
            return p.arg is None or _node_name(p.arg) not in ("false", "0", "off")
    return False


def _vacuum_full(stmt):
    for opt in stmt.options or ():
        if isinstance(opt, pg_ast.DefElem) and opt.defname == "full":
            return opt.arg is None or _node_name(opt.arg) not in ("false", "0", "off")
    return False


def _func_calls(node):
    """Every FuncCall in an expression tree."""
    found = []

    def visit(n):
        if isinstance(n, pg_ast.FuncCall):
            found.append(n)
        if isinstance(n, pg_ast.Node):
            for attr in n:
                visit(getattr(n, attr))
        elif isinstance(n, (list, tuple)):
            for item in n:
                visit(item)

    visit(node)
    return found


class _RunState(object):
    """What the pending files create, so later statements on those tables are no risk."""

    def __init__(self, catalog):
        self.catalog = catalog
        self.created = set()  # (schema or None, name)
        self.created_indexes = {}  # (schema or None, name) -> (schema, table)
        self.not_null_checks = {}  # constraint name -> (table key, column, validated)

    def is_new(self, schema, name):
        return (schema, name) in self.created or (None, name) in self.created or (
            schema is None and any(n == name for _s, n in self.created)
        )

    def risk(self, schema, name):
        """None when the table is no risk, else a phrase saying why it is."""
        if self.is_new(schema, name):
            return None
        qualified, state = self.catalog.table_state(schema, name)
        if state == "rows":
            return "%s has rows" % qualified
        return None


def _relation(rv):
    return (rv.schemaname or None, rv.relname)


def lint(migrations, cur):
    """Lint the pending ``migrations`` (in run order) against the catalog behind ``cur``.

    Returns a dict: ``refused`` [Finding], ``allowed`` {file: [Finding]} (passed by an
    annotation), ``unused`` [warning text], ``skipped`` [warning text] (files pglast cannot
    parse: the server reports their error when they run), ``statements``, ``ms``.
    Raises LintError for a malformed annotation.
    """
    t0 = time.monotonic()
    state = _RunState(Catalog(cur))
    refused, allowed, unused, skipped = [], {}, [], []
    statements = 0
    for m in migrations:
        text = m.text
        try:
            stmts = _statements(text)
        except Exception as e:  # pglast.parser.ParseError
            skipped.append("%s not linted: the parser says %s; the server reports it when the file runs" % (m.file, e))
            continue
        # The scanner finds the comments; the substring test only spares it files without any.
        notes = _annotations(m, text) if "migrate:allow" in text.lower() else []
        used = set()
        spans = [(start, end) for _kind, _body, start, end in stmts]
        for idx, (kind, body, start, end) in enumerate(stmts):
            statements += 1
            line = statement_line(text, start, text[start:end])
            for rule, table, why in _check_raw(kind, body, text[start:end], state, m.no_transaction):
                f = Finding(m.file, line, rule, _short(text[start:end]), table, why)
                reason = _allowance(notes, used, spans, idx, text, rule)
                if reason is None:
                    refused.append(f)
                else:
                    f.allowed_reason = reason
                    allowed.setdefault(m.file, []).append(f)
        for n, note in enumerate(notes):
            if n not in used:
                unused.append("%s line %d: '-- migrate:allow %s' allows nothing: the statement it stands for does not "
                              "trigger that rule (remove it)" % (m.file, note[0], note[2]))
    return {
        "refused": refused,
        "allowed": allowed,
        "unused": unused,
        "skipped": skipped,
        "statements": statements,
        "ms": int((time.monotonic() - t0) * 1000),
    }


# Statements some rule looks at: only these are built as pglast AST nodes (the costly part of
# parsing); the others (CREATE TABLE, INSERT, ...) are read from the parser's JSON.
CHECKED_KINDS = frozenset(("IndexStmt", "DropStmt", "ReindexStmt", "AlterTableStmt", "RenameStmt", "VacuumStmt",
                           "ClusterStmt", "LockStmt"))


def _statements(text):
    """[(kind, JSON body, start, end)] of the statements of ``text``; offsets in characters."""
    doc = json.loads(pg_parser.parse_sql_json(text))
    raw = text.encode("utf-8")
    ascii_only = len(raw) == len(text)
    out = []
    for st in doc.get("stmts", ()):
        kind, body = next(iter(st["stmt"].items()))
        b_start = st.get("stmt_location", 0)
        b_end = b_start + st["stmt_len"] if st.get("stmt_len") else len(raw)
        if ascii_only:
            start, end = b_start, b_end
        else:
            start = len(raw[:b_start].decode("utf-8", "replace"))
            end = start + len(raw[b_start:b_end].decode("utf-8", "replace"))
        out.append((kind, body, start, end))
    return out


def _rv(d):
    return (d.get("schemaname") or None, d["relname"])


def _check_raw(kind, body, stmt_text, state, no_transaction):
    """Rules for one statement given as the parser's JSON; AST only for the kinds a rule reads."""
    if kind == "CreateStmt":
        key = _rv(body["relation"])
        if not (body.get("if_not_exists") and state.catalog.exists(*key)):
            state.created.add(key)
        return []
    if kind == "CreateTableAsStmt":
        state.created.add(_rv(body["into"]["rel"]))
        return []
    if kind not in CHECKED_KINDS:
        return []
    return _check(pg_parser.parse_sql(stmt_text)[0].stmt, state, no_transaction)


def _allowance(notes, used, spans, idx, text, rule):
    """Reason of the annotation for statement ``idx`` and ``rule``, or None.

    An annotation stands for the first statement that ends after it, except that one on the
    last line of a statement (after its end) stands for that statement.
    """
    start, end = spans[idx]
    prev_end = spans[idx - 1][1] if idx else 0
    end_line = text.count("\n", 0, end)
    nxt_start = spans[idx + 1][0] if idx + 1 < len(spans) else len(text) + 1
    for n, (_line, c_end, r, reason) in enumerate(notes):
        if r != rule:
            continue
        c_start_line = text.count("\n", 0, c_end - 1)
        trailing = c_end > end and c_start_line == end_line and c_end <= nxt_start
        leading = prev_end <= c_end <= start and not (idx and c_start_line == text.count("\n", 0, prev_end))
        if trailing or leading:
            used.add(n)
            return reason
    return None


def _check(stmt, state, no_transaction):
    """[(rule, table, why)] for one statement; updates ``state`` with what it creates."""
    out = []
    cat = state.catalog
    if isinstance(stmt, (pg_ast.CreateStmt,)):
        key = _relation(stmt.relation)
        if not (stmt.if_not_exists and cat.exists(*key)):
            state.created.add(key)
        return out
    if isinstance(stmt, pg_ast.CreateTableAsStmt):
        state.created.add(_relation(stmt.into.rel))
        return out
    if isinstance(stmt, pg_ast.IndexStmt):
        key = _relation(stmt.relation)
        if stmt.idxname:
            state.created_indexes[(key[0], stmt.idxname)] = key
        if stmt.concurrent:
            if not no_transaction:
                out.append(("concurrently-in-transaction", "%s.%s" % key if key[0] else key[1], "the file is transactional"))
            return out
        if stmt.if_not_exists and stmt.idxname and cat.exists(key[0], stmt.idxname):
            return out
        why = state.risk(*key)
        if why:
            out.append(("create-index-non-concurrently", key[1], why))
        return out
    if isinstance(stmt, pg_ast.DropStmt):
        kind = stmt.removeType
        for obj in stmt.objects or ():
            names = [_node_name(n) for n in (obj if isinstance(obj, (list, tuple)) else [obj])]
            key = (names[-2] if len(names) > 1 else None, names[-1])
            if kind == pg_enums.ObjectType.OBJECT_INDEX:
                if stmt.concurrent:
                    if not no_transaction:
                        out.append(("concurrently-in-transaction", key[1], "the file is transactional"))
                    continue
                table = state.created_indexes.get(key) or cat.index_table(*key)
                why = state.risk(*table) if table else None
                if why:
                    out.append(("drop-index-non-concurrently", table[1], why))
            elif kind == pg_enums.ObjectType.OBJECT_TABLE:
                why = state.risk(*key)
                if why:
                    out.append(("dropping-table", key[1], why))
        return out
    if isinstance(stmt, pg_ast.ReindexStmt):
        concurrent = _is_concurrent_reindex(stmt)
        target = "%s.%s" % _relation(stmt.relation) if stmt.relation else (stmt.name or "database")
        if concurrent:
            if not no_transaction:
                out.append(("concurrently-in-transaction", target, "the file is transactional"))
            return out
        kind = stmt.kind
        if kind == pg_enums.ReindexObjectType.REINDEX_OBJECT_TABLE:
            why = state.risk(*_relation(stmt.relation))
        elif kind == pg_enums.ReindexObjectType.REINDEX_OBJECT_INDEX:
            key = _relation(stmt.relation)
            table = state.created_indexes.get(key) or cat.index_table(*key)
            why = state.risk(*table) if table else None
        else:
            why = "it reindexes every table of the %s" % ("schema" if stmt.name else "database")
        if why:
            out.append(("reindex-non-concurrently", target, why))
        return out
    if isinstance(stmt, pg_ast.AlterTableStmt):
        if stmt.objtype != pg_enums.ObjectType.OBJECT_TABLE:
            return out
        key = _relation(stmt.relation)
        why = state.risk(*key)
        for cmd in stmt.cmds or ():
            out.extend(_check_alter_cmd(cmd, key, why, state))
        return out
    if isinstance(stmt, pg_ast.RenameStmt):
        if stmt.renameType == pg_enums.ObjectType.OBJECT_COLUMN and stmt.relation is not None:
            why = state.risk(*_relation(stmt.relation))
            if why:
                out.append(("renaming-column", stmt.relation.relname, why))
        elif stmt.renameType == pg_enums.ObjectType.OBJECT_TABLE and stmt.relation is not None:
            key = _relation(stmt.relation)
            why = state.risk(*key)
            if why:
                out.append(("renaming-table", key[1], why))
            if state.is_new(*key):
                state.created.add((key[0], stmt.newname))
        return out
    if isinstance(stmt, pg_ast.VacuumStmt):
        if stmt.is_vacuumcmd and _vacuum_full(stmt):
            rels = [r.relation for r in (stmt.rels or ()) if getattr(r, "relation", None) is not None]
            if not rels:
                out.append(("vacuum-full", "database", "it rewrites every table of the database"))
            for rv in rels:
                why = state.risk(*_relation(rv))
                if why:
                    out.append(("vacuum-full", rv.relname, why))
        return out
    if isinstance(stmt, pg_ast.ClusterStmt):
        if stmt.relation is None:
            out.append(("cluster", "database", "it rewrites every clustered table of the database"))
        else:
            why = state.risk(*_relation(stmt.relation))
            if why:
                out.append(("cluster", stmt.relation.relname, why))
        return out
    if isinstance(stmt, pg_ast.LockStmt):
        for rv in stmt.relations or ():
            why = state.risk(*_relation(rv))
            if why:
                out.append(("lock-table", rv.relname, why))
        return out
    return out


def _not_null_column(expr):
    """Column name when ``expr`` is ``col IS NOT NULL``, else None."""
    if isinstance(expr, pg_ast.NullTest) and expr.nulltesttype == pg_enums.NullTestType.IS_NOT_NULL:
        arg = expr.arg
        if isinstance(arg, pg_ast.ColumnRef) and len(arg.fields) == 1:
            return _node_name(arg.fields[0])
    return None


def _check_alter_cmd(cmd, key, why, state):
    out = []
    t = pg_enums.AlterTableType
    table = key[1]
    sub = cmd.subtype
    if sub == t.AT_AddColumn:
        col = cmd.def_
        constraints = col.constraints or ()
        types = [_node_name(n) for n in (col.typeName.names if col.typeName is not None else ())]
        not_null = any(c.contype == pg_enums.ConstrType.CONSTR_NOTNULL for c in constraints)
        default = next((c for c in constraints if c.contype == pg_enums.ConstrType.CONSTR_DEFAULT), None)
        rewriting = None
        if types and types[-1].lower() in SERIAL_TYPES:
            rewriting = "a %s column fills every row from a sequence" % types[-1]
        elif any(c.contype == pg_enums.ConstrType.CONSTR_IDENTITY for c in constraints):
            rewriting = "an identity column fills every row from a sequence"
        elif any(c.contype == pg_enums.ConstrType.CONSTR_GENERATED for c in constraints):
            rewriting = "a stored generated column computes every row"
        elif default is not None:
            for call in _func_calls(default.raw_expr):
                names = [_node_name(n) for n in call.funcname]
                vol = state.catalog.volatility(names[-2] if len(names) > 1 else None, names[-1])
                if vol != "i" and vol != "s":
                    rewriting = "%s() is %s" % (".".join(names), "volatile" if vol == "v" else "not a known function")
                    break
        if why and rewriting:
            out.append(("volatile-default", table, "%s, and %s" % (why, rewriting)))
        if why and not_null and default is None and not rewriting:
            out.append(("adding-not-null-column-without-default", table, why))
        for c in constraints:
            if why and c.contype in (pg_enums.ConstrType.CONSTR_FOREIGN, pg_enums.ConstrType.CONSTR_CHECK):
                out.append(("constraint-missing-not-valid", table, why))
            if why and c.contype in (pg_enums.ConstrType.CONSTR_UNIQUE, pg_enums.ConstrType.CONSTR_PRIMARY):
                out.append(("adding-unique-without-index", table, why))
    elif sub == t.AT_AlterColumnType:
        if why:
            out.append(("changing-column-type", table, why))
    elif sub == t.AT_SetNotNull:
        column = cmd.name
        validated = any(
            v[0] == key and v[1] == column and v[2] for v in state.not_null_checks.values()
        )
        if why and not validated and not state.catalog.validated_not_null_check(key[0], table, column):
            out.append(("setting-not-null", table, why))
    elif sub == t.AT_AddConstraint:
        c = cmd.def_
        column = _not_null_column(c.raw_expr) if c.contype == pg_enums.ConstrType.CONSTR_CHECK else None
        if column and c.conname:
            state.not_null_checks[c.conname] = (key, column, not c.skip_validation)
        if c.contype in (pg_enums.ConstrType.CONSTR_FOREIGN, pg_enums.ConstrType.CONSTR_CHECK):
            if why and not c.skip_validation:
                out.append(("constraint-missing-not-valid", table, why))
        elif c.contype in (pg_enums.ConstrType.CONSTR_UNIQUE, pg_enums.ConstrType.CONSTR_PRIMARY,
                           pg_enums.ConstrType.CONSTR_EXCLUSION):
            if why and not c.indexname:
                out.append(("adding-unique-without-index", table, why))
    elif sub == t.AT_ValidateConstraint:
        if cmd.name in state.not_null_checks:
            k, column, _v = state.not_null_checks[cmd.name]
            state.not_null_checks[cmd.name] = (k, column, True)
    elif sub == t.AT_DropColumn:
        if why:
            out.append(("dropping-column", table, why))
    return out
