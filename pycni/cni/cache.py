"""The runtime's results cache, in libcni's format and place, written atomically.

``<cache_dir>/results/<network>-<containerID>-<ifname>`` holding
``{"kind": "cniCacheV1", "containerId", "config" (base64 of the conflist bytes), "ifName",
"networkName", "netns", "cniArgs", "capabilityArgs", "result"}`` so pycni's CLI and
libcni-based runtimes (containerd, CRI-O, podman's CNI backend) see each other's attachments.
An entry without ``result`` is an ADD in progress: GC still finds (and cleans) it after a crash.
A temp file of a writer killed before its rename (``.tmp-*``) is removed by GC once it is old.
Failures to write or remove are ``CNIError`` code 5 (I/O): a read-only or full cache is one
clear error, never a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pycni.cni import jsonio
from pycni.cni.errors import CNIError, ErrorCode, io_failure

__all__ = [
    "DEFAULT_CACHE_DIR",
    "STALE_TEMP_AGE",
    "CachedAttachment",
    "check_entry_name",
    "delete",
    "entry_path",
    "list_network",
    "read",
    "remove",
    "remove_stale_temp_files",
    "write",
]

DEFAULT_CACHE_DIR: Final = "/var/lib/cni"
_KIND: Final = "cniCacheV1"
_TMP_PREFIX: Final = ".tmp-"
_NAME_MAX: Final = 255
# A writer holds its temp file for a millisecond; one this old belongs to a dead writer.
STALE_TEMP_AGE: Final = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedAttachment:
    network: str
    container_id: str
    ifname: str
    netns: str = ""
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)
    config: bytes = b""
    result: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": _KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.config).decode(),
            "ifName": self.ifname,
            "networkName": self.network,
            "netns": self.netns,
            "cniArgs": [list(pair) for pair in self.cni_args],
            "capabilityArgs": dict(self.capability_args),
        }
        if self.result is not None:
            doc["result"] = dict(self.result)
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> CachedAttachment:
        if not isinstance(doc, dict) or doc.get("kind") != _KIND:
            raise ValueError("not a cniCacheV1 entry")
        result = doc.get("result")
        return cls(
            network=str(doc["networkName"]),
            container_id=str(doc["containerId"]),
            ifname=str(doc["ifName"]),
            netns=str(doc.get("netns") or ""),
            cni_args=tuple((str(k), str(v)) for k, v in doc.get("cniArgs") or []),
            capability_args=dict(doc.get("capabilityArgs") or {}),
            config=base64.b64decode(doc.get("config") or ""),
            result=result if isinstance(result, dict) else None,
        )


def _entry_name(network: str, container_id: str, ifname: str) -> str:
    return f"{network}-{container_id}-{ifname}"


def entry_path(cache_dir: str, network: str, container_id: str, ifname: str) -> str:
    # All three parts were validated as single path components before they get here.
    return os.path.join(cache_dir, "results", _entry_name(network, container_id, ifname))


def check_entry_name(network: str, container_id: str, ifname: str) -> None:
    """Code 4 if the attachment's entry name exceeds NAME_MAX: each part may be valid on its
    own (a network name and a container id may each be 255 bytes) and still not fit."""
    name = _entry_name(network, container_id, ifname)
    size = len(name.encode(errors="surrogatepass"))
    if size > _NAME_MAX:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT,
            "attachment name too long for the results cache",
            f"network, container id and ifname make a {size}-byte file name; the limit is "
            f"{_NAME_MAX} (use a shorter container id or network name)",
        )


def write(cache_dir: str, entry: CachedAttachment) -> str:
    """Write atomically (temp file, fsync, rename): a crash leaves the old entry or the new one."""
    path = entry_path(cache_dir, entry.network, entry.container_id, entry.ifname)
    with io_failure(f"write the results cache entry {path}"):
        return _write(path, entry)


def _write(path: str, entry: CachedAttachment) -> str:
    import tempfile  # ~5 ms (shutil, random): only writers pay it, not `network ls`

    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def read(path: str) -> CachedAttachment | None:
    """The entry at ``path``; ``None`` if it is missing, empty or corrupt (DEL goes on without)."""
    try:
        with open(path, "rb") as f:
            return CachedAttachment.from_dict(jsonio.loads(f.read()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def delete(cache_dir: str, network: str, container_id: str, ifname: str) -> None:
    remove(entry_path(cache_dir, network, container_id, ifname))


def remove(path: str) -> None:
    """Remove one entry (or temp file); already gone is success."""
    with io_failure(f"remove {path}"), contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_stale_temp_files(cache_dir: str, max_age: float = STALE_TEMP_AGE) -> list[str]:
    """Remove the temp files of writers that died before their rename: those older than
    ``max_age`` seconds (a live writer's is milliseconds old). The paths removed."""
    directory = os.path.join(cache_dir, "results")
    try:
        names = [n for n in os.listdir(directory) if n.startswith(_TMP_PREFIX)]
    except FileNotFoundError:
        return []
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot list {directory}", str(err)) from err
    removed = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            age = time.time() - os.lstat(path).st_mtime
        except FileNotFoundError:
            continue  # renamed into place meanwhile
        if age > max_age:
            remove(path)
            removed.append(path)
    return removed


def list_network(cache_dir: str, network: str) -> list[tuple[str, CachedAttachment | None]]:
    """(path, entry) for every cached attachment of ``network``; corrupt entries as ``None``.

    File names are ambiguous when names contain '-', so the entry's own networkName decides;
    an unreadable entry is attributed to the network whose prefix it carries.
    """
    directory = os.path.join(cache_dir, "results")
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found: list[tuple[str, CachedAttachment | None]] = []
    for name in names:
        if name.startswith(_TMP_PREFIX) or not name.startswith(f"{network}-"):
            continue
        path = os.path.join(directory, name)
        entry = read(path)
        if entry is None or entry.network == network:
            found.append((path, entry))
    return found
