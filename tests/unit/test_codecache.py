"""pycni.codecache: a dataclass's generated methods are compiled once, then taken from the
cache by every later process; a cache others could have written is never used."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import MAGIC_NUMBER
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A process that enables the cache at argv[1], counts the compiles dataclasses makes, and
# checks the class behaves as a frozen dataclass must.
_PROBE = """
import builtins, dataclasses, sys
sys.path[:0] = [{repo!r}]
from pycni import codecache, codefile
codecache.enable(codefile.shared(sys.argv[1]))
compiles = []
real = builtins.compile
def counting(*args, **kwargs):
    compiles.append(args[0])
    return real(*args, **kwargs)
builtins.compile = counting

@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    x: int
    y: int = 0

p = Point(x=1, y=2)
assert p == Point(x=1, y=2) and hash(p) == hash(Point(x=1, y=2)) and repr(p) == "Point(x=1, y=2)"
try:
    p.x = 3
except dataclasses.FrozenInstanceError:
    pass
else:
    raise AssertionError("not frozen")
builtins.compile = real
print(len(compiles))
"""


def _compiles(cache: Path) -> int:
    ran = subprocess.run([sys.executable, "-IS", "-c", _PROBE.format(repo=str(REPO)),
                          str(cache)], capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    return int(ran.stdout)


def test_the_second_process_compiles_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    assert _compiles(cache) > 0
    assert cache.read_bytes().startswith(MAGIC_NUMBER)
    assert _compiles(cache) == 0


def test_a_cache_others_may_write_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    _compiles(cache)
    os.chmod(cache, 0o666)
    assert _compiles(cache) > 0


def test_a_damaged_cache_is_ignored_and_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "methods.marshal"
    cache.write_bytes(MAGIC_NUMBER + b"\x00garbage")
    assert _compiles(cache) > 0
    assert _compiles(cache) == 0


_WITHOUT_INSPECT = """
import sys
sys.path[:0] = [{repo!r}]
from pycni import codecache, codefile
codecache.enable(codefile.shared(sys.argv[1]))
import dataclasses

@dataclasses.dataclass(frozen=True)
class Bare:
    x: int

assert "inspect" not in sys.modules, "dataclasses brought inspect in"
assert Bare.__doc__ == "Bare(...)", Bare.__doc__
import inspect
assert hasattr(inspect, "getsource"), "the stand-in leaked"

@dataclasses.dataclass(frozen=True)
class Later:
    y: int = 0

assert Later.__doc__ == "Later(y: int = 0)", Later.__doc__
"""


def test_dataclasses_comes_without_inspect_and_inspect_stays_whole(tmp_path: Path) -> None:
    """inspect (with ast and dis) is ~7 ms of a one-shot plugin's start, and dataclasses wants
    it only for the __doc__ of a class without one; anyone importing it gets the real one."""
    ran = subprocess.run([sys.executable, "-IS", "-c", _WITHOUT_INSPECT.format(repo=str(REPO)),
                          str(tmp_path / "methods.marshal")], capture_output=True, text=True,
                         timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr


# A process that makes one class, or two, through the cache at argv[1], and prints how many
# code objects it unmarshalled.
_ONE_OR_TWO = """
import dataclasses, marshal, sys, types
sys.path[:0] = [{repo!r}]
real_loads = marshal.loads
codes = []
def counting(data):
    value = real_loads(data)
    if isinstance(value, types.CodeType) and value.co_filename == "<string>":  # not a .pyc
        codes.append(value)
    return value
marshal.loads = counting
from pycni import codecache, codefile
codecache.enable(codefile.shared(sys.argv[1]))

@dataclasses.dataclass(frozen=True)
class First:
    x: int

if sys.argv[2] == "both":
    @dataclasses.dataclass(order=True)
    class Second:
        y: str = ""

print(len(codes))
"""


def test_a_process_unmarshals_only_the_entries_its_classes_ask_for(tmp_path: Path) -> None:
    """The cache holds every one-shot program's classes; unmarshalling them all was ~2.5 ms
    of each process's start."""
    cache = tmp_path / "methods.marshal"

    def unmarshalled(which: str) -> int:
        ran = subprocess.run([sys.executable, "-IS", "-c", _ONE_OR_TWO.format(repo=str(REPO)),
                              str(cache), which], capture_output=True, text=True, timeout=60,
                             check=False)
        assert ran.returncode == 0, ran.stderr
        return int(ran.stdout)

    assert unmarshalled("both") == 0  # an empty cache: all compiled, then saved
    both = unmarshalled("both")
    first_only = unmarshalled("first")
    assert 0 < first_only < both
