"""Import pyroute2's modules without first running its package ``__init__``.

``pyroute2/__init__.py`` imports every public class of the library (NDB, IPDB, IPSet, IPVS,
nl80211, WireGuard, every netlink family...): ~40 ms of the ~130 ms an in-process plugin
spends importing, for modules no plugin uses. Python runs a package's ``__init__`` before any
of its submodules, so ``defer_package_init`` registers the package module unexecuted (its
``__path__`` set, so ``pyroute2.netlink...`` imports resolve as usual) with a module
``__getattr__`` that runs the real ``__init__`` the first time a name is asked of the package
itself (``from pyroute2 import IPRoute``): whoever needs the full package still gets it, only
later. Submodules imported meanwhile are the same module objects the ``__init__`` then finds.

Only one-shot processes call this (``pycni.oneshot``: a plugin executable's in-process path,
``pycni-run`` without its daemon); the servers preload the whole package, the CLI and tests
import pyroute2 the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

__all__ = ["defer_package_init"]

_PACKAGE = "pyroute2"


def defer_package_init() -> None:
    """Register pyroute2's package module with its ``__init__`` deferred (no-op if imported)."""
    if _PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a package: the ordinary import reports it
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    state = {"running": False}

    def run_init(name: str) -> Any:
        if state["running"]:  # asked while the real __init__ runs: genuinely missing
            raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}")
        submodule = f"{_PACKAGE}.{name}"
        # ``from pyroute2 import config`` asks the package first: a submodule is no reason
        # to run the whole __init__.
        if submodule in sys.modules or importlib.util.find_spec(submodule) is not None:
            return importlib.import_module(submodule)
        state["running"] = True
        del module.__dict__["__getattr__"]  # the real package from now on
        loader.exec_module(module)
        return getattr(module, name)

    module.__dict__["__getattr__"] = run_init
    sys.modules[_PACKAGE] = module
