"""Make sure the collections in requirements.yml are installed.

The pinned `ansible` package already carries amazon.aws, community.aws,
community.postgresql and ansible.posix, so on most machines this only checks. A
collection that is missing or outside its version range is installed with
`ansible-galaxy collection install`, which needs Galaxy to be reachable.

    python -m dbops.collections requirements.yml
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version


def installed_collections(galaxy: str) -> dict[str, str]:
    """Name -> highest installed version, as ansible-galaxy sees them."""
    out = subprocess.run(
        [galaxy, "collection", "list", "--format", "json"], check=True, capture_output=True, text=True
    ).stdout
    found: dict[str, str] = {}
    for collections in json.loads(out or "{}").values():
        for name, info in collections.items():
            version = info.get("version") or "0"
            if name not in found or Version(version) > Version(found[name]):
                found[name] = version
    return found


def missing(requirements: Path, galaxy: str) -> list[str]:
    wanted = yaml.safe_load(requirements.read_text())["collections"]
    have = installed_collections(galaxy)
    problems = []
    for item in wanted:
        name, spec = item["name"], SpecifierSet(str(item.get("version", "*")).replace("*", ">=0"))
        if name not in have:
            problems.append(f"{name} is not installed")
        elif Version(have[name]) not in spec:
            problems.append(f"{name} {have[name]} is outside {spec}")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    requirements = Path(argv[0] if argv else "requirements.yml")
    galaxy = str(Path(sys.executable).with_name("ansible-galaxy"))
    problems = missing(requirements, galaxy)
    if not problems:
        print(f"collections: all of {requirements} installed", file=sys.stderr)
        return 0
    print("collections: " + "; ".join(problems) + " - installing from Galaxy", file=sys.stderr)
    done = subprocess.run([galaxy, "collection", "install", "-r", str(requirements)], timeout=600)
    if done.returncode != 0:
        print(
            "collections: ansible-galaxy could not install them. Galaxy may be unreachable: "
            "`pip install -r requirements.txt` brings them with the ansible package.",
            file=sys.stderr,
        )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
