"""The file of compiled code one-shot processes keep for each other: an index, then the
marshalled code objects, each unmarshalled only when asked for.

It holds tables by name: dataclass methods by their source text (``pycni.codecache``), and the
modules found on one ``sys.path`` by their name (``pycni.importcache``). A table maps a key
to a tuple of what its user checks (a module's source path, mtime and size...) ending with
the code's offset and length in the file. Its users say what they learned (``learn``); the
first process that opens the file (``shared``) writes it again at exit if any has something
new, all of it at once (temp file + rename: readers see the old file or the new one).

The file is mapped, not read: a bridge ADD uses ~150 modules' entries, ~2 MB of code, and
reading a file of that size took ~2 ms here and unmarshalling it as bytes twice that; a
mapping costs only the pages the entries touch. It lives in the package's ``__pycache__``
beside the ``.pyc`` files and is trusted as they are: a file that is not the current user's
(or root's) alone, is of another interpreter (Python's bytecode magic number), or is damaged,
is not used (and is replaced at exit).
"""

from __future__ import annotations

import atexit
import marshal
import os
import sys
from _frozen_importlib_external import MAGIC_NUMBER  # importlib.util's, without its imports
from types import CodeType

TYPE_CHECKING = False  # not typing's: this is imported before the imports it makes cheaper
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final, TypeAlias

__all__ = ["DEFAULT_PATH", "Additions", "CodeFile", "Table", "shared"]

DEFAULT_PATH: Final = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "__pycache__",
    f"oneshot-code.{sys.implementation.cache_tag}.marshal")

# key -> (what the table's user checks..., offset, length): offset from the blobs' start
Table: TypeAlias = "dict[str, tuple[object, ...]]"
# key -> (what the table's user checks..., marshalled code): what a process adds
Additions: TypeAlias = "dict[str, tuple[object, ...]]"

_LENGTH: Final = 4  # the index's length, after the magic number
_MAX_ENTRIES: Final = 4096  # per table: beyond it, a table starts again from what is new
_MAX_TABLES: Final = 8  # beyond it, only the tables a process adds to are kept

_opened: dict[str, CodeFile] = {}


def shared(path: str = DEFAULT_PATH) -> CodeFile:
    """The code file at ``path`` as this process opened it first; written again at exit
    with what its users learned (``CodeFile.learn``), if anything."""
    codes = _opened.get(path)
    if codes is None:
        codes = _opened[path] = CodeFile.open(path)
        atexit.register(codes.save, path)
    return codes


class CodeFile:
    """A code file as it was when this process opened it (an empty one if it was unusable)."""

    def __init__(self, tables: dict[str, Table] | None = None,
                 blobs: memoryview | None = None) -> None:
        self.tables = tables or {}
        self._blobs = blobs
        self._learners: dict[str, Callable[[], Additions]] = {}

    def learn(self, table: str, learned: Callable[[], Additions]) -> None:
        """At ``save``, add to ``table`` what ``learned`` then returns."""
        self._learners[table] = learned

    def save(self, path: str) -> None:
        """Write the file again if a learner has anything new for it."""
        additions = {table: learned() for table, learned in self._learners.items()}
        if any(additions.values()):
            self.write(path, additions)

    @classmethod
    def open(cls, path: str) -> CodeFile:
        view = _mapped(path)
        if view is None or view[:len(MAGIC_NUMBER)] != MAGIC_NUMBER:
            return cls()
        start = len(MAGIC_NUMBER) + _LENGTH
        end = start + int.from_bytes(view[len(MAGIC_NUMBER):start], "little")
        try:
            tables = marshal.loads(view[start:end])  # noqa: S302 - ours, as a .pyc is
        except (EOFError, ValueError, TypeError):
            return cls()
        if not (isinstance(tables, dict) and all(isinstance(t, dict) for t in tables.values())):
            return cls()
        return cls(tables, view[end:])

    def table(self, name: str) -> Table:
        return self.tables.get(name, {})

    def code(self, entry: tuple[object, ...]) -> CodeType | None:
        """The code of a table's entry; None if it is not code after all."""
        data = self._blob(entry)
        if data is None:
            return None
        try:
            code = marshal.loads(data)  # noqa: S302 - ours, as a .pyc is
        except (EOFError, ValueError, TypeError):
            return None
        return code if isinstance(code, CodeType) else None

    def _blob(self, entry: tuple[object, ...]) -> memoryview | None:
        offset, length = entry[-2:]
        if (self._blobs is None or not isinstance(offset, int) or not isinstance(length, int)
                or offset < 0 or length < 0 or offset + length > len(self._blobs)):
            return None
        return self._blobs[offset:offset + length]

    def write(self, path: str, additions: dict[str, Additions]) -> None:
        """Write this file's entries with ``additions`` (per table) to ``path``, atomically;
        best effort: a read-only package is simply never cached."""
        names = set(self.tables) | set(additions)
        if len(names) > _MAX_TABLES:
            names = set(additions)
        blobs: list[bytes] = []
        size = 0
        tables: dict[str, Table] = {}
        for name in sorted(names):
            new = additions.get(name, {})
            kept = {} if len(self.table(name)) + len(new) > _MAX_ENTRIES else {
                key: (*entry[:-2], bytes(blob)) for key, entry in self.table(name).items()
                if key not in new and (blob := self._blob(entry)) is not None}
            table: Table = {}
            for key, entry in {**kept, **new}.items():
                *checks, data = entry
                assert isinstance(data, bytes)
                table[key] = (*checks, size, len(data))
                blobs.append(data)
                size += len(data)
            tables[name] = table
        index = marshal.dumps(tables)
        data = b"".join([MAGIC_NUMBER, len(index).to_bytes(_LENGTH, "little"), index, *blobs])
        import contextlib  # at exit: whatever is imported by then is paid for

        from pycni import atomicfile

        with contextlib.suppress(OSError):  # the temp file is already removed on failure
            atomicfile.write(path, data, mode=0o644)


def _mapped(path: str) -> memoryview | None:
    """The file at ``path``, mapped read-only, if it is ours (root's or the user's alone)."""
    try:
        import mmap  # an extension module: imported only by processes that use the file

        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (ImportError, OSError):
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022 or not st.st_size:
            return None
        return memoryview(mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
