"""Where ``load`` reads an image from: a tar archive (``docker save``, ``podman save`` in
either format, ``skopeo copy ... oci-archive:``; gzip-compressed or not), a directory (an OCI
image layout, or an unpacked docker archive), or stdin (spooled to a file in the store first:
a docker archive names its layers in a manifest that comes last).

A name inside the source is a relative path; ``..``, absolute names and symlinks that lead out
of the archive are refused. Symlink members are followed inside the archive (podman's docker
archives link ``<id>/layer.tar`` to ``../<diff id>.tar``).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from typing import IO, Final, Protocol

from pycni_run.errors import RunError

__all__ = ["Source", "open_source"]

MAX_LINKS: Final = 8


class Source(Protocol):
    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...


def _clean(name: str, where: str) -> str:
    """A name inside the source as a normalized relative path."""
    if not name or name.startswith("/") or "\x00" in name:
        raise RunError(f"{where}: bad name {name!r} in the image archive")
    clean = posixpath.normpath(name)
    if clean == ".." or clean.startswith("../"):
        raise RunError(f"{where}: {name!r} leads out of the image archive")
    return clean


class _TarSource:
    def __init__(self, tar: tarfile.TarFile, label: str) -> None:
        self._tar = tar
        self._label = label
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():  # later members replace earlier ones, as tar does
            with contextlib.suppress(RunError):
                self._members[_clean(member.name, label)] = member

    def _find(self, name: str) -> tarfile.TarInfo | None:
        clean = _clean(name, self._label)
        for _ in range(MAX_LINKS):
            member = self._members.get(clean)
            if member is None or not (member.issym() or member.islnk()):
                return member
            base = posixpath.dirname(clean) if member.issym() else ""
            clean = _clean(posixpath.join(base, member.linkname), self._label)
        raise RunError(f"{self._label}: {name}: too many links in the image archive")

    def exists(self, name: str) -> bool:
        member = self._find(name)
        return member is not None and member.isreg()

    def open(self, name: str) -> IO[bytes]:
        member = self._find(name)
        stream = self._tar.extractfile(member) if member is not None and member.isreg() else None
        if stream is None:
            raise RunError(f"{self._label}: {name} is not in the image archive")
        return stream


class _DirSource:
    def __init__(self, root: str) -> None:
        self._root = os.path.realpath(root)

    def _path(self, name: str) -> str:
        path = os.path.realpath(os.path.join(self._root, _clean(name, self._root)))
        if not path.startswith(self._root + os.sep):
            raise RunError(f"{self._root}: {name!r} leads out of the image directory")
        return path

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str) -> IO[bytes]:
        try:
            return open(self._path(name), "rb")
        except OSError as err:
            raise RunError(f"{self._root}: cannot read {name}: {err.strerror}") from err


def _spool_stdin(tmp_dir: str) -> str:
    fd, path = tempfile.mkstemp(prefix="stdin-", suffix=".tar", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    except BaseException:
        os.unlink(path)
        raise
    return path


@contextlib.contextmanager
def open_source(path: str, tmp_dir: str) -> Iterator[Source]:
    """``path`` ("-" = stdin) as a Source, closed (and a spooled stdin removed) on exit."""
    spooled = _spool_stdin(tmp_dir) if path == "-" else ""
    target = spooled or path
    try:
        if os.path.isdir(target):
            yield _DirSource(target)
            return
        try:
            tar = tarfile.open(target, "r:*")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            raise RunError(f"{path}: no such file or directory") from None
        except (tarfile.TarError, OSError) as err:
            raise RunError(f"{'stdin' if spooled else path}: not an image archive "
                           f"(a tar, optionally gzip-compressed): {err}") from None
        with tar:
            yield _TarSource(tar, "stdin" if spooled else path)
    finally:
        if spooled:
            os.unlink(spooled)
