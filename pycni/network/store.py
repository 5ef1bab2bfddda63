"""The conf dir as the network manager's store: every network there, and the writes.

A new network is one file, ``50-<name>.conflist`` (after the built-in ``10-`` to ``40-``, so
`ctr run --cni`, which takes the first file, keeps the default network), written to a temp file,
synced and linked into place, which fails rather than overwrite. Changes hold
``.pycni-network.lock`` in the conf dir (libcni reads only ``*.conf``, ``*.conflist`` and
``*.json``, as do pycni and podman): two `network create` never pick the same subnet.
Removal first renames the conflist to a hidden name, so no runtime starts an ADD on a network
being taken apart, and can put it back if it must stop.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni.conf import NetworkConfigList, conf_files, conflist_from_doc
from pycni.cni.errors import CNIError, ErrorCode
from pycni.lockfile import hold
from pycni.network.view import NetworkView, view_of

__all__ = [
    "StoredNetwork",
    "conflist_path",
    "find_network",
    "load_named",
    "load_network",
    "load_networks",
    "locked",
    "restore",
    "withdraw",
    "write_new",
]

LOCK_NAME: Final = ".pycni-network.lock"
FILE_PREFIX: Final = "50-"
# Hidden from libcni, which loads any file ending in .conf, .conflist or .json, dot files too.
_HIDDEN_SUFFIX: Final = ".removing"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredNetwork:
    path: str
    conflist: NetworkConfigList
    view: NetworkView
    created: float  # the file's ctime, as podman reports it

    @property
    def name(self) -> str:
        return self.conflist.name


def conflist_path(conf_dir: str, name: str) -> str:
    return os.path.join(conf_dir, f"{FILE_PREFIX}{name}.conflist")


def load_network(path: str) -> StoredNetwork:
    found = _load(path)
    if found is None:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot load {path}")
    return found


def _load(path: str) -> StoredNetwork | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
            created = os.fstat(f.fileno()).st_ctime
        doc = json.loads(data)
        conflist = conflist_from_doc(doc, data, path)
    except (OSError, ValueError, CNIError):
        return None  # what libcni skips, we skip
    return StoredNetwork(path=path, conflist=conflist, view=view_of(conflist, doc.get("args")),
                         created=created)


def load_networks(conf_dir: str) -> list[StoredNetwork]:
    """Every loadable network, in libcni's order (conflists, then single-plugin files)."""
    found = (_load(path) for path in conf_files(conf_dir))
    return [n for n in found if n is not None]


def load_named(conf_dir: str, name: str) -> StoredNetwork | None:
    """The first loadable network called ``name`` (the one a runtime would use), reading no
    file after it."""
    for path in conf_files(conf_dir):
        found = _load(path)
        if found is not None and found.name == name:
            return found
    return None


def find_network(networks: list[StoredNetwork], name: str, conf_dir: str) -> StoredNetwork:
    """The first network called ``name`` (the one a runtime would use)."""
    for network in networks:
        if network.name == name:
            return network
    raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"no such network: {name}",
                   f"looked in {conf_dir}")


@contextlib.contextmanager
def locked(conf_dir: str, *, timeout: float = 30.0) -> Iterator[None]:
    with hold(os.path.join(conf_dir, LOCK_NAME), timeout=timeout):
        yield


def write_new(conf_dir: str, name: str, doc: Mapping[str, Any]) -> str:
    """Write ``doc`` as the network's conflist; refuses to replace an existing file."""
    path = conflist_path(conf_dir, name)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    import tempfile  # ~2 ms (random): `ls` does without

    fd, tmp = tempfile.mkstemp(dir=conf_dir, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, path)  # atomic, and EEXIST instead of overwriting
    except FileExistsError as err:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{path} already exists",
                       "another file there holds this name") from err
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot write {path}", str(err)) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def withdraw(network: StoredNetwork) -> str:
    """Hide the network's conflist from runtimes; its hidden path (for ``restore``)."""
    directory, base = os.path.split(network.path)
    hidden = os.path.join(directory, f".{base}{_HIDDEN_SUFFIX}")
    try:
        os.rename(network.path, hidden)
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot move {network.path} aside", str(err)) from err
    return hidden


def restore(hidden: str, network: StoredNetwork) -> None:
    os.rename(hidden, network.path)
