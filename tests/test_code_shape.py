"""The shape of repro's own code: no function longer than 60 lines (long orchestrators hide the
seams a newcomer needs), no literal fallbacks beside config reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPRO = Path(__file__).resolve().parents[1] / "repro"
MAX_LINES = 60


def _sources() -> list[Path]:
    return [p for p in sorted(REPRO.rglob("*.py")) if "templates" not in p.parts]


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(
                        f"{path.relative_to(REPRO.parent)}:{node.lineno} {node.name} ({n} lines)"
                    )
    assert not long, "\n".join(long)


def test_no_config_read_carries_a_fallback_literal():
    """`resolved.get("a.b", 3e-3)` or `cfg.get("x", True)` below the CLI: a second default."""
    pattern = re.compile(r"\b(resolved|cfg|self\.cfg|ctx\.resolved)\.get\(")
    hits = [
        f"{p.relative_to(REPRO.parent)}:{i}: {line.strip()}"
        for p in _sources()
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_every_deferred_repro_import_names_something_that_exists():
    """repro defers imports into functions to keep the CLI fast; a name deleted from a module then
    fails only when that one command runs (it happened: `repro stage full --resume`). Resolve
    every `from repro.x import y` in repro/ statically."""
    import importlib

    papers = sorted((REPRO.parent / "papers").rglob("*.py"))
    missing = []
    for path in _sources() + papers:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module != "repro" and not node.module.startswith("repro."):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name == "*" or hasattr(module, alias.name):
                    continue
                try:  # a submodule not yet imported as an attribute
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    missing.append(
                        f"{path.relative_to(REPRO.parent)}:{node.lineno} "
                        f"from {node.module} import {alias.name}"
                    )
    assert not missing, "\n".join(missing)
