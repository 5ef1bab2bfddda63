"""Light stand-ins for modules a dependency imports at its top but a one-shot process never
uses (``pycni.oneshot``: such a process pays for every import, on every call).

``importing(name, *stand_ins)`` imports module ``name`` while each stand-in is registered under
its real module's name (each whose real module is not imported yet): the dependency binds the
stand-in, and whoever imports that name afterwards gets the real module. A stand-in answers
what it was made for itself; any other name asked of it imports the real module and answers
from it, so a newer dependency that asks more of it is slower, never wrong.

The stand-ins: ``inspect`` while ``dataclasses`` is imported (``pycni.codecache``);
``platform`` and ``multiprocessing`` while ``pyroute2.config`` is
(``pycni.net.pyroute2_import``).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["importing", "make", "real"]

_MARK = "__pycni_stand_in__"


def make(name: str, doc: str, **names: Any) -> ModuleType:
    """A stand-in for module ``name`` that has ``names``; the real module answers the rest."""
    module = ModuleType(name, doc)
    module.__dict__.update(names)
    module.__dict__[_MARK] = True

    def real_name(attr: str) -> Any:
        return getattr(real(name), attr)

    module.__dict__["__getattr__"] = real_name
    return module


def real(name: str) -> ModuleType:
    """The real module ``name``, imported now if only its stand-in was there."""
    module = sys.modules.get(name)
    if module is not None and vars(module).get(_MARK):
        del sys.modules[name]
    return importlib.import_module(name)


def importing(name: str, *stand_ins: ModuleType) -> ModuleType:
    """Module ``name``, imported while ``stand_ins`` take their real modules' place."""
    placed = [m for m in stand_ins if m.__name__ not in sys.modules]
    for module in placed:
        sys.modules[module.__name__] = module
    try:
        return importlib.import_module(name)
    finally:
        for module in placed:
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]
