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
what it compiled is saved at exit. The cache is a marshal file in the package's
``__pycache__``, beside the ``.pyc`` files and trusted as they are, tagged with the
interpreter's bytecode magic number; a file that is not the current user's (or root's) alone,
is of another interpreter, or is damaged is ignored. Each entry stays marshalled until a
class asks for it: the file holds every one-shot program's classes (~600 methods, 650 KB),
and unmarshalling all of their code took 2.3-2.6 ms of which a bridge ADD uses a third;
reading the entries as bytes takes ~0.3 ms. Only one-shot processes enable it
(``pycni.oneshot``: a plugin executable's in-process path, ``pycni-run`` without its daemon).

``enable`` also imports ``dataclasses`` without ``inspect`` when neither is imported yet:
``dataclasses`` needs it only to write the ``__doc__`` of a class that has none
(``inspect.signature``), and ``inspect``, with the ``ast`` and ``dis`` it imports, is ~7 ms
of a one-shot plugin's start, more than a bridge ADD's kernel work. Such a class gets
``Name(...)`` as its ``__doc__`` (the real signature once anything else imported
``inspect``); whoever imports ``inspect`` gets the real module.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import marshal
import os
import sys
from importlib.util import MAGIC_NUMBER
from types import CodeType, ModuleType
from typing import Any, Final

from pycni import atomicfile, standin

__all__ = ["CACHE_PATH", "enable", "import_dataclasses"]

CACHE_PATH: Final = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "__pycache__",
    f"dataclass-methods.{sys.implementation.cache_tag}.marshal")
_MAX_ENTRIES: Final = 4096


def enable(path: str = CACHE_PATH) -> None:
    """Compile dataclass methods through the cache at ``path`` (once per process)."""
    dataclasses = import_dataclasses()
    if "exec" in vars(dataclasses):
        return
    cache = _load(path)
    compiled: dict[str, CodeType] = {}

    def cached_exec(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str):
            code = compiled.get(source) or _code(cache.get(source))
            if code is None:
                code = compile(source, "<string>", "exec", dont_inherit=True)
                compiled[source] = code
            source = code
        builtins.exec(source, globals, locals)  # noqa: S102 - dataclasses' own call

    dataclasses.exec = cached_exec  # type: ignore[attr-defined]
    atexit.register(_save, path, cache, compiled)


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


def _code(entry: bytes | None) -> CodeType | None:
    """An entry's code, None if there is no entry or it is not code after all."""
    if entry is None:
        return None
    try:
        code = marshal.loads(entry)  # noqa: S302 - ours, as a .pyc is
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def _load(path: str) -> dict[str, bytes]:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
                return {}
            data = f.read()
    except OSError:
        return {}
    if not data.startswith(MAGIC_NUMBER):
        return {}
    try:
        cache = marshal.loads(data[len(MAGIC_NUMBER):])  # noqa: S302 - ours, as a .pyc is
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(cache, dict):
        return {}
    return {k: v for k, v in cache.items() if isinstance(k, str) and isinstance(v, bytes)}


def _save(path: str, cache: dict[str, bytes], compiled: dict[str, CodeType]) -> None:
    """Write the cache with what this process compiled (atomically; best effort: a read-only
    package simply compiles every time)."""
    if not compiled:
        return
    new = {source: marshal.dumps(code) for source, code in compiled.items()}
    merged = {**cache, **new} if len(cache) + len(new) <= _MAX_ENTRIES else new
    data = MAGIC_NUMBER + marshal.dumps(merged)
    with contextlib.suppress(OSError):  # the temp file is already removed on failure
        atomicfile.write(path, data, mode=0o644)
