"""Import pyroute2's modules without first running its package ``__init__``.

``pyroute2/__init__.py`` imports every public class of the library (NDB, IPDB, IPSet, IPVS,
nl80211, WireGuard, every netlink family...): ~40 ms of the ~130 ms an in-process plugin
spends importing, for modules no plugin uses. Python runs a package's ``__init__`` before any
of its submodules, so ``defer_package_init`` registers the package module unexecuted (its
``__path__`` set, so ``pyroute2.netlink...`` imports resolve as usual) with a module
``__getattr__`` that runs the real ``__init__`` the first time a name is asked of the package
itself (``from pyroute2 import IPRoute``): whoever needs the full package still gets it, only
later. Submodules imported meanwhile are the same module objects the ``__init__`` then finds.

``stand_in_on_import`` then has three of pyroute2's imports made by stand-ins
(``pycni.standin``), whenever something imports the modules that make them:
- ``config`` imports ``platform`` and ``multiprocessing`` at its top (2.0-2.5 and 3.1-3.6 ms
  here). From ``platform`` it reads the kernel's uname, the machine and the pointer size,
  which the stand-in answers from ``os.uname()``; of ``multiprocessing`` it keeps ``Pipe``,
  ``Queue`` and ``Process`` for the netns helpers of pyroute2's ``IPRoute``, which a plugin's
  call never reaches: the stand-in's import the real ones when called.
- the request filters (``requests.link``, ``address``, ``route``, ``tc``) and tc's ematch
  import ``netlink.rt_files`` (its dataclasses and ``pathlib``: ~5 ms) for the iproute2 files
  that turn a name given for a number (a table, a scope, a protocol) into the number. pycni
  passes numbers; the stand-in's classes import the real ones when a name is looked up.

Only one-shot processes call these (``pycni.oneshot``: a plugin executable's in-process path,
``pycni-run`` without its daemon); the servers preload the whole package, the CLI and tests
import pyroute2 the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from operator import itemgetter
from types import ModuleType
from typing import Any

from pycni import standin

__all__ = ["defer_package_init", "stand_in_on_import"]

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


def stand_in_on_import() -> None:
    """From now on, pyroute2's ``config`` and request filters are loaded with stand-ins for
    ``platform``, ``multiprocessing`` and ``pyroute2.netlink.rt_files`` (see the module)."""
    standin.on_import({
        f"{_PACKAGE}.config": lambda: [_platform(), _multiprocessing()],
        **{f"{_PACKAGE}.{name}": lambda: [_rt_files()] for name in _RT_FILES_USERS},
    })


class _Uname(tuple[str, str, str, str, str]):
    """``platform.uname()``'s fields, by name and by index (its lazy ``processor`` aside)."""

    __slots__ = ()
    system = property(itemgetter(0))
    node = property(itemgetter(1))
    release = property(itemgetter(2))
    version = property(itemgetter(3))
    machine = property(itemgetter(4))


def _uname() -> _Uname:
    u = os.uname()
    return _Uname((u.sysname, u.nodename, u.release, u.version, u.machine))


def _machine() -> str:
    return os.uname().machine


def _architecture(executable: str = sys.executable, bits: str = "",
                  linkage: str = "") -> tuple[str, str]:
    if executable:  # asks `file(1)` about a binary: the real one's business
        return standin.real("platform").architecture(executable, bits, linkage)  # type: ignore[no-any-return]
    import struct

    return bits or f"{struct.calcsize('P') * 8}bit", linkage


def _platform() -> ModuleType:
    return standin.make("platform", "uname, machine, architecture (pycni.net.pyroute2_import)",
                        uname=_uname, machine=_machine, architecture=_architecture)


def _deferred(module: str, attr: str) -> Callable[..., Any]:
    """``module.attr``, imported when first called (the stand-ins' names for classes and
    functions a call never reaches)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(standin.real(module), attr)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    return call


def _multiprocessing() -> ModuleType:
    return standin.make("multiprocessing", "Pipe, Queue, Process, imported when called "
                        "(pycni.net.pyroute2_import)",
                        Pipe=_deferred("multiprocessing", "Pipe"),
                        Queue=_deferred("multiprocessing", "Queue"),
                        Process=_deferred("multiprocessing", "Process"))


_RT_FILES_USERS = ("requests.link", "requests.address", "requests.route", "requests.tc",
                   "netlink.rtnl.tcmsg.common_ematch")
_RT_FILES_CLASSES = ("EmatchMapFile", "NlProtosFile", "RtAddrProtosFile", "RtDsfieldFile",
                     "GroupFile", "RtProtosFile", "RtRealmsFile", "RtScopesFile", "RtTablesFile",
                     "TcClsFile")


def _rt_files() -> ModuleType:
    name = f"{_PACKAGE}.netlink.rt_files"
    return standin.make(name, "iproute2's name files, read when a name is looked up "
                        "(pycni.net.pyroute2_import)",
                        **{cls: _deferred(name, cls) for cls in _RT_FILES_CLASSES})
