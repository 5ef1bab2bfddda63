"""One layer tar, unpacked safely into an empty directory in overlay's own format.

Safe: every member's path stays in the layer (``members``), nothing is ever written through a
symlink (each parent of a member must be a directory this layer made: the unpacker keeps the
kind of everything it made, so it never asks the file system, which a symlink member could
redirect), hard links only to what this layer already holds, no device nodes (the runtime makes
/dev; a layer's own char or block device would be a door to the host's devices), FIFOs allowed,
a bound on members and bytes. Whiteouts become what overlay reads for a root mounter: a 0/0
character device for ``.wh.NAME`` and the ``trusted.overlay.opaque=y`` xattr for
``.wh..wh..opq`` (a directory recreated over a whiteout of this layer is opaque too: "deleted,
then made anew"). Owners, modes, times and the ``security.capability`` and ``user.*`` xattrs
are kept; any other xattr (``trusted.overlay.*`` above all) is not.

The blob is read once, as a stream: hashed as stored (its digest), decompressed (gzip or plain
tar, by magic; zstd is refused), hashed again (the diff id); the caller compares both.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Final

from pycni_run.errors import RunError
from pycni_run.images import members
from pycni_run.images.digests import Digest, HashingReader, Readable
from pycni_run.images.members import MemberPath

__all__ = ["OPAQUE_XATTR", "Limits", "Unpacked", "unpack_layer"]

OPAQUE_XATTR: Final = "trusted.overlay.opaque"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_KEPT_XATTRS: Final = ("security.capability", "user.")
_PAX_XATTR: Final = "SCHILY.xattr."
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_members: int = 1_000_000
    max_bytes: int = 64 << 30  # of the uncompressed tar


@dataclass(frozen=True, slots=True, kw_only=True)
class Unpacked:
    digest: Digest  # of the blob as stored
    stored: int  # its bytes
    diff_id: Digest  # of the uncompressed tar
    size: int  # bytes of file content


class _Rejoined:
    """The bytes read ahead to find the magic, then the rest of the stream."""

    def __init__(self, head: bytes, rest: HashingReader) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            out = self._head if size < 0 else self._head[:size]
            self._head = self._head[len(out):]
            return out
        return self._rest.read(size)

    def seek(self, offset: int, /) -> int:
        raise io.UnsupportedOperation("a layer is read as a stream")


def _decompressed(raw: HashingReader, label: str) -> Readable:
    head = raw.read(4)
    stream = _Rejoined(head, raw)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if head == _ZSTD_MAGIC:
        raise RunError(f"layer {label} is zstd-compressed: not supported (gzip or plain tar)")
    return stream


def _make_dir(where: str) -> None:
    """0755 whatever the umask: a directory the tar only implies (and the layer's root) must
    let the container's users in."""
    os.mkdir(where)
    os.chmod(where, 0o755)  # noqa: S103 - an image's directories are world-readable


@dataclass(slots=True)
class _Extractor:
    root: str
    label: str
    limits: Limits
    kinds: dict[tuple[str, ...], str] = field(default_factory=lambda: {(): "dir"})
    dir_times: list[tuple[str, int]] = field(default_factory=list)
    size: int = 0
    count: int = 0

    def host(self, path: MemberPath) -> str:
        return os.path.join(self.root, *path.parts)

    def fail(self, what: str) -> RunError:
        return RunError(f"layer {self.label}: {what}")

    def ensure_parents(self, path: MemberPath) -> None:
        for i in range(1, len(path.parts)):
            prefix = path.parts[:i]
            kind = self.kinds.get(prefix)
            if kind is None:
                _make_dir(os.path.join(self.root, *prefix))
                self.kinds[prefix] = "dir"
            elif kind != "dir":
                raise self.fail(f"{path} goes through {'/'.join(prefix)}, a {kind}, "
                                "not a directory")

    def clear(self, path: MemberPath) -> str | None:
        """Remove what this layer has at ``path`` (a directory only if ``path`` is not one
        to keep); the kind that was there."""
        kind = self.kinds.pop(path.parts, None)
        if kind == "dir":
            shutil.rmtree(self.host(path))
            depth = len(path.parts)
            for key in [k for k in self.kinds if k[:depth] == path.parts and len(k) > depth]:
                del self.kinds[key]
        elif kind is not None:
            os.unlink(self.host(path))
        return kind

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.count += 1
        if self.count > self.limits.max_members:
            raise self.fail(f"more than {self.limits.max_members} members")
        path = members.member_path(member.name, self.label)
        whiteout = members.whiteout_of(path)
        if whiteout is not None:
            self.whiteout(*whiteout)
        elif member.isdir():
            self.directory(path, member)
        elif member.isreg():
            self.regular(path, member, tar)
        elif member.issym():
            members.check_symlink_target(path, member.linkname, self.label)
            self.replace(path, "link")
            os.symlink(member.linkname, self.host(path))
            self.metadata(path, member)
        elif member.islnk():
            self.hardlink(path, member)
        elif member.isfifo():
            self.replace(path, "fifo")
            os.mkfifo(self.host(path), 0o600)
            self.metadata(path, member)
        elif member.ischr() or member.isblk():
            raise self.fail(f"device node {path}: a layer may not carry devices (the runtime "
                            "makes /dev)")
        else:
            raise self.fail(f"member {path} of unsupported type {member.type!r}")

    def replace(self, path: MemberPath, kind: str) -> None:
        if not path.parts:
            raise self.fail(f"the layer's root cannot be a {kind}")
        self.ensure_parents(path)
        self.clear(path)
        self.kinds[path.parts] = kind

    def whiteout(self, kind: str, path: MemberPath) -> None:
        if kind == "meta":
            return
        if kind == "opaque":
            if self.kinds.get(path.parts) != "dir":
                self.directory(path, None)
            os.setxattr(self.host(path), OPAQUE_XATTR, b"y")
            return
        self.replace(path, "whiteout")
        os.mknod(self.host(path), stat.S_IFCHR, os.makedev(0, 0))

    def directory(self, path: MemberPath, member: tarfile.TarInfo | None) -> None:
        kind = self.kinds.get(path.parts)
        if kind != "dir":
            self.replace(path, "dir")
            _make_dir(self.host(path))
            if kind == "whiteout":  # deleted below, made anew here: nothing below shows
                os.setxattr(self.host(path), OPAQUE_XATTR, b"y")
        if member is not None:
            self.metadata(path, member)
            self.dir_times.append((self.host(path), int(member.mtime)))

    def regular(self, path: MemberPath, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.replace(path, "file")
        source = tar.extractfile(member)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(self.host(path), flags, 0o600), "wb") as out:
            if source is not None:
                shutil.copyfileobj(source, out, _CHUNK)
        self.size += member.size
        self.metadata(path, member)

    def hardlink(self, path: MemberPath, member: tarfile.TarInfo) -> None:
        target = members.member_path(member.linkname, self.label)
        kind = self.kinds.get(target.parts)
        if kind not in ("file", "link", "fifo") or target == path:
            raise self.fail(f"hard link {path} -> {member.linkname}: not a file of this layer")
        self.replace(path, kind)
        os.link(self.host(target), self.host(path), follow_symlinks=False)

    def metadata(self, path: MemberPath, member: tarfile.TarInfo) -> None:
        where = self.host(path)
        link = member.issym()
        os.chown(where, member.uid, member.gid, follow_symlinks=False)
        if not link:
            os.chmod(where, member.mode & 0o7777)  # after chown, which clears set-id bits
        for key, value in member.pax_headers.items():
            name = key.removeprefix(_PAX_XATTR)
            if key.startswith(_PAX_XATTR) and name.startswith(_KEPT_XATTRS) and not link:
                raw = value.encode("utf-8", "surrogateescape")
                os.setxattr(where, name, raw, follow_symlinks=False)
        if not member.isdir():
            ns = int(member.mtime * 1e9)
            os.utime(where, ns=(ns, ns), follow_symlinks=False)

    def finish(self) -> None:
        for where, mtime in reversed(self.dir_times):  # children first: they touch parents
            with contextlib.suppress(FileNotFoundError):
                os.utime(where, (mtime, mtime))


def unpack_layer(blob: Readable, target: str, *, label: str,
                 limits: Limits = Limits()) -> Unpacked:
    """Unpack ``blob`` into ``target`` (made here); RunError naming ``label``."""
    _make_dir(target)
    raw = HashingReader(blob)
    extractor = _Extractor(root=target, label=label, limits=limits)
    try:
        tar_in = HashingReader(_decompressed(raw, label), limit=limits.max_bytes,
                               what=f"layer {label}")
        with tarfile.open(fileobj=tar_in, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                extractor.add(member, tar)
        tar_in.drain()
        raw.drain()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise RunError(f"layer {label}: not a valid (gzip or plain) tar: {err}") from None
    except OSError as err:
        raise RunError(f"layer {label}: cannot unpack: {err}") from err
    extractor.finish()
    return Unpacked(digest=raw.digest(), stored=raw.count, diff_id=tar_in.digest(),
                    size=extractor.size)
