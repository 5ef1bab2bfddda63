"""The compiled methods of dataclasses, kept from one plugin process to the next.

Creating a frozen dataclass costs ~0.6 ms of CPU on Python 3.11: ``dataclasses`` writes the
source of every method it generates (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__``, ``__delattr__``) and compiles each with ``exec``. A bridge ADD defines ~40
dataclasses (pycni's configs and results, pyroute2's rt_files) before it does anything: more
CPU than the reference plugin's whole call. The source only depends on a class's shape, so its
compiled code can be kept like a ``.pyc``.

``enable`` gives the ``dataclasses`` module an ``exec`` of its own (a module global shadows
the builtin) that looks each source text up in a cache of code objects and compiles only
what it has not seen, as ``exec`` would (no inherited ``__future__`` flags, ``<string>``);
what it compiled is added to the code file at exit. The code file (``pycni.codefile``, a
table of it) holds every one-shot program's classes (~600 methods), and each stays marshalled
until a class asks for it: unmarshalling all of them took 2.3-2.6 ms, of which a bridge ADD
uses a third. Only one-shot processes enable it (``pycni.oneshot``: a plugin executable's
in-process path, ``pycni-run`` without its daemon).

``enable`` also imports ``dataclasses`` without ``inspect`` when neither is imported yet:
``dataclasses`` needs it only to write the ``__doc__`` of a class that has none
(``inspect.signature``), and ``inspect``, with the ``ast`` and ``dis`` it imports, is ~7 ms
of a one-shot plugin's start, more than a bridge ADD's kernel work. Such a class gets
``Name(...)`` as its ``__doc__`` (the real signature once anything else imported
``inspect``); whoever imports ``inspect`` gets the real module.
"""

from __future__ import annotations

import builtins
import marshal
import sys
from types import CodeType, ModuleType
from typing import Any, Final

from pycni import standin
from pycni.codefile import CodeFile

__all__ = ["enable", "import_dataclasses"]

_METHODS: Final = "dataclass methods"


def enable(codes: CodeFile) -> None:
    """Compile dataclass methods through ``codes`` (once per process)."""
    dataclasses = import_dataclasses()
    if "exec" in vars(dataclasses):
        return
    methods = codes.table(_METHODS)
    compiled: dict[str, CodeType] = {}

    def cached_exec(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str):
            code = compiled.get(source)
            if code is None and (entry := methods.get(source)) is not None:
                code = codes.code(entry)
            if code is None:
                code = compile(source, "<string>", "exec", dont_inherit=True)
                compiled[source] = code
            source = code
        builtins.exec(source, globals, locals)  # noqa: S102 - dataclasses' own call

    dataclasses.exec = cached_exec  # type: ignore[attr-defined]
    codes.learn(_METHODS, lambda: {source: (marshal.dumps(code),)
                                   for source, code in compiled.items()})


class _Signature:
    """What ``dataclasses`` makes a class's ``__doc__`` of: ``str()`` of it."""

    def __init__(self, cls: type) -> None:
        self._cls = cls

    def __str__(self) -> str:
        real = sys.modules.get("inspect")
        return "(...)" if real is None else str(real.signature(self._cls))


def import_dataclasses() -> ModuleType:
    """``dataclasses``; imported with a stand-in for ``inspect`` if neither is imported yet."""
    return standin.importing("dataclasses", standin.make(
        "inspect", "the part of inspect dataclasses uses (pycni.codecache)",
        signature=_Signature))
