# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""The pgvector version floor: which installed versions carry a defect worth stopping for,
and what the engine does about it.

``DEFECTS`` is the table, from pgvector's CHANGELOG and advisories.  Each entry covers an
inclusive version range and has an ``action``:

* ``block``     the version is refused (no index is built or tuned on it);
* ``serial``    index builds run with ``max_parallel_maintenance_workers = 0`` (the defect is in
                parallel builds), and the verify play WARNs with the fix;
* ``warn``      reported, nothing changes.

An entry with ``rebuild`` damaged indexes, and the damage outlives the fix: the method whose
indexes an upgrade past ``fixed`` rebuilds (``hnsw``, ``ivfflat``, or ``unlogged``: any vector
index on an unlogged table). The rule (``rebuild_reasons``): when the server starts shipping a
pgvector at or past ``fixed`` and the version installed in a database (``pg_extension``, what
its indexes were last built or vacuumed under) is in the entry's range, every index the entry
names is rebuilt concurrently before ``ALTER EXTENSION vector UPDATE``. From pgvector's
CHANGELOG: 0.3.1 "recreate all ivfflat indexes" (inserts corrupted them from 0.2.7); 0.7.2
fixed the initialization fork of indexes on unlogged tables; 0.8.2 fixed a buffer overflow in
parallel HNSW builds (an index built that way may be damaged); 0.8.3 fixed "possible index
corruption with HNSW vacuuming" (any HNSW index vacuumed since 0.5.0, i.e. every one with
deletes or updates). Defects that raise errors rather than damage an index (0.8.4's "hnsw
graph not repaired" error, 0.8.6's IVFFlat build overflow on 32-bit systems, which RDS does
not run) need no rebuild.

``assess(version)`` returns what applies to one version; ``check_extension`` is the gate the
index module runs (and its optional ``ALTER EXTENSION vector UPDATE``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

UPDATE_FIX = ("move the RDS instance to a PostgreSQL minor version that ships pgvector %s or later, then run "
              "ALTER EXTENSION vector UPDATE in the database (pgvector_update_extension: true runs it)")

DEFECTS = (
    {"first": "0.2.7", "last": "0.3.0", "fixed": "0.3.1", "action": "block", "rebuild": "ivfflat",
     "what": "inserts silently corrupt ivfflat indexes",
     "fix": (UPDATE_FIX % "0.3.1") + ", and rebuild every ivfflat index"},
    {"first": "0.0.0", "last": "0.3.0", "fixed": "0.3.1", "action": "block",
     "what": "segmentation fault building an ivfflat index with lists > 6500", "fix": UPDATE_FIX % "0.3.1"},
    {"first": "0.4.0", "last": "0.4.3", "fixed": "0.4.4", "action": "block",
     "what": "segmentation fault with text input", "fix": UPDATE_FIX % "0.4.4"},
    {"first": "0.6.0", "last": "0.8.1", "fixed": "0.8.2", "action": "serial", "cve": "CVE-2026-3172",
     "rebuild": "hnsw",
     "what": "CVE-2026-3172: buffer overflow in parallel HNSW index builds (0.7.4 also fixed their locking)",
     "fix": UPDATE_FIX % "0.8.2"},
    {"first": "0.6.0", "last": "0.6.0", "fixed": "0.6.1", "action": "warn",
     "what": "segmentation fault when pgvector is in shared_preload_libraries", "fix": UPDATE_FIX % "0.6.1"},
    {"first": "0.7.0", "last": "0.7.1", "fixed": "0.7.2", "action": "warn", "rebuild": "unlogged",
     "what": "indexes on unlogged tables get a wrong initialization fork", "fix": UPDATE_FIX % "0.7.2"},
    {"first": "0.5.0", "last": "0.8.2", "fixed": "0.8.3", "action": "warn", "rebuild": "hnsw",
     "what": "possible index corruption with HNSW vacuuming",
     "fix": (UPDATE_FIX % "0.8.3") + "; the upgrade path rebuilds every HNSW index"},
    {"first": "0.7.0", "last": "0.7.2", "fixed": "0.7.3", "action": "warn",
     "what": "'failed to add index item' building sparsevec indexes", "fix": UPDATE_FIX % "0.7.3"},
)
ITERATIVE_SCAN_SINCE = "0.8.0"
HALFVEC_SINCE = "0.7.0"


class ExtensionError(Exception):
    def __init__(self, msg):
        super(ExtensionError, self).__init__(msg)
        self.msg = msg


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", str(v or ""))[:3]) or (0,)


def assess(version):
    """What the table says about one version: {version, blocked, serial_builds, defects, warnings}.

    ``warnings`` are sentences naming the defect, the version that fixes it and the fix.
    """
    v = version_tuple(version)
    hits = [d for d in DEFECTS if version_tuple(d["first"]) <= v <= version_tuple(d["last"])]
    out = {"version": version, "defects": hits, "blocked": [d for d in hits if d["action"] == "block"],
           "serial_builds": any(d["action"] == "serial" for d in hits), "warnings": []}
    for d in hits:
        line = "pgvector %s: %s (fixed in %s)" % (version, d["what"], d["fixed"])
        if d["action"] == "serial":
            line += "; index builds run with max_parallel_maintenance_workers = 0 until then"
        out["warnings"].append(line + ". Fix: " + d["fix"])
    return out


def rebuild_reasons(old, new, method, unlogged=False):
    """Why an index of ``method`` ('hnsw'/'ivfflat') last built or vacuumed under pgvector ``old``
    must be rebuilt once ``new`` runs: the table's index-damaging defects that ``old`` has and
    ``new`` fixes (see the module's docstring). An empty list: keep the index."""
    o, n = version_tuple(old), version_tuple(new)
    out = []
    for d in DEFECTS:
        what = d.get("rebuild")
        if not what or not version_tuple(d["first"]) <= o <= version_tuple(d["last"]):
            continue
        if n < version_tuple(d["fixed"]):
            continue
        if what == method or (what == "unlogged" and unlogged):
            out.append("pgvector %s: %s (fixed in %s)" % (old, d["what"], d["fixed"]))
    return out


def parallel_workers_for(version, requested):
    """The max_parallel_maintenance_workers a build session gets on ``version`` (None = server default)."""
    if assess(version)["serial_builds"]:
        return 0
    return requested


def supports_iterative_scan(version):
    return version_tuple(version) >= version_tuple(ITERATIVE_SCAN_SINCE)


def extension_info(cur):
    cur.execute(
        "SELECT e.extversion, n.nspname, (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')"
        " FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'")
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        avail = cur.fetchone()
        return {"installed": None, "schema": None, "available": avail[0] if avail else None}
    return {"installed": row[0], "schema": row[1], "available": row[2]}


def check_extension(cur, min_version="0.5.0", update=False, check_mode=False, where=""):
    """Version gate and optional ALTER EXTENSION vector UPDATE.  Returns (info, queries).

    ``info`` gains ``assessment`` (see ``assess``) for the version in effect after the update.
    """
    info = extension_info(cur)
    queries = []
    if info["installed"] is None:
        raise ExtensionError(
            "pgvector is not installed in %s (available: %s). Create it first (CREATE EXTENSION vector, the "
            "pgvector role's extension phase)." % (where, info["available"] or "none"))
    if update and info["available"] and version_tuple(info["available"]) > version_tuple(info["installed"]):
        queries.append("ALTER EXTENSION vector UPDATE")
        if not check_mode:
            cur.execute("ALTER EXTENSION vector UPDATE")
            info = extension_info(cur)
        else:
            info = dict(info, installed_after=info["available"])
    effective = info.get("installed_after") or info["installed"]
    if version_tuple(effective) < version_tuple(min_version):
        raise ExtensionError(
            "pgvector %s is installed in %s, older than the required %s (HNSW needs 0.5.0); available: %s. "
            "Set update_extension (pgvector_update_extension) to run ALTER EXTENSION vector UPDATE, or on RDS move to a "
            "minor version that ships a newer pgvector." % (effective, where, min_version, info["available"]))
    a = assess(effective)
    if a["blocked"]:
        raise ExtensionError("pgvector %s in %s is a known-bad version: %s" % (effective, where, " ".join(
            "%s (fixed in %s). Fix: %s." % (d["what"], d["fixed"], d["fix"]) for d in a["blocked"])))
    info["assessment"] = {"serial_builds": a["serial_builds"], "warnings": a["warnings"]}
    return info, queries
