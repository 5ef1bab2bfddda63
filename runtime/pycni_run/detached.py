"""Mounts made on the host's side of a container's user namespace, attached inside it.

A container with a user namespace of its own (``userns``) is root only over what that
namespace owns: its init cannot mount an image's overlay with the layers' on-disk owners
shown as its own ids, cannot ``mknod`` a device, and may not even reach a volume's host path
(a directory of mode 0700 on the way). So the runtime's side makes those mounts while it still
has the host's privileges, as detached mount trees (``open_tree``, ``fsmount``: attached
nowhere), and the init attaches them in its own mount namespace (``move_mount``):

- the rootfs: each lower layer cloned and idmapped with the container's user namespace (on-disk
  0 reads as the mapped root), stacked by descriptor into an overlay mounted by the host's
  root, so overlay's own xattrs (opaque directories) and whiteouts work as without a user
  namespace; the upper directory is owned by the mapped root, so what the container writes
  lands there owned by its mapped ids. This kernel (6.18) refuses to idmap an overlay mount
  itself (``mount_setattr`` on it: EINVAL), and takes idmapped lower layers;
- the device nodes: the host's /dev/null and the others, bind-mounted onto empty files;
- the volumes: each ``-v`` source cloned (recursively, read-only if asked) before the user
  namespace exists. Not idmapped: a file the container creates on one is owned on the host by
  the mapped id it was created by, and the container's root can write where that id may.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pycni.linux import mountcalls
from pycni_run.errors import RunError
from pycni_run.rootfs import DEVICES, Layers
from pycni_run.volumes import Mount

__all__ = ["HostTrees", "attach", "close_all", "idmapped_rootfs", "open_host_trees"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HostTrees:
    """Descriptors of detached mounts, inherited by the init (close-on-exec)."""

    rootfs: int = -1  # the overlay, from the runtime
    devices: Mapping[str, int] = field(default_factory=dict)  # /dev name -> the host's node
    volumes: Mapping[str, int] = field(default_factory=dict)  # -v target -> its source


def _clone(path: str, *, recursive: bool, what: str) -> int:
    try:
        return mountcalls.clone_tree(path, recursive=recursive)
    except OSError as err:
        raise RunError(f"cannot clone {what} {path}: {err.strerror}") from err


def open_host_trees(mounts: Sequence[Mount]) -> HostTrees:
    """In the init's parent, still with the host's privileges: the device nodes and every
    ``-v`` source as detached mounts (a read-only volume made so here)."""
    devices: dict[str, int] = {}
    volumes: dict[str, int] = {}
    try:
        for name, _major, _minor in DEVICES:
            devices[name] = _clone(f"/dev/{name}", recursive=False, what="the device")
        for m in mounts:
            if m.kind == "bind":
                volumes[m.target] = tree = _clone(m.source, recursive=True, what="the volume")
                if m.read_only:
                    mountcalls.readonly_tree(tree)
    except BaseException:
        close_all(HostTrees(devices=devices, volumes=volumes))
        raise
    return HostTrees(devices=devices, volumes=volumes)


def close_all(trees: HostTrees) -> None:
    for fd in (trees.rootfs, *trees.devices.values(), *trees.volumes.values()):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _lower_dirs(layers: Layers) -> list[str]:
    """The lower directories, top first, as host paths (a loaded image's are link names
    relative to its store)."""
    return [os.path.join(layers.lower_base, d) for d in layers.lower.split(":")]


def idmapped_rootfs(layers: Layers, userns_fd: int) -> int:
    """In the runtime: the container's overlay as a detached mount, its lower layers idmapped
    by the container's user namespace (behind ``userns_fd``, its maps written)."""
    lower: list[int] = []
    try:
        for path in _lower_dirs(layers):
            lower.append(_clone(path, recursive=False, what="the image layer"))
            mountcalls.idmap_tree(lower[-1], userns_fd)
        return mountcalls.overlay_tree(lower, upper=layers.upper, work=layers.work)
    except OSError as err:
        raise RunError(f"cannot mount the container's rootfs for its user namespace: {err}") \
            from err
    finally:
        for fd in lower:
            os.close(fd)


def attach(tree: int, target: str) -> None:
    """In the init: attach a detached mount at ``target`` and let go of its descriptor."""
    try:
        mountcalls.attach_tree(tree, target)
    finally:
        os.close(tree)
