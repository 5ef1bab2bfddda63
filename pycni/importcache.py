"""The modules a one-shot process imports, from the code file instead of ~150 files.

A bridge ADD in-process imports ~150 modules from source (pycni's, pyroute2's, the standard
library's). For each, the import system stats the directories of ``sys.path`` (three of ours
come before the standard library's), then the source, then opens, reads and checks its
``.pyc``; system calls are dear on a virtual machine like this one. With the code coming
from one mapped file, the imports of a bridge ADD took 38-42 ms instead of 46-48 (fastest and
first quartile of 25 processes each), and the in-process ADD 2.22x-2.68x the reference
instead of 2.86x-3.23x (``bench_plugins``, four runs each way in turns).

``ModuleCode`` goes before the path finder and serves a module from its entry in the code
file (``pycni.codefile``) only if its source is still the one the code was compiled from
(one ``stat``: its ``st_mtime_ns`` and size, the check a ``.pyc`` gets) and only from the
table of the process's own ``sys.path`` (another path may resolve the same name to another
file); a damaged entry is forgotten. Anything else is imported the usual way, and at exit
(``learned``) such modules are added from their ``.pyc``, as Python wrote it (a module
without a current one waits for a later process). A module served so is a source module
like any other (``__file__``, ``__path__``, its source for tracebacks). Not noticed: a new
file on ``sys.path`` in front of a cached module of the same name, as with Python's own
frozen modules. This module and ``pycni.codefile`` import nothing the cache could serve
(not even ``typing`` or ``importlib.util``, which brings ``contextlib``), since whatever
they import comes before the cache is in place.
"""

from __future__ import annotations

import os
import sys

# importlib.util's and importlib.machinery's own source: importlib.util imports contextlib,
# collections and functools (~3 ms), importlib.machinery warnings, before the cache serves them
from _frozen_importlib_external import (
    MAGIC_NUMBER,
    PathFinder,
    SourceFileLoader,
    cache_from_source,
    spec_from_file_location,
)
from types import CodeType, ModuleType

TYPE_CHECKING = False  # not typing's: this comes before the imports it makes cheaper
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from typing import Final

    from pycni.codefile import Additions, CodeFile

__all__ = ["ModuleCode", "enable"]

_PYC_HEADER: Final = 16  # magic, flags, source mtime, source size (PEP 552)


def enable(codes: CodeFile) -> None:
    """Import modules through ``codes`` from now on (once per process), and teach it the
    others at exit. The finder goes before the path finder: after the builtin and frozen
    modules' finders, and behind any finder put first (``pycni.standin``'s wraps what it
    finds)."""
    if any(isinstance(finder, ModuleCode) for finder in sys.meta_path):
        return
    modules = ModuleCode(codes)
    try:
        at = sys.meta_path.index(PathFinder)
    except ValueError:
        at = len(sys.meta_path)
    sys.meta_path.insert(at, modules)
    codes.learn(modules.table_name, modules.learned)


class _CachedLoader(SourceFileLoader):
    """A source module's own loader (source, data, ``__file__`` as usual), with its code
    from the code file."""

    def __init__(self, fullname: str, path: str, code: CodeType) -> None:
        super().__init__(fullname, path)
        self._code = code

    def get_code(self, fullname: str) -> CodeType:
        return self._code


class ModuleCode:
    """On ``sys.meta_path`` before the path finder: the modules of ``codes``' table for this
    process's ``sys.path`` whose source is still the one their code was compiled from."""

    def __init__(self, codes: CodeFile) -> None:
        self.table_name = "modules on " + os.pathsep.join(sys.path)
        self._codes = codes
        self._entries = codes.table(self.table_name)
        self._served: set[str] = set()

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        origin, mtime_ns, size, package = entry[:4]
        if not isinstance(origin, str):
            return None
        try:
            st = os.stat(origin)
        except OSError:
            return None
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            return None
        code = self._codes.code(entry)
        if code is None:  # damaged: forgotten, so that this process's exit writes it anew
            del self._entries[name]
            return None
        spec = spec_from_file_location(name, origin, loader=_CachedLoader(name, origin, code),
                                       submodule_search_locations=[] if package else None)
        if spec is not None:
            self._served.add(name)
        return spec

    def learned(self) -> Additions:
        """Entries for the modules this process imported the usual way, from their current
        ``.pyc`` files: the ones the table lacks or has out of date."""
        new: Additions = {}
        for name, module in list(sys.modules.items()):
            spec = getattr(module, "__spec__", None)
            if (name in self._served or spec is None or type(spec.loader) is not SourceFileLoader
                    or not isinstance(spec.origin, str) or not spec.origin.endswith(".py")):
                continue
            try:
                st = os.stat(spec.origin)
            except OSError:
                continue
            checks = (spec.origin, st.st_mtime_ns, st.st_size,
                      spec.submodule_search_locations is not None)
            known = self._entries.get(name)
            if known is not None and known[:4] == checks:
                continue  # imported before this finder was in place: nothing new
            code = _compiled(spec.origin, st)
            if code is not None:
                new[name] = (*checks, code)
        return new


def _compiled(origin: str, source: os.stat_result) -> bytes | None:
    """The marshalled code in the ``.pyc`` Python keeps for ``origin``, if it is of
    ``source`` as it is now (not for a hash-based one)."""
    try:
        with open(cache_from_source(origin), "rb") as f:
            data = f.read()
    except (OSError, ValueError, NotImplementedError):
        return None
    header = data[:_PYC_HEADER]
    if (len(header) < _PYC_HEADER or header[:4] != MAGIC_NUMBER
            or int.from_bytes(header[4:8], "little") != 0
            or int.from_bytes(header[8:12], "little") != int(source.st_mtime) & 0xFFFFFFFF
            or int.from_bytes(header[12:16], "little") != source.st_size & 0xFFFFFFFF):
        return None
    return data[_PYC_HEADER:]
