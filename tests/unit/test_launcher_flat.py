"""pycni.launcher_flat: the launcher's three modules as the one module executables import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pycni import launcher_flat
from pycni.install import install
from pycni.plugins.executable import FLAT_NAME

REPO = Path(__file__).resolve().parents[2]


def _copies(tmp_path: Path) -> list[Path]:
    """The three sources under the same package paths in ``tmp_path``/src (the flat module's
    own imports of them are recognised by their module names)."""
    out = []
    for source in launcher_flat.SOURCES:
        copy = tmp_path / "src" / source.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(source.read_bytes())
        out.append(copy)
    return out


def _probe(root: Path, code: str) -> str:
    """``code`` in a fresh ``-IS`` interpreter with ``root`` and the checkout on its path."""
    probe = f"import sys\nsys.path[:0] = [{str(root)!r}, {str(REPO)!r}]\n{code}\n"
    return subprocess.run([sys.executable, "-IS", "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_the_flat_module_is_the_launcher_in_one_module_without_its_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher_flat, "_PACKAGE", tmp_path / "src" / "pycni")
    sources = _copies(tmp_path)
    assert launcher_flat.ensure(tmp_path / f"{FLAT_NAME}.py", sources) is True
    assert launcher_flat.ensure(tmp_path / f"{FLAT_NAME}.py", sources) is False  # already this text
    out = _probe(tmp_path, f"from {FLAT_NAME} import launch, _quote\n"
                           "print(launch.__module__, _quote('a\"b'))\n"
                           "print(' '.join(sorted(m for m in sys.modules if 'pycni' in m)))")
    first, modules = out.splitlines()
    assert first == f'{FLAT_NAME} "a\\"b"'
    assert modules == FLAT_NAME  # no pycni package, no second module, no __future__
    assert "__future__" not in _probe(tmp_path, f"import {FLAT_NAME}\nprint(*sys.modules)")


def test_an_edited_source_makes_it_refuse_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher_flat, "_PACKAGE", tmp_path / "src" / "pycni")
    sources = _copies(tmp_path)
    launcher_flat.ensure(tmp_path / f"{FLAT_NAME}.py", sources)
    with sources[1].open("a") as f:
        f.write("\n# edited\n")
    out = _probe(tmp_path, f"try:\n    import {FLAT_NAME}\nexcept ImportError as err:\n"
                           "    print('refused', err)")
    assert out.startswith("refused")
    assert "changed since pycni install" in out
    os.unlink(sources[0])
    assert _probe(tmp_path, f"try:\n    import {FLAT_NAME}\nexcept ImportError:\n"
                            "    print('refused')").strip() == "refused"


def test_what_cannot_be_one_module_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher_flat, "_PACKAGE", tmp_path / "src" / "pycni")
    sources = _copies(tmp_path)
    original = sources[2].read_text()
    sources[2].write_text(original + "\n\ndef connect() -> None:\n    pass\n")  # wire's name
    with pytest.raises(ValueError, match="connect is defined in"):
        launcher_flat.render(sources)
    assert launcher_flat.ensure(tmp_path / f"{FLAT_NAME}.py", sources) is False
    assert not (tmp_path / f"{FLAT_NAME}.py").exists()
    sources[2].write_text("from __future__ import annotations\n" + original)
    with pytest.raises(ValueError, match="imports __future__"):
        launcher_flat.render(sources)


def test_an_installed_executable_imports_the_flat_module_only(tmp_path: Path) -> None:
    """What `pycni install` writes: the executable's import is the flat module alone."""
    install(bin_dir=str(tmp_path), conf_dir=None)
    text = (tmp_path / "none").read_text()
    probe = text.replace('launch("none")', "print(launch.__module__)\n"
                         "print(' '.join(sorted(m for m in sys.modules if 'pycni' in m)))")
    out = subprocess.run([sys.executable, "-IS", "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == [FLAT_NAME, FLAT_NAME]


def test_ensure_executables_renders_it_only_when_missing_or_after_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime without installed plugins calls ``ensure_executables`` for every run:
    rendering the flat module (~1.6 ms) is kept for when something changed."""
    from pycni.install import ensure_executables

    calls: list[None] = []
    target = tmp_path / "flat.py"

    def ensure() -> bool:
        calls.append(None)
        return True

    monkeypatch.setattr(launcher_flat, "ensure", ensure)
    monkeypatch.setattr(launcher_flat, "TARGET", target)
    bin_dir = str(tmp_path / "bin")
    assert ensure_executables(bin_dir)  # every executable written
    assert len(calls) == 1
    target.write_text("")
    assert ensure_executables(bin_dir) == []
    assert len(calls) == 1  # nothing written, the module there
    target.unlink()
    ensure_executables(bin_dir)
    assert len(calls) == 2  # missing
