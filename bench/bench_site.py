#!/usr/bin/env python3
"""Wall time of the site playbook on the local stack.

Side by side in one run (medians of --reps runs each):
  * a no-op `site.yml` run (everything deployed already),
  * `site.yml --check`,
  * the first deployment of 1 environment and of 10 environments in one run (10 hosts of
    group `local`, each with its own instance, database, owner role, app user and SSM names),
  * the no-op run of those 10 environments,
  * the engine's floor: a playbook of as many tasks as the site runs per host, each a
    `debug` (no module process, no I/O), for 1 host and for 10, with the same
    configuration and forks. No playbook of that many tasks scales better than this
    on the machine, whatever its tasks do.
Prints seconds and ratios. Targets: no-op < 30 s; check < 30 s; 10 environments < 3x one.

    python bench/bench_site.py [--reps 3] [--envs 10]

Uses the local stack in $NDIS_LOCAL_STACK_DIR (default /tmp/ndis-local-stack; `make local-up`).
The environments it adds are dropped afterwards (databases and roles; moto keeps its copies
until the stack stops).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STACK_DIR = Path(os.environ.get("NDIS_LOCAL_STACK_DIR", "/tmp/ndis-local-stack"))


def run_site(inventory: Path | None, *args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NDIS_LOCAL_STACK_DIR=str(STACK_DIR), ANSIBLE_FORKS="10")
    cmd = [str(BIN / "ansible-playbook"), "site.yml", "-l", "local", *args]
    if inventory:
        cmd += ["-i", str(inventory)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("fatal:", "failed:"))]
        sys.exit(f"site run failed ({' '.join(args)}):\n" + "\n".join(failed[:10]) + "\n" + proc.stdout[-3000:])
    return dt, proc.stdout


def tasks_per_host(output: str) -> int:
    """Tasks run or skipped on one host, from the recap."""
    recap = output.split("PLAY RECAP", 1)[-1]
    return int(re.search(r"ok=(\d+)", recap).group(1)) + int(re.search(r"skipped=(\d+)", recap).group(1))


def engine_floor(tmp: Path, n_tasks: int, n_hosts: int) -> float:
    """Wall time of n_tasks `debug` tasks on n_hosts local hosts (fresh files, same config)."""
    work = tmp / f"floor-{n_hosts}"
    work.mkdir(exist_ok=True)
    tasks = "".join(f"    - name: Task {i}\n      ansible.builtin.debug:\n        msg: {i}\n" for i in range(n_tasks))
    (work / "floor.yml").write_text(f"---\n- name: Floor\n  hosts: all\n  gather_facts: false\n  tasks:\n{tasks}")
    (work / "hosts.yml").write_text("---\nall:\n  hosts:\n" + "".join(
        f"    floor-{i:02d}:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        for i in range(n_hosts)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORKS="10")
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "ansible-playbook"), "-i", str(work / "hosts.yml"), str(work / "floor.yml")],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP", 1)[-1]))


def inventory(tmp: Path, hosts: list[str]) -> Path:
    """An inventory of `local` hosts, each a separate environment on the same stack."""
    inv = tmp / f"inv-{len(hosts)}"
    inv.mkdir()
    (inv / "group_vars").symlink_to(ROOT / "group_vars")
    lines = ["---", "local:", "  hosts:"]
    for h in hosts:
        n = h.rsplit("-", 1)[-1]
        lines += [f"    {h}:", f"      app_name: {h}", f"      app_db_name: bench_{n}",
                  f"      app_db_user: bench_app_{n}", f"      rds_instance_identifier: {h}",
                  f"      backup_policy_dump_bucket: {h}-dumps"]
    (inv / "hosts.yml").write_text("\n".join(lines) + "\n")
    return inv


def cleanup(hosts: list[str]) -> None:
    stack = json.loads((STACK_DIR / "stack.json").read_text())
    pg = stack["pg"]
    conn = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], dbname="postgres",
                            password=Path(pg["password_file"]).read_text().strip())
    conn.autocommit = True
    with conn.cursor() as cur:
        for h in hosts:
            n = h.rsplit("-", 1)[-1]
            cur.execute(f'DROP DATABASE IF EXISTS "bench_{n}" WITH (FORCE)')
            for role in (f"bench_app_{n}", f"bench_{n}_owner", f"bench_{n}_readonly"):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone():
                    cur.execute(f'DROP ROLE "{role}"')
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--envs", type=int, default=10)
    args = parser.parse_args()
    if not (STACK_DIR / "stack.json").is_file():
        sys.exit(f"no local stack in {STACK_DIR}: run `make local-up` first")

    run_site(None)  # make sure the default environment is deployed
    noop, check = [], []
    for _ in range(args.reps):
        dt, out = run_site(None)
        assert changed(out) == 0, "the no-op run changed something"
        noop.append(dt)
        n_tasks = tasks_per_host(out)
        dt, _ = run_site(None, "--check")
        check.append(dt)

    med_noop, med_check = statistics.median(noop), statistics.median(check)
    print(f"no-op site.yml (1 env): {med_noop:.1f} s; --check: {med_check:.1f} s", flush=True)
    tag = uuid.uuid4().hex[:6]
    one = [f"bench-{tag}-{i:02d}" for i in range(1)]
    many = [f"bench-{tag}-{i:02d}" for i in range(1, args.envs + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-site-"))
    try:
        first_one, _ = run_site(inventory(tmp, one))
        # the 1-env baseline of the ratio runs the same inventory shape as the 10 (no runner host)
        noop_one = statistics.median(run_site(tmp / "inv-1")[0] for _ in range(args.reps))
        first_many, _ = run_site(inventory(tmp, many))
        noop_many, out = run_site(tmp / f"inv-{len(many)}")
        assert changed(out) == 0, "the no-op run of many environments changed something"
        floor_one = statistics.median(engine_floor(tmp, n_tasks, 1) for _ in range(args.reps))
        floor_many = engine_floor(tmp, n_tasks, args.envs)
    finally:
        cleanup(one + many)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        ("no-op site.yml (1 env, deployed)", med_noop, "", "< 30 s", med_noop < 30),
        ("site.yml --check (1 env, deployed)", med_check, f"{med_check / med_noop:.2f}x no-op", "< 30 s", med_check < 30),
        ("first deployment, 1 env", first_one, "1.00x", "", None),
        (f"first deployment, {args.envs} envs in one run", first_many, f"{first_many / first_one:.2f}x 1 env",
         "< 3x 1 env", first_many / first_one < 3),
        ("no-op, 1 env (same inventory shape)", noop_one, "1.00x", "", None),
        (f"no-op, {args.envs} envs in one run", noop_many, f"{noop_many / noop_one:.2f}x 1 env no-op",
         "< 3x 1 env", noop_many / noop_one < 3),
        (f"engine floor: {n_tasks} debug tasks, 1 host", floor_one, "1.00x", "", None),
        (f"engine floor: {n_tasks} debug tasks, {args.envs} hosts", floor_many, f"{floor_many / floor_one:.2f}x 1 host",
         "", None),
    ]
    print(f"\nsite.yml on the local stack ({args.reps} reps for the 1-env rows, medians; forks=10, {os.cpu_count()} cores)")
    print(f"{'run':44} {'seconds':>8}  {'ratio':24} target")
    for name, secs, ratio, target, ok in rows:
        verdict = "" if ok is None else (" ok" if ok else " MISSED")
        print(f"{name:44} {secs:8.1f}  {ratio:24} {target}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
