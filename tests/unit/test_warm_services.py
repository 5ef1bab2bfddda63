"""The two warm servers are two services on one kit (``pycni.warmfork``, issue #19): neither
imports the other, the runtime has no import circle (its daemon is dispatched by the entry
point, not by the CLI its workers run), and a forked child's signal reset is written once.
Read from the source (every import statement, inside functions too), not by importing it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"pycni": REPO / "pycni", "pycni_run": REPO / "runtime" / "pycni_run"}


def _modules(top: str) -> dict[str, Path]:
    found = {}
    for path in ROOTS[top].rglob("*.py"):
        parts = [top, *path.relative_to(ROOTS[top]).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path) -> Iterator[str]:
    """Each module an import statement of ``path`` names (``from a import b``: a and a.b)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` as a path, or []."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return []
        for dep in sorted(graph[module]):
            found = visit(dep, [*path, module])
            if found:
                return found
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return []


def test_the_runtime_has_no_import_circle() -> None:
    modules = _modules("pycni_run")
    graph = {name: {dep for dep in _imports(path) if dep in modules and dep != name}
             for name, path in modules.items()}
    assert _cycle(graph) == []


def test_neither_service_imports_the_other() -> None:
    plugin_server = {n: p for n, p in _modules("pycni").items() if n.startswith("pycni.server")}
    for name, path in plugin_server.items():
        assert not [d for d in _imports(path) if d.startswith("pycni_run")], name
    for name, path in _modules("pycni_run").items():
        assert not [d for d in _imports(path) if d.startswith("pycni.server")], name


def _resets_signals(path: Path) -> bool:
    """Whether ``path`` drops a wakeup fd (``set_wakeup_fd(-1)``) or gives SIGINT its
    KeyboardInterrupt back: what a fork's reset does."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "default_int_handler":
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "set_wakeup_fd" and node.args
                and isinstance(node.args[0], ast.UnaryOp)):
            return True
    return False


def test_a_forked_child_resets_its_signals_in_one_place() -> None:
    paths = [*ROOTS["pycni"].rglob("*.py"), *ROOTS["pycni_run"].rglob("*.py")]
    resetting = sorted(str(p.relative_to(REPO)) for p in paths if _resets_signals(p))
    assert resetting == ["pycni/warmfork/child.py"]


def _class_lines(path: Path, name: str) -> int:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef) and node.name == name:
            assert node.end_lineno is not None
            return node.end_lineno - node.lineno + 1
    raise AssertionError(f"no class {name} in {path}")


def test_each_service_is_small_on_top_of_the_kit() -> None:
    """What each service writes of its own, its class with docstrings and blank lines; the
    loop, the spare, the relayed status and the peer checks are the kit's."""
    assert _class_lines(ROOTS["pycni"] / "server" / "loop.py", "Server") <= 150
    assert _class_lines(ROOTS["pycni_run"] / "daemon" / "service.py", "Daemon") <= 150


def test_no_module_is_much_over_400_lines() -> None:
    paths = [*ROOTS["pycni"].rglob("*.py"), *ROOTS["pycni_run"].rglob("*.py")]
    over = {str(p.relative_to(REPO)): n for p in paths
            if (n := len(p.read_text().splitlines())) > 420}
    assert over == {}
