"""Real PostgreSQL servers behind moto's DB instances other than the local stack's own.

The local stack runs one embedded server, the one its RDS instance stands for. An instance that
RDS makes from another one (a read replica here; a point-in-time or snapshot restore later) gets a
server of its own, made the way RDS makes it: a physical copy of the source's data directory,
then recovery. One unit does it for every such instance:

    provision(cfg, identifier, source_port, recovery)

1. **Base backup**: ``pg_basebackup`` of the server listening on ``source_port`` (WAL streamed
   with it, ``--checkpoint=fast``) into ``<dir>/instances/<identifier>/pgdata``, as the
   replication role ``ndis_local_replicator`` the stack keeps on its server (password in
   ``<dir>/replication.pgpass``, 0600; pg_hba allows it from 127.0.0.1 only).
2. **Recovery**: ``Recovery(standby=True)`` leaves ``standby.signal`` and a ``primary_conninfo``
   back to the source through a physical replication slot named after the instance
   (``ndis_<identifier>``): a hot standby that streams for as long as it runs, as an RDS read
   replica does. A restore (PITR or snapshot) is the same unit with ``standby=False`` and a
   ``restore_command`` / ``recovery_target_time`` (``recovery.signal``): it replays to the target
   and is promoted. That path is described here, not built yet.
3. **Its own ports**: PostgreSQL and a TLS endpoint (pgbouncer, client TLS required) on free ports
   above the stack's own, never one of the fixed test ports; the endpoint serves the stack's
   certificate (it names 127.0.0.1 and localhost, not a port, and is signed by the stack's CA), so
   ``sslmode=verify-full`` with ``<dir>/tls/ca.crt`` holds for every instance.
4. **Recorded** in ``stack.json`` under ``instances.<identifier>`` (host, port, TLS port, source,
   slot, role), which is where the inventory and ``local-status`` read where each instance listens.

``remove(cfg, identifier)`` stops both processes, drops the slot on the source and deletes the
directory (moto's DeleteDBInstance, the stack's ``stop``/``down``). Callers are the moto patch
(:func:`dbops.moto_server.patch_read_replica_servers`, in moto's threads: stack.json is updated
under a lock) and :mod:`dbops.local_stack`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbops import local_stack as ls

REPLICATION_ROLE = "ndis_local_replicator"
# Ports the tests, Molecule and Docker scenarios fix for their own stacks: an instance's server never takes one.
RESERVED_PORTS = frozenset({55432, 55433, 55434, 55442, 55500, 55501, 55502, 55512, 56432, 56433, 56434})
PORT_SEARCH_START_OFFSET = 10  # the first candidate is the stack's PostgreSQL port + this
BASEBACKUP_TIMEOUT = 1800
_LOCK = threading.Lock()


@dataclass
class Recovery:
    """How the copied data directory recovers: a streaming hot standby of its source (a read
    replica), or (a later restore) replay to a target and promotion."""

    standby: bool = True
    recovery_target_time: str = ""  # restores only: PostgreSQL's recovery_target_time
    restore_command: str = ""  # restores only: how archived WAL is fetched


def instance_dir(cfg: ls.Config, identifier: str) -> Path:
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{0,62}", identifier):
        raise ls.StackError(f"not a DB instance identifier: {identifier!r}")
    return cfg.dir / "instances" / identifier


def slot_name(identifier: str) -> str:
    return "ndis_" + identifier.lower().replace("-", "_")


def pgpass_file(cfg: ls.Config) -> Path:
    return cfg.dir / "replication.pgpass"


def recorded(cfg: ls.Config) -> dict[str, dict[str, Any]]:
    """Every instance server stack.json records: {identifier: {...}}."""
    return dict((ls.read_json(cfg.stack_json) or {}).get("instances") or {})


def _update_stack_json(cfg: ls.Config, identifier: str, entry: dict[str, Any] | None) -> None:
    data = ls.read_json(cfg.stack_json) or {}
    instances = dict(data.get("instances") or {})
    if entry is None:
        instances.pop(identifier, None)
    else:
        instances[identifier] = entry
    data["instances"] = instances
    tmp = cfg.stack_json.with_suffix(".json.instances.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, cfg.stack_json)


def _pick_port(cfg: ls.Config, taken: set[int]) -> int:
    port = max(cfg.pg_port, cfg.tls_port, cfg.moto_port) + PORT_SEARCH_START_OFFSET
    while port < 65535:
        if port not in RESERVED_PORTS and port not in taken and ls.port_free(port):
            return port
        port += 1
    raise ls.StackError("no free port for an instance's server above the stack's own")


def _connect_admin(cfg: ls.Config, port: int) -> Any:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user=cfg.admin_user, dbname="postgres",
                            password=cfg.password_file.read_text().strip(), connect_timeout=10)
    conn.autocommit = True
    return conn


def ensure_replication(cfg: ls.Config) -> None:
    """The stack's server accepts replication from ``ndis_local_replicator`` (pg_hba from
    :func:`dbops.local_stack.write_pg_hba`, reloaded when an older start wrote it without)."""
    pgpass = pgpass_file(cfg)
    password = pgpass.read_text().strip().rsplit(":", 1)[-1] if pgpass.exists() else ""
    if not password:
        password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        ls.write_private(pgpass, f"127.0.0.1:*:*:{REPLICATION_ROLE}:{password}\n".encode())
    hba = cfg.pgdata / "pg_hba.conf"
    reload = REPLICATION_ROLE not in hba.read_text()
    if reload:
        ls.write_pg_hba(cfg)
    conn = _connect_admin(cfg, cfg.pg_port)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(f"{verb} ROLE {REPLICATION_ROLE} LOGIN REPLICATION PASSWORD %s", (password,))
            if reload:
                cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def _run_pg(cmd: list[str], cfg: ls.Config, timeout: int, what: str, env: dict[str, str] | None = None) -> None:
    res = subprocess.run(ls.as_pg_user(cmd), capture_output=True, text=True, cwd=cfg.dir,
                         stdin=subprocess.DEVNULL, timeout=timeout, env=env)
    if res.returncode != 0:
        raise ls.StackError(f"{what} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


def provision(cfg: ls.Config, identifier: str, source: str, source_port: int,
              recovery: Recovery, role: str = "replica") -> dict[str, Any]:
    """Make and start the server behind moto instance ``identifier`` from a base backup of the
    server on ``source_port`` (moto instance ``source``); returns its stack.json entry."""
    if not recovery.standby:
        raise ls.StackError("only standbys (read replicas) are built; restores reuse this unit later")
    cfg = ls.effective(cfg)
    home = instance_dir(cfg, identifier)
    bindir = ls.resolve_bindir(cfg, create=False)
    if identifier in recorded(cfg) or home.exists():
        remove(cfg, identifier)
    ensure_replication(cfg)
    with _LOCK:
        taken = {p for e in recorded(cfg).values() for p in (e["port"], e["tls"]["port"])}
        port = _pick_port(cfg, taken)
        tls_port = _pick_port(cfg, taken | {port})
        entry = {"role": role, "source": source, "source_port": source_port, "host": "127.0.0.1",
                 "port": port, "slot": slot_name(identifier), "dir": str(home), "state": "creating",
                 "tls": {"host": "127.0.0.1", "port": tls_port, "ca_file": str(cfg.tls_dir / "ca.crt")}}
        _update_stack_json(cfg, identifier, entry)
    ls.makedirs_0755(home)
    for d in (home, home / "run", home / "pgbouncer"):
        d.mkdir(mode=0o755, exist_ok=True)
        ls.chown_pg(d)
    pgdata = home / "pgdata"
    started = time.monotonic()
    ls.log(f"{identifier}: base backup of 127.0.0.1:{source_port} into {pgdata} (slot {entry['slot']})")
    env = dict(os.environ, PGPASSFILE=str(pgpass_file(cfg)))
    _run_pg([str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(source_port), "-U", REPLICATION_ROLE,
             "-D", str(pgdata), "-X", "stream", "--checkpoint=fast", "-C", "-S", entry["slot"], "-w"],
            cfg, BASEBACKUP_TIMEOUT, f"pg_basebackup of 127.0.0.1:{source_port} for {identifier}", env)
    ls.log(f"{identifier}: base backup done in {time.monotonic() - started:.1f} s")
    (pgdata / "standby.signal").touch()
    ls.chown_pg(pgdata / "standby.signal")
    ls.write_server_conf(pgdata, port, home / "run", extra=(
        f"primary_conninfo = 'host=127.0.0.1 port={source_port} user={REPLICATION_ROLE} "
        f"passfile={pgpass_file(cfg)} application_name={identifier}'\n"
        f"primary_slot_name = '{entry['slot']}'\n"
        "hot_standby = on\n"))
    start(cfg, identifier)
    entry["state"] = "running"
    with _LOCK:
        _update_stack_json(cfg, identifier, entry)
    ls.log(f"{identifier}: standby of {source} on 127.0.0.1:{port}, TLS endpoint 127.0.0.1:{tls_port} "
           f"({time.monotonic() - started:.1f} s)")
    return entry


def _bouncer_paths(home: Path) -> tuple[Path, Path, Path]:
    return home / "pgbouncer" / "pgbouncer.ini", home / "pgbouncer" / "pgbouncer.pid", home / "pgbouncer.log"


def start(cfg: ls.Config, identifier: str) -> None:
    """Start the recorded server and its TLS endpoint (each left alone when it runs)."""
    cfg = ls.effective(cfg)
    entry = recorded(cfg)[identifier]
    home = Path(entry["dir"])
    pgdata = home / "pgdata"
    bindir = ls.resolve_bindir(cfg, create=False)
    if server_pid(home) is None:
        _run_pg([str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(home / "postgres.log"), "-w",
                 "-t", str(ls.PG_START_TIMEOUT), "start"], cfg, ls.PG_START_TIMEOUT + 30,
                f"starting the server of {identifier} (see {home / 'postgres.log'})")
    ini, pidfile, logfile = _bouncer_paths(home)
    if _bouncer_pid(pidfile) is None:
        ls.write_bouncer_conf(cfg, ini=ini, pg_port=entry["port"], listen_port=entry["tls"]["port"],
                              logfile=logfile, pidfile=pidfile)
        _run_pg([ls.pgbouncer_binary(), "-d", str(ini)], cfg, 30, f"starting the TLS endpoint of {identifier}")
        deadline = time.monotonic() + ls.BOUNCER_START_TIMEOUT
        while not (_bouncer_pid(pidfile) and ls.port_answers(entry["tls"]["port"])):
            if time.monotonic() > deadline:
                raise ls.StackError(f"the TLS endpoint of {identifier} did not start; see {logfile}")
            time.sleep(0.2)


def server_pid(home: Path) -> int | None:
    try:
        pid = int((home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if ls.pid_alive(pid) else None


def _bouncer_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if ls.pid_alive(pid) else None


def stop(cfg: ls.Config, identifier: str) -> None:
    """Stop the server and its TLS endpoint; the data directory stays."""
    cfg = ls.effective(cfg)
    home = instance_dir(cfg, identifier)
    pid = _bouncer_pid(_bouncer_paths(home)[1])
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while ls.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if server_pid(home) is not None:
        bindir = ls.resolve_bindir(cfg, create=False)
        _run_pg([str(bindir / "pg_ctl"), "-D", str(home / "pgdata"), "-m", "fast", "-w", "-t", "60", "stop"],
                cfg, 90, f"stopping the server of {identifier}")


def remove(cfg: ls.Config, identifier: str) -> None:
    """Stop the instance's server, drop its slot on the source, delete its directory and record."""
    cfg = ls.effective(cfg)
    entry = recorded(cfg).get(identifier) or {}
    stop(cfg, identifier)
    if entry.get("slot") and entry.get("source_port") and ls.port_answers(int(entry["source_port"])):
        conn = _connect_admin(cfg, int(entry["source_port"]))
        try:
            with conn.cursor() as cur:
                deadline = time.monotonic() + 10  # the stopped standby's walsender may take a moment to go
                while True:
                    cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (entry["slot"],))
                    row = cur.fetchone()
                    if row is None:
                        break
                    if not row[0] or time.monotonic() > deadline:
                        cur.execute("SELECT pg_drop_replication_slot(%s)", (entry["slot"],))
                        break
                    time.sleep(0.2)
        finally:
            conn.close()
    shutil.rmtree(instance_dir(cfg, identifier), ignore_errors=True)
    with _LOCK:
        _update_stack_json(cfg, identifier, None)
    ls.log(f"{identifier}: server removed")


def remove_all(cfg: ls.Config) -> None:
    for identifier in recorded(cfg):
        remove(cfg, identifier)


def status(cfg: ls.Config) -> dict[str, dict[str, Any]]:
    """Each recorded instance server: its entry plus running / pid."""
    out = {}
    for identifier, entry in recorded(cfg).items():
        home = Path(entry["dir"])
        out[identifier] = dict(entry, pid=server_pid(home), running=server_pid(home) is not None,
                               tls=dict(entry["tls"], pid=_bouncer_pid(_bouncer_paths(home)[1])))
    return out
