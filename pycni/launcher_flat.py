"""The launcher and the two modules it imports, written as one module for the executables.

A plugin executable's first import is ``pycni.launcher``, which brings ``pycni.server.protocol``
and ``pycni.warmfork.wire``: six modules with their three packages, each found on
``sys.path`` and read from its own ``.pyc``. Measured in fresh interpreters, that import cost
~1.0 ms over a bare ``python -IS`` start and the same code as one module ~0.6 ms, on every
plugin call. ``pycni install`` therefore writes ``FLAT_NAME`` at the checkout's root (the first
entry of an executable's import path): the three modules' code in their order, each without
its docstring and the imports of the ones before it, under a check that they are still the
files it was made from. Edited since (or gone), the module raises ``ImportError``; failing in
any way, the executable imports ``pycni.launcher`` as before (``pycni.plugins.executable``).
Nothing else imports it: the server and the tests use the three modules themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pycni import atomicfile
from pycni.plugins.executable import FLAT_NAME

__all__ = ["FLAT_NAME", "SOURCES", "TARGET", "ensure", "render"]

_PACKAGE: Final = Path(__file__).resolve().parent
TARGET: Final = _PACKAGE.parent / f"{FLAT_NAME}.py"  # first on an executable's import path
# In order: each imports only the ones before it (and the standard library's builtins).
SOURCES: Final = (
    _PACKAGE / "warmfork" / "wire.py",
    _PACKAGE / "server" / "protocol.py",
    _PACKAGE / "launcher.py",
)
_HEADER: Final = '''"""Written by `pycni install` (pycni/launcher_flat.py): do not edit.
pycni.launcher and the modules it imports, as one module, while they are the files it was made
from."""

import posix as _flat_posix

for _flat_source, _flat_stamp in {stamps!r}:
    try:
        _flat_stat = _flat_posix.stat(_flat_source)
    except OSError as _flat_err:
        raise ImportError(f"{{_flat_source}}: {{_flat_err}}") from None
    if (_flat_stat.st_mtime_ns, _flat_stat.st_size) != _flat_stamp:
        raise ImportError(f"{{_flat_source}} changed since pycni install")
'''


def _body(source: Path, ours: Sequence[Path]) -> tuple[str, set[str]]:
    """``source`` without its docstring and its imports of ``ours``; with the names it defines
    at its top level. ValueError for a ``from __future__`` import: besides what it tells the
    compiler it imports the module ``__future__`` (~0.25 ms of a start, measured), and none of
    the launcher's modules has one."""
    import ast  # `pycni install`'s alone: ~2 ms to import

    text = source.read_text()
    tree = ast.parse(text)
    modules = {_module_name(path) for path in ours}
    dropped: set[int] = set()
    defined: set[str] = set()
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            raise ValueError(f"{source} imports __future__")
        docstring = (index == 0 and isinstance(node, ast.Expr)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))
        ours_import = isinstance(node, ast.ImportFrom) and node.module in modules
        if docstring or ours_import:
            assert node.end_lineno is not None
            dropped.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
    lines = text.splitlines()
    kept = [line for number, line in enumerate(lines, 1) if number not in dropped]
    return "\n".join(kept).strip("\n") + "\n", defined - {"__all__"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(_PACKAGE.parent).with_suffix("").parts)


def render(sources: Sequence[Path] = SOURCES) -> str:
    """The flat module's text for ``sources`` (ValueError if two of them define one name)."""
    parts = []
    seen: dict[str, Path] = {}
    stamps = []
    for index, source in enumerate(sources):
        body, defined = _body(source, sources[:index])
        for name in defined:
            if name in seen:
                raise ValueError(f"{name} is defined in {seen[name]} and {source}")
            seen[name] = source
        st = source.stat()
        stamps.append((str(source), (st.st_mtime_ns, st.st_size)))
        parts.append(f"\n\n# ---- {_module_name(source)}\n\n{body}")
    return _HEADER.format(stamps=tuple(stamps)) + "".join(parts)


def ensure(target: Path = TARGET, sources: Sequence[Path] = SOURCES) -> bool:
    """Write ``target`` (and compile it) unless it is already this text; True if written.
    Best effort: a checkout that cannot be written keeps the three modules."""
    try:
        text = render(sources)
        if target.exists() and target.read_text() == text:
            return False
        atomicfile.write(str(target), text.encode(), mode=0o644)
    except (OSError, ValueError):
        return False
    import py_compile  # once per install: the first plugin call should not compile it

    with contextlib.suppress(OSError, py_compile.PyCompileError):  # then the first call does
        py_compile.compile(str(target), doraise=True)
    return True
