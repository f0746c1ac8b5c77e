"""Each role's inputs agree across defaults/main.yml, meta/argument_specs.yml and README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks").is_dir())


def default_keys(role: str) -> set[str]:
    """Keys set in defaults/main.yml plus required ones left commented out (`# name: ...`)."""
    text = (ROLES_DIR / role / "defaults" / "main.yml").read_text()
    keys = set((yaml.safe_load(text) or {}).keys())
    keys |= set(re.findall(rf"^# ({role}_\w+):", text, flags=re.M))
    return keys


def spec_options(role: str) -> dict[str, dict]:
    specs = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict] = {}
    for entry in specs.values():
        options.update(entry.get("options", {}))
    return options


def test_the_seven_roles_exist():
    assert ROLES == ["backup_policy", "migrations", "monitoring", "pgvector", "postgres_db", "rds_instance", "ssm_secret"]


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_argument_specs(role):
    assert default_keys(role) == set(spec_options(role))


@pytest.mark.parametrize("role", ROLES)
def test_inputs_are_prefixed_and_described(role):
    for name, spec in spec_options(role).items():
        assert name.startswith(role + "_"), name
        assert spec.get("description"), f"{name} has no description"
        assert "type" in spec, f"{name} has no type"


@pytest.mark.parametrize("role", ROLES)
def test_required_inputs_have_no_default(role):
    defaults = yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()) or {}
    for name, spec in spec_options(role).items():
        if spec.get("required"):
            assert name not in defaults, f"{name} is required but has a default"
        else:
            assert name in defaults, f"{name} is optional but missing from defaults"
            assert spec.get("default") == defaults[name], f"{name}: spec default {spec.get('default')!r} != {defaults[name]!r}"


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_every_input(role):
    readme = (ROLES_DIR / role / "README.md").read_text()
    section = readme.split("\n## Variables\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))
    assert documented == set(spec_options(role))


def readme_rows(role: str) -> dict[str, tuple[str, str]]:
    """README variable table rows: name -> (type column, default column)."""
    readme = (ROLES_DIR / role / "README.md").read_text()
    return {m[1]: (m[2].strip(), m[3].strip()) for m in re.finditer(r"^\| `(\w+)` \| ([^|]*) \| ([^|]*) \|", readme, flags=re.M)}


@pytest.mark.parametrize("role", ROLES)
def test_readme_types_and_defaults_match_argument_specs(role):
    """The README's type and default columns say what argument_specs says (`list of str`, `required`, `value`)."""
    problems = []
    for name, spec in spec_options(role).items():
        if name not in readme_rows(role):
            continue  # test_readme_documents_every_input reports it
        type_col, default_col = readme_rows(role)[name]
        want_type = spec["type"] + (f" of {spec['elements']}" if spec.get("elements") else "")
        if type_col != want_type:
            problems.append(f"{name}: README type {type_col!r}, argument_specs {want_type!r}")
        if spec.get("required"):
            if default_col != "required":
                problems.append(f"{name}: required, but README default column says {default_col!r}")
        elif not (default_col.startswith("`") and default_col.endswith("`")):
            problems.append(f"{name}: README default {default_col!r} should be the default in backquotes")
        elif yaml.safe_load(default_col[1:-1]) != spec.get("default"):
            problems.append(f"{name}: README default {default_col}, argument_specs {spec.get('default')!r}")
    assert not problems, "\n".join(problems)


# --- facts the roles publish --------------------------------------------------------------------
REPO_ROOT = ROLES_DIR.parent
FACTS_TABLE = REPO_ROOT / "group_vars" / "all.yml"


def tasks_of(tasks):
    """Every task of a task file, blocks opened (block, rescue, always)."""
    for task in tasks or []:
        if isinstance(task, dict):
            for part in ("block", "rescue", "always"):
                yield from tasks_of(task.get(part))
            yield task


def published_facts(role: str) -> set[str]:
    """What the role sets for others: set_fact keys and registered names without a leading underscore."""
    facts = set()
    for path in sorted((ROLES_DIR / role / "tasks").glob("*.yml")):
        for task in tasks_of(yaml.safe_load(path.read_text())):
            for key in ("ansible.builtin.set_fact", "set_fact"):
                if isinstance(task.get(key), dict):
                    facts |= {name for name in task[key] if name != "cacheable" and not name.startswith("_")}
            if isinstance(task.get("register"), str) and not task["register"].startswith("_"):
                facts.add(task["register"])
    return facts


def facts_table() -> dict[str, str]:
    """fact -> role, from the table at the top of group_vars/all.yml (`#   name  what  (role role...)`)."""
    return dict(re.findall(r"^#   (\w+) .*\((\w+) role\b", FACTS_TABLE.read_text(), flags=re.M))


def test_facts_table_lists_every_published_fact_and_its_role():
    published = {fact: role for role in ROLES for fact in published_facts(role)}
    assert facts_table() == published


@pytest.mark.parametrize("role", ROLES)
def test_readme_and_argument_specs_name_every_fact_the_role_sets(role):
    readme = (ROLES_DIR / role / "README.md").read_text()
    specs = (ROLES_DIR / role / "meta" / "argument_specs.yml").read_text()
    facts = published_facts(role)
    assert facts - set(re.findall(r"`(\w+)`", readme)) == set(), "not in README.md"
    assert facts - set(re.findall(r"(?<![\w.])(\w+)", specs)) == set(), "not in meta/argument_specs.yml"


def inventory_names() -> set[str]:
    names = set()
    for path in [*(REPO_ROOT / "group_vars").glob("*.yml"), *(REPO_ROOT / "inventories").rglob("*.yml")]:
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict):
            names |= set(data)
    return names


@pytest.mark.parametrize("role", ROLES)
def test_playbooks_read_only_inputs_and_published_facts_of_a_role(role):
    """A role's internals (`__role_*`) stay inside it; every other `role_*` name a playbook reads
    is one of its inputs, an inventory variable or a fact the role publishes."""
    known = set(spec_options(role)) | default_keys(role) | inventory_names() | published_facts(role)
    problems = []
    for path in sorted((REPO_ROOT / "playbooks").glob("*.yml")):
        for name in sorted(set(re.findall(rf"(?<![\w.])(_*{role}_\w+)", path.read_text()))):
            if name.startswith("_") or name not in known:
                problems.append(f"playbooks/{path.name} reads {name}")
    assert not problems, "\n".join(problems)


DOCS_DIR = REPO_ROOT / "docs"
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """Targets of the page's markdown links outside fenced code, without URLs (`scheme:`)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return [t for t in MD_LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_a_map_of_the_docs_pages():
    """README.md stays short and opens with the two commands; the detail lives in docs/, one click away."""
    readme = REPO_ROOT / "README.md"
    lines = readme.read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines: move detail to a page in docs/"
    first_block = readme.read_text().split("```", 2)[1]
    assert "make local" in first_block and "make test" in first_block, "README.md must open with make local / make test"
    pages = sorted(DOCS_DIR.glob("*.md"))
    assert pages, "docs/ has no pages"
    broken = []
    for page in [readme, *pages]:
        for target in relative_links(page):
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
    linked = {(REPO_ROOT / t.split("#", 1)[0]).resolve() for t in relative_links(readme)}
    unlinked = [p.name for p in pages if p.resolve() not in linked]
    assert not unlinked, f"docs pages not linked from README.md: {unlinked}"


def test_layout_page_lists_every_module():
    """docs/layout.md's module table names each module in plugins/modules, and no other."""
    modules_dir = REPO_ROOT / "collections/ansible_collections/ndis/dbops/plugins/modules"
    have = {p.stem for p in modules_dir.glob("*.py") if p.stem != "__init__"}
    table = [line for line in (DOCS_DIR / "layout.md").read_text().splitlines() if line.startswith("| `ndis.dbops.")]
    listed = {m for line in table for m in re.findall(r"`ndis\.dbops\.([a-z0-9_]+)`", line.split("|")[1])}
    assert listed == have, {"not in docs/layout.md": sorted(have - listed), "no such module": sorted(listed - have)}
