# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Migration files for ``ndis.dbops.pg_migrate``: the error type, the directory scan, the header
annotations, the statement splitter and the line of a statement.  Plain Python, no database and no Ansible.

* ``NNNN_name.sql`` files; the version is the leading digits, compared numerically.
* Header annotations live in the leading comment block of a file:
  ``-- migrate:no-transaction`` (run statement by statement in autocommit).
  Lint overrides (``-- migrate:allow RULE reason``) may stand anywhere; the lint reads them
  (``migrate_lint``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

from ansible_collections.ndis.dbops.plugins.module_utils.postgres import PostgresError

FILE_RE = re.compile(r"^(\d+)(?:_.*)?\.sql$")
NO_TX_RE = re.compile(r"^--\s*migrate:no-transaction\b", re.IGNORECASE)


class MigrationError(PostgresError):
    """A migration run failed.  ``str(e)`` says what, where and what to do next.

    ``details`` holds machine-readable facts (file, line, sqlstate, ...);
    ``result`` is the partial run result (files applied before the failure stay applied).
    """


# --------------------------------------------------------------------------- files


class Migration(object):
    __slots__ = ("version", "file", "path", "data", "checksum", "no_transaction", "_text")

    def __init__(self, version, file, path, data):
        self.version = version
        self.file = file
        self.path = path
        self.data = data
        self.checksum = hashlib.sha256(data).hexdigest()
        self.no_transaction = _has_no_tx_header(data)
        self._text = None

    @property
    def text(self):
        if self._text is None:
            self._text = self.data.decode("utf-8", errors="replace")
        return self._text

    def brief(self):
        return {"version": str(self.version), "name": self.file}


def _has_no_tx_header(data):
    """True when the leading comment block of the file contains ``-- migrate:no-transaction``."""
    for raw in data.split(b"\n", 64)[:64]:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        if not line.startswith("--"):
            return False
        if NO_TX_RE.match(line):
            return True
    return False


def _parse_version(value, option):
    if value is None or value == "":
        return None
    text = str(value).strip()
    m = re.match(r"^(\d+)(?:_.*)?(?:\.sql)?$", text)
    if not m:
        raise MigrationError(
            "%s=%r is not a migration version: give the leading digits of a file name, e.g. 0042 or 20260101120000"
            % (option, value)
        )
    return int(m.group(1))


def scan(path):
    """Read the migration files of ``path``; returns them sorted by version.

    Raises MigrationError for a missing directory, a ``.sql`` file without a version
    prefix, or two files with the same (numeric) version.
    """
    if not path or not os.path.isdir(path):
        raise MigrationError(
            "migrations directory %r does not exist or is not a directory; set path to the directory "
            "holding the NNNN_name.sql files (on the managed host)" % (path,)
        )
    by_version = {}
    bad = []
    for entry in sorted(os.listdir(path)):
        if entry.startswith(".") or not entry.endswith(".sql"):
            continue
        full = os.path.join(path, entry)
        if not os.path.isfile(full):
            continue
        m = FILE_RE.match(entry)
        if not m:
            bad.append(entry)
            continue
        version = int(m.group(1))
        with open(full, "rb") as fh:
            mig = Migration(version, entry, full, fh.read())
        if version in by_version:
            raise MigrationError(
                "duplicate migration version %d: %s and %s in %s; give each file a unique version prefix"
                % (version, by_version[version].file, entry, path),
                files=[by_version[version].file, entry],
            )
        by_version[version] = mig
    if bad:
        raise MigrationError(
            "file(s) without a version prefix in %s: %s; rename them to NNNN_name.sql "
            "(or move them out of the migrations directory)" % (path, ", ".join(bad)),
            files=bad,
        )
    return [by_version[v] for v in sorted(by_version)]


# ----------------------------------------------------------------- SQL splitting

_DOLLAR_TAG_RE = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_IDENT_CHAR_RE = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]")


def split_statements(text):
    """Split SQL text on top-level ``;``.  Returns ``[(start_offset, statement_text)]``.

    Understands ``--`` and nested ``/* */`` comments, '...' / E'...' strings,
    "identifiers" and $tag$ dollar quotes.  Chunks holding only whitespace/comments
    are dropped.  Not handled: SQL-standard ``BEGIN ATOMIC ... END`` bodies.
    Used only for ``-- migrate:no-transaction`` files.
    """
    out = []
    n = len(text)
    i = 0
    start = 0
    content = False
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and text.startswith("/*", i):
            depth = 1
            i += 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth += 1
                    i += 2
                elif text.startswith("*/", i):
                    depth -= 1
                    i += 2
                else:
                    i += 1
            continue
        if c == "'":
            content = True
            backslash = i > 0 and text[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR_RE.match(text[i - 2]))
            i += 1
            while i < n:
                ch = text[i]
                if backslash and ch == "\\":
                    i += 2
                    continue
                if ch == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
            continue
        if c == '"':
            content = True
            j = text.find('"', i + 1)
            while j >= 0 and j + 1 < n and text[j + 1] == '"':
                j = text.find('"', j + 2)
            i = n if j < 0 else j + 1
            continue
        if c == "$" and not (i > 0 and _IDENT_CHAR_RE.match(text[i - 1])):
            m = _DOLLAR_TAG_RE.match(text, i)
            if m:
                content = True
                tag = m.group(0)
                j = text.find(tag, m.end())
                i = n if j < 0 else j + len(tag)
                continue
        if c == ";":
            if content:
                out.append((start, text[start:i]))
            i += 1
            start = i
            content = False
            continue
        if not c.isspace():
            content = True
        i += 1
    if content:
        out.append((start, text[start:]))
    return out


def statement_line(text, start, statement):
    """1-based line of ``text`` where ``statement`` (found at offset ``start``) begins, leading blanks skipped."""
    lead = len(statement) - len(statement.lstrip())
    return text.count("\n", 0, start + lead) + 1
