"""Helpers for tests/test_pg_migrate.py (the pg_migrate module and its engine)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg2
import psycopg2.extensions

from ansible_collections.ndis.dbops.plugins.module_utils import migrate


def write_files(directory: Path, files: dict[str, str]) -> Path:
    """Write {file name: SQL text} into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(dsn: str, path: Path, **kw):
    """Run the engine against ``dsn`` (short advisory lock wait unless given)."""
    kw.setdefault("advisory_lock_timeout", 10)
    return migrate.run({"dsn": dsn}, str(path), **kw)


def connect(dsn: str, **kw):
    conn = psycopg2.connect(dsn, **kw)
    conn.autocommit = True
    return conn


def query(dsn: str, sql: str, params=None):
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def scalar(dsn: str, sql: str, params=None):
    rows = query(dsn, sql, params)
    return rows[0][0] if rows else None


def history(dsn: str, table: str = "public.schema_migrations"):
    """[(version, name, checksum, execution_ms)] ordered numerically, or None if no table."""
    if scalar(dsn, "SELECT to_regclass(%s)", (table,)) is None:
        return None
    return query(dsn, f"SELECT version, name, checksum, execution_ms FROM {table} ORDER BY version::numeric")


def table_exists(dsn: str, name: str) -> bool:
    return scalar(dsn, "SELECT to_regclass(%s)", (name,)) is not None


def catalog_snapshot(dsn: str):
    """Everything a migration or the engine could create, as comparable rows."""
    return (
        query(dsn, "SELECT oid, relname, relnamespace, relkind FROM pg_class ORDER BY oid"),
        query(dsn, "SELECT oid, nspname FROM pg_namespace ORDER BY oid"),
        query(dsn, "SELECT oid, extname FROM pg_extension ORDER BY oid"),
    )


def dsn_params(dsn: str) -> dict:
    return psycopg2.extensions.parse_dsn(dsn)
