"""The container's root filesystem: the busybox image, a per-container overlay, pivot_root.

Host side: ``ensure_image`` builds ``busybox`` once from Debian's busybox-static (the binary
plus one symlink per applet) into the image store; ``prepare_layers`` makes the container's
own upper/work/merged directories. Init side (inside the new mount namespace, a crun-style
checklist): ``make_root_private``, ``mount_overlay``, ``mount_proc``, ``mount_sys``,
``mount_dev``, ``pivot``, ``mask_paths`` (Docker's masked and read-only /proc and /sys
paths); ``write_etc`` generates hostname, hosts and resolv.conf.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import ipaddress
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from pycni.linux import mountcalls
from pycni_run import inroot, volumes
from pycni_run.errors import RunError

__all__ = [
    "BUSYBOX_BINARY",
    "DEVICES",
    "Layers",
    "ensure_image",
    "etc_hosts",
    "make_root_private",
    "mask_paths",
    "mount_dev",
    "mount_overlay",
    "mount_proc",
    "mount_sys",
    "pivot",
    "prepare_layers",
    "remove_layers",
    "resolv_conf",
    "write_etc",
]

BUSYBOX_BINARY: Final = "/bin/busybox"  # Debian's busybox-static
_IMAGE_DIRS: Final = (
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "tmp",
    "root",
    "run",
    "var",
    "home",
)
DEVICES: Final = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
_NOSUID_NODEV_NOEXEC: Final = mountcalls.MS_NOSUID | mountcalls.MS_NODEV | mountcalls.MS_NOEXEC
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")  # the kernel copies mount options as one page


# ---------------------------------------------------------------------- image store (host)


def _applets(binary: str) -> list[str]:
    out = subprocess.run([binary, "--list-full"], capture_output=True, text=True, check=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _build_busybox(target: str, binary: str) -> None:
    for directory in _IMAGE_DIRS:
        os.makedirs(os.path.join(target, directory), exist_ok=True)
    os.chmod(os.path.join(target, "tmp"), 0o1777)  # noqa: S103 - /tmp is sticky and world-writable
    shutil.copy2(binary, os.path.join(target, "bin", "busybox"))
    for applet in _applets(binary):
        link = os.path.join(target, applet)
        if os.path.lexists(link) or applet == "bin/busybox":
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        depth = applet.count("/")
        os.symlink("../" * depth + "bin/busybox", link)
    etc = os.path.join(target, "etc")
    with open(os.path.join(etc, "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
    with open(os.path.join(etc, "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")


def ensure_image(store: str, name: str, *, busybox: str = BUSYBOX_BINARY) -> str:
    """The rootfs directory of image ``name``; ``busybox`` is built on first use, once."""
    rootfs = os.path.join(store, name, "rootfs")
    if os.path.isdir(rootfs):
        return rootfs
    if name != "busybox":
        raise RunError(f"no such image {name!r} in {store} (only busybox is built locally)")
    if not os.access(busybox, os.X_OK):
        raise RunError(f"{busybox} is missing: install Debian's busybox-static")
    os.makedirs(store, exist_ok=True)
    with open(os.path.join(store, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two first runs build it once
        if os.path.isdir(rootfs):
            return rootfs
        os.makedirs(os.path.join(store, name), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".rootfs-", dir=os.path.join(store, name))
        try:
            _build_busybox(tmp, busybox)
            os.chmod(tmp, 0o755)  # noqa: S103 - an image root is world-readable
            os.rename(tmp, rootfs)  # atomic: a rootfs is either complete or absent
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return rootfs


@dataclass(frozen=True, slots=True, kw_only=True)
class Layers:
    lower: str  # overlay's lowerdir: one directory, or a loaded image's layers (top first)
    upper: str
    work: str
    merged: str
    # A loaded image's layers are its store's short link names, relative to this directory
    # (podman's l/): one page of mount options then holds ~200 layers, not ~40 full paths.
    lower_base: str = ""
    image: str = ""  # the loaded image's id: `rmi` refuses while a container has it

    def to_dict(self) -> dict[str, str]:
        doc = {"lower": self.lower, "upper": self.upper, "work": self.work, "merged": self.merged}
        if self.image:
            doc.update(lower_base=self.lower_base, image=self.image)
        return doc

    def overlay_options(self) -> str:
        return f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}"


def prepare_layers(storage: str, lower: str, *, lower_base: str = "", image: str = "") -> Layers:
    """The container's own overlay directories (its writes land in ``upper``, never in lower)."""
    if not os.path.isdir(lower_base or lower):
        raise RunError(f"rootfs {lower_base or lower} is not a directory")
    layers = Layers(
        lower=lower,
        upper=os.path.join(storage, "upper"),
        work=os.path.join(storage, "work"),
        merged=os.path.join(storage, "merged"),
        lower_base=lower_base,
        image=image,
    )
    if len(layers.overlay_options()) >= _PAGE_SIZE:
        raise RunError(f"overlay options longer than a page ({_PAGE_SIZE} bytes): too many "
                       "layers, or a storage directory with a very long path")
    for path in (layers.upper, layers.work, layers.merged):
        os.makedirs(path, mode=0o755, exist_ok=True)
    return layers


def remove_layers(storage: str) -> None:
    shutil.rmtree(storage, ignore_errors=True)


# ---------------------------------------------------------------------- /etc files


def etc_hosts(
    hostname: str, ips: Iterable[str], extra: Iterable[tuple[str, str]] = ()
) -> str:
    """localhost, the container's own addresses under its hostname, then ``--add-host``'s
    (name, address) entries in the order given."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    own = [f"{ip}\t{hostname}" for ip in ips]
    lines += own or [f"127.0.1.1\t{hostname}"]
    lines += [f"{address}\t{name}" for name, address in extra]
    return "\n".join(lines) + "\n"


def _host_resolver(host_file: str) -> tuple[list[str], list[str]]:
    """The host's nameservers minus loopback ones (unreachable from a netns of its own), and
    its search and options lines."""
    servers: list[str] = []
    lines: list[str] = []
    with contextlib.suppress(OSError), open(host_file) as f:
        for line in f:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    if not ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                        servers.append(words[1])
            elif words and words[0] in ("search", "options"):
                lines.append(" ".join(words))
    return servers, lines


def resolv_conf(
    nameservers: Iterable[str],
    search: Iterable[str] = (),
    options: Iterable[str] = (),
    host_file: str = "/etc/resolv.conf",
) -> str:
    """The given nameservers (``--dns``, else CNI's DNS) if any, else the host's minus
    loopback resolvers with its search and options lines (Docker's rule), else Google's.
    ``search`` and ``options``, when given, replace those lines (a search of ``.``: none)."""
    servers = list(nameservers)
    lines: list[str] = []
    if not servers:
        servers, lines = _host_resolver(host_file)
    servers = servers or ["8.8.8.8", "8.8.4.4"]
    search, options = list(search), list(options)
    if search:
        domains = [d for d in search if d != "."]
        kept = [x for x in lines if not x.startswith("search")]
        lines = ([f"search {' '.join(domains)}"] if domains else []) + kept
    if options:
        lines = [x for x in lines if not x.startswith("options")]
        lines.append(f"options {' '.join(options)}")
    return "".join(f"nameserver {s}\n" for s in servers) + "".join(x + "\n" for x in lines)


def write_etc(root: str, *, hostname: str, hosts: str, resolv: str) -> None:
    etc = _mount_point(root, "/etc")
    for name, text in (("hostname", hostname + "\n"), ("hosts", hosts), ("resolv.conf", resolv)):
        path = os.path.join(etc, name)
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(path):
                os.unlink(path)
        with open(path, "w") as f:
            f.write(text)


# ---------------------------------------------------------------------- init checklist


def make_root_private() -> None:
    """Nothing we mount propagates back to the host, and pivot_root accepts the tree."""
    mountcalls.mount(None, "/", None, mountcalls.MS_REC | mountcalls.MS_PRIVATE)


def mount_overlay(layers: Layers) -> None:
    if layers.lower_base:
        os.chdir(layers.lower_base)  # the kernel resolves relative lowerdirs from the cwd
    mountcalls.mount("overlay", layers.merged, "overlay", 0, layers.overlay_options())


def _mkdir(path: str, mode: int = 0o755) -> str:
    os.makedirs(path, mode=mode, exist_ok=True)
    return path


def _mount_point(root: str, path: str) -> str:
    """A directory of the image, found (or made) inside its root: a loaded image's ``/proc``
    or ``/etc`` may be a symlink, which must not lead the runtime to a host path."""
    return inroot.resolve(root, path, create="dir")


def mount_proc(root: str) -> None:
    mountcalls.mount("proc", _mount_point(root, "/proc"), "proc", _NOSUID_NODEV_NOEXEC)


def mount_sys(root: str, *, writable: bool = False) -> None:
    """sysfs, read-only unless ``--privileged`` (it shows the container's netns when the
    netns is new)."""
    target = _mount_point(root, "/sys")
    readonly = 0 if writable else mountcalls.MS_RDONLY
    mountcalls.mount("sysfs", target, "sysfs", _NOSUID_NODEV_NOEXEC | readonly)


def mount_dev(root: str, nodes: Mapping[str, int] | None = None) -> None:
    """A tmpfs /dev with the six usual nodes, devpts (own instance), shm and the std links.
    ``nodes``: in a user namespace, where nothing can ``mknod`` a device, detached bind
    mounts of the host's nodes (``detached``), each attached onto an empty file."""
    dev = _mount_point(root, "/dev")  # then a fresh tmpfs: nothing below it is the image's
    mountcalls.mount("tmpfs", dev, "tmpfs", mountcalls.MS_NOSUID, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        path = os.path.join(dev, name)
        if nodes is not None:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666))
            mountcalls.attach_tree(nodes[name], path)
            continue
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)  # noqa: S103 - /dev/null and friends are world-writable
    mountcalls.mount(
        "devpts",
        _mkdir(os.path.join(dev, "pts")),
        "devpts",
        mountcalls.MS_NOSUID | mountcalls.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    mountcalls.mount(
        "shm",
        _mkdir(os.path.join(dev, "shm"), 0o1777),
        "tmpfs",
        _NOSUID_NODEV_NOEXEC,
        "mode=1777,size=65536k",
    )
    for link, target in (
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, os.path.join(dev, link))


def mask_paths(masked: Iterable[str], readonly: Iterable[str]) -> None:
    """After the pivot (the paths are the container's): the read-only paths bound onto
    themselves and remounted read-only, then each masked file under a bind of /dev/null and
    each masked directory under an empty read-only tmpfs (runc's order and means). A path this
    kernel does not have is skipped; a ``*`` in a masked path is expanded here."""
    for path in readonly:
        _make_readonly(path)
    for pattern in masked:
        for path in glob.glob(pattern) if "*" in pattern else [pattern]:
            _mask(path)


def _make_readonly(path: str) -> None:
    try:
        mountcalls.mount(path, path, None, mountcalls.MS_BIND | mountcalls.MS_REC)
    except FileNotFoundError:
        return
    volumes.remount_readonly(path)


def _mask(path: str) -> None:
    try:
        mountcalls.mount("/dev/null", path, None, mountcalls.MS_BIND)
    except FileNotFoundError:
        return
    except NotADirectoryError:  # a directory: a file cannot be bound onto it
        mountcalls.mount("tmpfs", path, "tmpfs", mountcalls.MS_RDONLY | _NOSUID_NODEV_NOEXEC)


def pivot(root: str) -> None:
    """pivot_root(".", ".") and detach the old root, as runc does: no put_old directory."""
    os.chdir(root)
    mountcalls.pivot_root(".", ".")
    mountcalls.umount2(".", mountcalls.MNT_DETACH)
    os.chdir("/")
