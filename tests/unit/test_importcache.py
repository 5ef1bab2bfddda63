"""pycni.importcache: a one-shot process imports the modules an earlier one imported from the
code file (one ``stat`` each, no search of ``sys.path``, no ``.pyc`` read), and only while
each source is the one the code was compiled from and the search path is the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Imports a package of the test's (and json) through the code file at argv[1]; prints how each
# was loaded ("cached": from the code file), the package's value, __path__ and __file__.
_PROBE = """
import sys
sys.path[:0] = [{repo!r}, {where!r}, *sys.argv[2:]]
from pycni import codefile, importcache
importcache.enable(codefile.shared(sys.argv[1]))
import json, shapes.sub
def how(module):
    return "cached" if type(module.__spec__.loader).__name__ == "_CachedLoader" else "usual"
print(how(shapes), how(shapes.sub), how(json), shapes.sub.VALUE, shapes.__path__[0],
      shapes.sub.__file__, json.loads("[1]") == [1])
"""


def _package(where: Path, value: str = "1") -> Path:
    pkg = where / "shapes"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    sub = pkg / "sub.py"
    sub.write_text(f"VALUE = {value}\n")
    return sub


def _run(cache: Path, where: Path, *extra_path: str) -> list[str]:
    ran = subprocess.run([sys.executable, "-IS", "-c",
                          _PROBE.format(repo=str(REPO), where=str(where)), str(cache),
                          *extra_path], capture_output=True, text=True, timeout=60,
                         check=False)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.split()


def test_the_second_process_imports_from_the_code_file(tmp_path: Path) -> None:
    sub = _package(tmp_path)
    cache = tmp_path / "code.marshal"
    first = _run(cache, tmp_path)
    assert first[:3] == ["usual", "usual", "usual"]
    second = _run(cache, tmp_path)
    assert second[:3] == ["cached", "cached", "cached"]
    # A module from the file is the module from its source in every other respect.
    assert second[3:] == first[3:] == ["1", str(sub.parent), str(sub), "True"]


def test_an_edited_module_comes_from_its_source_then_the_file_learns_it(tmp_path: Path) -> None:
    sub = _package(tmp_path)
    cache = tmp_path / "code.marshal"
    _run(cache, tmp_path)
    sub.write_text("VALUE = 22\n")  # another size, another mtime
    edited = _run(cache, tmp_path)
    assert edited[:4] == ["cached", "usual", "cached", "22"]
    assert _run(cache, tmp_path)[:4] == ["cached", "cached", "cached", "22"]


def test_a_process_on_another_search_path_has_a_table_of_its_own(tmp_path: Path) -> None:
    """The same name may be another file on another path: that process searches as usual,
    and the first path's table stays."""
    _package(tmp_path)
    cache = tmp_path / "code.marshal"
    _run(cache, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _run(cache, tmp_path, str(elsewhere))[:3] == ["usual", "usual", "usual"]
    assert _run(cache, tmp_path)[:3] == ["cached", "cached", "cached"]
    assert _run(cache, tmp_path, str(elsewhere))[:3] == ["cached", "cached", "cached"]


def test_a_process_with_nothing_new_leaves_the_file_alone(tmp_path: Path) -> None:
    _package(tmp_path)
    cache = tmp_path / "code.marshal"
    _run(cache, tmp_path)
    _run(cache, tmp_path)
    before = cache.stat()
    _run(cache, tmp_path)
    after = cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_others_could_write_is_not_used(tmp_path: Path) -> None:
    _package(tmp_path)
    cache = tmp_path / "code.marshal"
    _run(cache, tmp_path)
    os.chmod(cache, 0o666)
    assert _run(cache, tmp_path)[:3] == ["usual", "usual", "usual"]


def test_a_damaged_file_is_not_used_and_is_replaced(tmp_path: Path) -> None:
    _package(tmp_path)
    cache = tmp_path / "code.marshal"
    _run(cache, tmp_path)
    data = cache.read_bytes()
    cache.write_bytes(data[:len(data) // 2])  # the index whole, the code cut off
    assert _run(cache, tmp_path)[:3] == ["usual", "usual", "usual"]
    assert _run(cache, tmp_path)[:3] == ["cached", "cached", "cached"]
