"""Light stand-ins for modules a dependency imports at its top but a one-shot process never
uses (``pycni.oneshot``: such a process pays for every import, on every call).

A stand-in is registered under its real module's name (only while that is not imported yet)
for the length of one import, so that the importing module binds the stand-in; afterwards,
whoever imports the name gets the real module. A stand-in answers what it was made for
itself; any other public name asked of it imports the real module and answers from it, so a
newer dependency that asks more of it is slower, never wrong. (Dunder names are not passed on:
the import system asks ``__path__`` of every module a ``from ... import`` names.)

Two ways to put stand-ins in place:
- ``importing(name, *stand_ins)`` imports ``name`` now: ``inspect`` while ``dataclasses`` is
  imported (``pycni.codecache``);
- ``on_import(table)`` puts a finder in front of the import system that loads each module of
  ``table``, whenever something first imports it, with the stand-ins the table makes for it:
  pyroute2's ``config`` and request filters (``pycni.net.pyroute2_import``), which only some
  calls import, from different places.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

__all__ = ["importing", "make", "on_import", "real"]

_MARK = "__pycni_stand_in__"

StandIns = Callable[[], Sequence[ModuleType]]


def make(name: str, doc: str, **names: Any) -> ModuleType:
    """A stand-in for module ``name`` that has ``names``; the real module answers the rest."""
    module = ModuleType(name, doc)
    module.__dict__.update(names)
    module.__dict__[_MARK] = True

    def real_name(attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(f"stand-in module {name!r} has no attribute {attr!r}")
        return getattr(real(name), attr)

    module.__dict__["__getattr__"] = real_name
    return module


def real(name: str) -> ModuleType:
    """The real module ``name``, imported now if only its stand-in was there."""
    module = sys.modules.get(name)
    if module is not None and vars(module).get(_MARK):
        del sys.modules[name]
    return importlib.import_module(name)


@contextlib.contextmanager
def _placed(stand_ins: Sequence[ModuleType]) -> Iterator[None]:
    placed = [m for m in stand_ins if m.__name__ not in sys.modules]
    for module in placed:
        sys.modules[module.__name__] = module
    try:
        yield
    finally:
        for module in placed:
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]


def importing(name: str, *stand_ins: ModuleType) -> ModuleType:
    """Module ``name``, imported while ``stand_ins`` take their real modules' place."""
    with _placed(stand_ins):
        return importlib.import_module(name)


class _Loader:
    """The module's own loader, run with the stand-ins in place."""

    def __init__(self, loader: Any, stand_ins: StandIns) -> None:
        self._loader = loader
        self._stand_ins = stand_ins

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # From now on the module names its own loader (a traceback reads its source there).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _placed(self._stand_ins()):
            self._loader.exec_module(module)


class _Finder:
    """First on ``sys.meta_path``: the modules of its table, found by the finders after it,
    load through ``_Loader``; any other module is none of its business."""

    def __init__(self, table: Mapping[str, StandIns]) -> None:
        self._table = dict(table)

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        stand_ins = self._table.get(name)
        if stand_ins is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: ModuleSpec | None = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, stand_ins)  # type: ignore[assignment]
                return spec
        return None


def on_import(table: Mapping[str, StandIns]) -> None:
    """Load each module of ``table`` with its stand-ins whenever it is first imported (once
    per process: a second call adds nothing)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder(table))
