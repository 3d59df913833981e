"""Code size: no function in src/ over 60 lines, no module over 450 lines (AST-based).

A function's size is its ``def`` line to its last line (decorators excluded, docstring
included); a module's is its line count. ``KNOWN`` lists the violators not split yet, each
with the size it has now: it may shrink, not grow, and an entry that no longer violates must
be removed (so the list only gets shorter).
"""
from __future__ import annotations

import ast

from conftest import ROOT

SRC = ROOT / "src" / "langtail"
MAX_FUNCTION = 60
MAX_MODULE = 450

#: "path relative to src/langtail[:function]" -> current size (lines); shrink only
KNOWN: dict[str, int] = {}


def sizes() -> dict[str, int]:
    """Every module's line count and every function's (nested ones too), keyed like :data:`KNOWN`."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text(encoding="utf-8")
        out[rel] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{rel}:{node.name}"
                out[key] = max(out.get(key, 0), node.end_lineno - node.lineno + 1)
    return out


def _limit(key: str) -> int:
    return MAX_FUNCTION if ":" in key else MAX_MODULE


def test_no_new_long_function_or_module():
    over = {k: v for k, v in sizes().items() if v > _limit(k) and v > KNOWN.get(k, 0)}
    assert not over, (f"over {MAX_FUNCTION} lines per function / {MAX_MODULE} per module (split them): {over}")


def test_the_known_list_only_shrinks():
    now = sizes()
    stale = {k: now.get(k) for k in KNOWN if now.get(k, 0) <= _limit(k)}
    assert not stale, f"no longer over the limit (or gone): remove from KNOWN: {stale}"
