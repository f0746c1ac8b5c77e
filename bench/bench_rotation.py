"""Benchmark: what an app that caches its DATABASE_URL sees while the app password rotates.

Against a deployed local stack ($NDIS_LOCAL_STACK_DIR, default /tmp/ndis-local-stack; run `make local`
first). An app reads the stored URL once, then opens a new connection (and runs SELECT 1) every 0.2 s,
from before the rotation until HOLD seconds after it: the loop of tests/test_tls_and_secrets.py. Each
rotation is `ansible-playbook playbooks/rotate_app_password.yml -l local` run from PROJECT (default: this
checkout), so an older checkout of the project, deployed to its own stack, gives the baseline on the same
loop. Prints, per rotation: logins tried, logins failed, outage seconds (first failed login to the end of
the loop: the cached URL never comes back), the rotation's wall time, and the URL's login before and after.
Never exits non-zero on a result.

    python bench/bench_rotation.py [--project DIR] [--rotations N] [--hold SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import psycopg2

HERE = Path(__file__).resolve().parent.parent


class AppLoop:
    def __init__(self, url: str, every: float = 0.2):
        self.url, self.every = url, every
        self.tries, self.failed_at = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.tries += 1
            try:
                conn = psycopg2.connect(self.url, connect_timeout=5)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.close()
            except psycopg2.Error:
                self.failed_at.append(time.monotonic())
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", default=str(HERE), help="checkout whose rotation playbook runs")
    ap.add_argument("--rotations", type=int, default=2)
    ap.add_argument("--hold", type=float, default=20.0, help="seconds the loop goes on after each rotation")
    args = ap.parse_args()
    stack_dir = Path(os.environ.get("NDIS_LOCAL_STACK_DIR", "/tmp/ndis-local-stack"))
    aws = json.loads((stack_dir / "stack.json").read_text())["aws"]
    ssm = boto3.client("ssm", endpoint_url=aws["endpoint_url"], region_name=aws["region"],
                       aws_access_key_id=aws["access_key_id"], aws_secret_access_key=aws["secret_access_key"])
    name = "/ndis-chatbot/local/DATABASE_URL"
    project = Path(args.project).resolve()
    env = dict(os.environ, NDIS_LOCAL_STACK_DIR=str(stack_dir), ANSIBLE_NOCOLOR="1")
    rows = []
    for n in range(1, args.rotations + 1):
        url = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        before = url.split("//", 1)[1].split(":", 1)[0]
        with AppLoop(url) as loop:
            time.sleep(2)
            start = time.monotonic()
            proc = subprocess.run([str(HERE / ".venv" / "bin" / "ansible-playbook"), "playbooks/rotate_app_password.yml",
                                   "-l", "local", "-e", "rotate_app_password_min_hours=0"],
                                  cwd=project, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            took = time.monotonic() - start
            time.sleep(args.hold)
            end = time.monotonic()
        after = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"].split("//", 1)[1].split(":", 1)[0]
        outage = (end - loop.failed_at[0]) if loop.failed_at else 0.0
        rows.append((n, loop.tries, len(loop.failed_at), outage, took, before, after, proc.returncode))
    print(f"rotation of the app password, project {project}, an app holding the URL it read (a login every 0.2 s,"
          f" {args.hold:.0f} s after each rotation)")
    print(f"{'#':>2} {'logins':>7} {'failed':>7} {'outage s':>9} {'rotation s':>11}  URL login before -> after  rc")
    for n, tries, failed, outage, took, before, after, rc in rows:
        print(f"{n:>2} {tries:>7} {failed:>7} {outage:>9.1f} {took:>11.1f}  {before} -> {after}  {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
