"""The floor plan: one stage = one module = one rule = one command, and imports that point down.

- ``langtail.cli`` imports stages (and the config it parses, and ``io``'s trust switch), nothing else;
- a stage never imports another stage; the library never imports a stage;
- no two library modules import each other, directly or in a circle (imports inside
  functions count too);
- every stage has a rule file, a rule and a command of the same name, and declares the
  config keys it reads (existing keys only); command-only stages (``COMMAND_ONLY``:
  ``predict``) have a command, no rule, and read no config.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "langtail"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``langtail...`` module a file imports, at any depth (``from a import b`` -> ``a.b``
    when ``a.b`` is a module, else ``a``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("langtail"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("langtail"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


FILES = sorted(SRC.rglob("*.py"))
MODULES = {_module_name(p): p for p in FILES}
STAGE_MODULES = sorted(m for m in MODULES if m.startswith("langtail.stages."))


def _is_stage(mod: str) -> bool:
    return mod == "langtail.stages" or mod.startswith("langtail.stages.")


def test_library_never_imports_a_stage():
    bad = {m: sorted(i for i in _imports(p) if _is_stage(i)) for m, p in MODULES.items()
           if not _is_stage(m) and m != "langtail.cli"}
    assert not {m: v for m, v in bad.items() if v}


def test_stages_never_import_each_other():
    bad = {m: sorted(i for i in _imports(MODULES[m]) if _is_stage(i) and i != m) for m in STAGE_MODULES}
    assert not {m: v for m, v in bad.items() if v}


def test_cli_imports_stages_and_config_only():
    """(and the process-level checks and switches that run before any stage: ``io``'s
    ``--trust-checkpoint``, ``distributed.check_launch``, ``offline.check_offline``)"""
    allowed = {"langtail.config", "langtail.io", "langtail.distributed", "langtail.offline", "langtail"}
    other = sorted(i for i in _imports(MODULES["langtail.cli"]) if not _is_stage(i) and i not in allowed)
    assert other == []


def test_library_imports_have_no_cycle():
    lib = {m: {i for i in _imports(p) if i in MODULES and not _is_stage(i) and i != m}
           for m, p in MODULES.items() if not _is_stage(m) and m != "langtail.cli"}
    # a package's __init__ is not a real dependency edge of its submodules
    lib = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in lib.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(lib.get(m, ())):
            visit(d, path + [m])
        state[m] = 2

    for m in sorted(lib):
        visit(m, [])


def test_every_stage_has_a_rule_file_a_rule_and_a_command():
    from langtail.cli import build_parser
    from langtail.stages import COMMAND_ONLY, STAGES, stage_keys

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert sorted(STAGES + COMMAND_ONLY) == sorted(m.rsplit(".", 1)[1] for m in STAGE_MODULES)
    for stage in STAGES:
        smk = ROOT / "workflow" / "rules" / f"{stage}.smk"
        assert smk.exists(), smk
        assert re.search(rf"^rule {stage}:", smk.read_text(), re.M), f"{smk}: no rule {stage}"
        assert stage.replace("_", "-") in commands, stage
        assert stage_keys(stage)  # declared, and every key exists (checked inside)


def test_undeclared_key_cannot_be_read():
    from langtail.config import ConfigError, DatasetConfig, restrict

    cfg = restrict(DatasetConfig(), {"finetune": ("lr",)}, "finetune")
    assert cfg.finetune.lr == 1e-3
    with pytest.raises(ConfigError, match=r"stage 'finetune' read config key finetune\.tau"):
        cfg.finetune.tau
    with pytest.raises(ConfigError, match=r"model\."):
        cfg.model.image_encoder


def test_command_only_stages_have_a_command_no_rule_and_read_no_config():
    """``predict`` (and any other command-only stage) acts on results for a user: a command, no
    rule, no config keys, and no workflow stage reads its outputs."""
    import importlib

    from langtail.cli import build_parser
    from langtail.stages import COMMAND_ONLY, STAGES, UPSTREAM

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for stage in COMMAND_ONLY:
        assert stage not in STAGES and not any(stage in ups for ups in UPSTREAM.values()), stage
        assert stage.replace("_", "-") in commands, stage
        assert not (ROOT / "workflow" / "rules" / f"{stage}.smk").exists(), stage
        assert importlib.import_module(f"langtail.stages.{stage}").KEYS == {}, stage
