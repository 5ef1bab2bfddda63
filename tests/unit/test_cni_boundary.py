"""The protocol layer is pure: every ``pycni.cni`` module imports nothing of pycni but
``pycni.cni`` (issue #19): which plugins are ours, how they run, the kernel, all belong to its
callers, which hand it what it needs (a ``PluginRunner``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import modules_loaded_by

CNI = Path(__file__).resolve().parents[2] / "pycni" / "cni"
MODULES = sorted(f"pycni.cni.{p.stem}" for p in CNI.glob("*.py") if p.stem != "__init__")


def _imported(path: Path) -> set[str]:
    """Every module an import statement names, at module level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("path", sorted(CNI.glob("*.py")), ids=lambda p: p.name)
def test_no_import_statement_leaves_the_package(path: Path) -> None:
    outside = sorted(name for name in _imported(path)
                     if name.split(".")[0] == "pycni" and not name.startswith("pycni.cni"))
    assert outside == [], f"{path.name} imports {outside}"


def test_importing_the_package_loads_nothing_else_of_pycni() -> None:
    loaded = [m for m in modules_loaded_by(f"import {', '.join(MODULES)}")
              if m.startswith("pycni")]
    assert "pycni.cni.invoke" in loaded
    assert [m for m in loaded if m != "pycni" and not m.startswith("pycni.cni")] == []
