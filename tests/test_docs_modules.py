"""The ndis.dbops plugins' documentation cannot drift from their code.

- Each module's and filter's docs render with ``ansible-doc`` (the project's ansible.cfg)
  without a warning, and the rendered text names every documented option.
- Each module's DOCUMENTATION ``options`` match the ``argument_spec`` the module really
  builds: names, type, required, default, choices, aliases, elements. The spec is captured
  by running the module's ``main()`` with ``AnsibleModule`` (or ``AnsibleAWSModule``)
  replaced by a stand-in that records its keyword arguments and stops, so whatever way the
  module builds its spec, the test sees the real one.
- Secret-looking options have ``no_log=True``; ``supports_check_mode`` matches the
  documented check_mode support (where documented); EXAMPLES and RETURN are valid YAML.
Options from the collection's own doc fragments (``ndis.dbops.postgres``) are part of the
module's spec and are compared like its own; options from amazon.aws fragments belong to
AnsibleAWSModule, not to the module's own spec, and are left out of the comparison.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

BIN = Path(sys.executable).parent
COLLECTION = REPO_ROOT / "collections" / "ansible_collections" / "ndis" / "dbops"
MODULES = sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py") if not p.name.startswith("_"))
FILTERS = sorted(
    name
    for path in (COLLECTION / "plugins" / "filter").glob("*.py")
    for name in [yaml.safe_load(importlib.import_module(f"ansible_collections.ndis.dbops.plugins.filter.{path.stem}").DOCUMENTATION)["name"]]
)
SECRET = re.compile(r"password|passwd|secret|token|private_key", re.I)
SPEC_KEYS = ("type", "required", "default", "choices", "aliases", "elements")


class _Captured(Exception):
    def __init__(self, kwargs):
        super().__init__("captured")
        self.kwargs = kwargs


class _CaptureModule:
    """Stands in for AnsibleModule / AnsibleAWSModule: records the constructor's arguments."""

    def __init__(self, *args, **kwargs):
        if args:
            kwargs["argument_spec"] = args[0]
        raise _Captured(kwargs)


def fragment_options(doc: dict) -> dict:
    """Options the collection's own doc fragments add to a module's DOCUMENTATION."""
    options = {}
    for ref in doc.get("extends_documentation_fragment") or []:
        if ref.startswith("ndis.dbops."):
            fragment = importlib.import_module(f"ansible_collections.ndis.dbops.plugins.doc_fragments.{ref.split('.')[2]}")
            options.update(yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)["options"])
    return options


def load(name: str):
    return importlib.import_module(f"ansible_collections.ndis.dbops.plugins.modules.{name}")


def captured_kwargs(name: str, monkeypatch) -> dict:
    module = load(name)
    patched = [attr for attr in ("AnsibleModule", "AnsibleAWSModule") if hasattr(module, attr)]
    assert patched, f"{name} builds neither AnsibleModule nor AnsibleAWSModule"
    for attr in patched:
        monkeypatch.setattr(module, attr, _CaptureModule)
    with pytest.raises(_Captured) as caught:
        module.main()
    return caught.value.kwargs


def normalized(option: dict) -> dict:
    """The comparable part of one option, with Ansible's implicit defaults made explicit."""
    result = {
        "type": option.get("type", "str"),
        "required": bool(option.get("required", False)),
        "default": option.get("default"),
        "choices": list(option["choices"]) if option.get("choices") is not None else None,
        "aliases": sorted(option.get("aliases") or []),
        "elements": option.get("elements"),
    }
    return result


def ansible_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PAGER="cat")
    return env


def ansible_doc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ansible-doc"), *args], cwd=REPO_ROOT, env=ansible_env(),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def test_the_collection_has_the_documented_plugins():
    assert {"backup_policy", "pg_migrate", "ssm_parameter_info"} <= set(MODULES)
    assert "verify_line" in FILTERS
    listed = ansible_doc("--list", "ndis.dbops", "--json")
    assert listed.returncode == 0, listed.stderr
    assert set(yaml.safe_load(listed.stdout)) == {f"ndis.dbops.{m}" for m in MODULES}


@pytest.mark.parametrize(
    "plugin_type,name", [("module", m) for m in MODULES] + [("filter", f) for f in FILTERS],
)
def test_docs_render_without_warnings(plugin_type, name):
    proc = ansible_doc("-t", plugin_type, f"ndis.dbops.{name}")
    assert proc.returncode == 0, proc.stderr
    noise = [line for line in proc.stderr.splitlines() if re.search(r"WARNING|DEPRECATION|ERROR", line)]
    assert not noise, "\n".join(noise)
    assert f"ndis.dbops.{name}" in proc.stdout
    if plugin_type == "module":
        doc = yaml.safe_load(load(name).DOCUMENTATION)
        for option in dict(fragment_options(doc), **doc["options"]):
            # option lines read `= name` (required), `- name` (optional) or `  name`
            assert re.search(rf"^\s*(?:[=-]\s+)?{re.escape(option)}\b", proc.stdout, flags=re.MULTILINE), f"{option} missing from ansible-doc output"


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name, monkeypatch):
    module = load(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == name
    assert doc.get("short_description") and doc.get("description")
    documented = dict(fragment_options(doc), **(doc.get("options") or {}))
    kwargs = captured_kwargs(name, monkeypatch)
    spec = kwargs["argument_spec"]

    assert sorted(documented) == sorted(spec), (
        f"{name}: documented only {sorted(set(documented) - set(spec))}, in argument_spec only {sorted(set(spec) - set(documented))}"
    )
    problems = []
    for option, spec_entry in spec.items():
        unknown = set(spec_entry) - set(SPEC_KEYS) - {"no_log", "fallback", "options", "apply_defaults", "mutually_exclusive",
                                                     "required_if", "required_together", "required_one_of", "deprecated_aliases"}
        assert not unknown, f"{name}.{option}: unexpected argument_spec keys {unknown}"
        doc_entry = documented[option]
        assert doc_entry.get("description"), f"{name}.{option} has no description"
        want, got = normalized(spec_entry), normalized(doc_entry)
        for key in SPEC_KEYS:
            if want[key] != got[key]:
                problems.append(f"{name}.{option}.{key}: argument_spec {want[key]!r}, DOCUMENTATION {got[key]!r}")
        if SECRET.search(option):
            if not spec_entry.get("no_log"):
                problems.append(f"{name}.{option} looks secret but has no no_log=True")
    assert not problems, "\n".join(problems)

    # the cross-field rules name real options
    names = set(spec) | {a for s in spec.values() for a in s.get("aliases") or []}
    for rule in ("mutually_exclusive", "required_together", "required_one_of"):
        for group in kwargs.get(rule) or []:
            assert set(group) <= names, f"{name}: {rule} names unknown options {set(group) - names}"
    for entry in kwargs.get("required_if") or []:
        assert entry[0] in names and set(entry[2]) <= names, f"{name}: required_if {entry} names unknown options"

    # check mode: where the attribute is documented, it agrees with the module
    support = ((doc.get("attributes") or {}).get("check_mode") or {}).get("support")
    if support is not None:
        supports = bool(kwargs.get("supports_check_mode"))
        assert (support != "none") == supports, f"{name}: attributes.check_mode.support is {support}, supports_check_mode={supports}"


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_are_yaml(name):
    module = load(name)
    examples = yaml.safe_load(module.EXAMPLES)
    assert isinstance(examples, list) and examples, f"{name}: EXAMPLES is not a list of tasks"
    assert any(f"ndis.dbops.{name}" in task for task in examples), f"{name}: no example calls ndis.dbops.{name} by its FQCN"
    returned = yaml.safe_load(module.RETURN)
    assert isinstance(returned, dict) and returned, f"{name}: RETURN is empty"
    for key, entry in returned.items():
        assert entry.get("description") and entry.get("returned") and entry.get("type"), f"{name}: RETURN.{key} incomplete"
