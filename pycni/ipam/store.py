"""host-local's on-disk reservations, in the reference plugin's layout, under its flock.

Layout under ``<dataDir>/<network>/`` (the reference's, so either plugin can read the other's
state; ``lock`` is the same flock the Go plugin takes)::

    lock                       flock held around every operation (open_store)
    10.1.0.5, 2001:db8::5      one file per reserved address, mode 0600, created with
                               O_CREAT|O_EXCL (that create IS the reservation), content
                               exactly "<containerID>\\r\\n<ifname>" (older Go: "<containerID>")
    last_reserved_ip.<i>       the last address reserved in range set i (round-robin hint)
    by-attachment/<key>        pycni's index: JSON {containerID, ifname, ips} of one
                               attachment, key = sha256(cid NUL ifname)[:32] in hex
    by-attachment/.complete    marker: every reservation in this directory is indexed

The index lets DEL and the duplicate check of ADD touch only the attachment's own files
instead of reading every file of the network (the reference walks the whole directory).
Without the marker (a directory the Go plugin wrote, or a legacy ``<id>``-only file that
cannot be indexed) lookups fall back to that scan; GC indexes what it can and sets the marker.
The Go plugin skips the index files (their content never matches an attachment); but if it
writes into a marked directory afterwards, DEL sees its reservations only after the next GC.

Crash safety: ADD writes the index before the address files, so the index may name a file
that is missing, empty or (after a reuse) someone else's, all handled on read, but never
misses one. Nothing is fsynced (nor is it by the reference): the state describes veths and
containers that do not outlive the machine either. On the default tmpfs it is moot; on disk,
what a power cut loses only frees addresses whose containers the reboot ended, and temp +
rename already keeps every file whole for the crash that matters, a killed process (all but
the round-robin hint, which is only a hint: ``set_last_reserved``).

Every method assumes the lock is held: a ``Store`` is only handed out by ``open_store``.
OSError becomes ``CNIError`` code 5 (I/O failure); a lock not obtained in time is code 11.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Final

from pycni import atomicfile
from pycni.cni.errors import CNIError, io_failure
from pycni.digest import sha256_hex
from pycni.ipam.config import IPAddress, validate_network_name
from pycni.lockfile import hold

__all__ = [
    "INDEX_DIR",
    "LAST_RESERVED_PREFIX",
    "LOCK_FILE",
    "LOCK_TIMEOUT",
    "IndexEntry",
    "Store",
    "attachment_key",
    "network_dir",
    "open_store",
    "owned_by",
    "owner_content",
    "parse_owner",
]

log = logging.getLogger(__name__)

LOCK_FILE: Final = "lock"
LAST_RESERVED_PREFIX: Final = "last_reserved_ip."
INDEX_DIR: Final = "by-attachment"
INDEX_COMPLETE: Final = ".complete"
LINE_BREAK: Final = "\r\n"
# Seconds to wait for the network's lock before failing with "try again later" (code 11): a
# holder only keeps it for milliseconds, so a long wait means a stuck process, not load.
LOCK_TIMEOUT: float = 30.0

IndexEntry = tuple[str, str, list[IPAddress]]  # (containerID, ifname, addresses)

_COMPLETE_TEXT: Final = (
    b"Every reservation in this directory has an index entry in by-attachment/.\n"
    b"Remove this file to make pycni scan the directory instead.\n"
)


def network_dir(data_dir: str, network: str) -> str:
    """``<dataDir>/<network>``; the name is validated since it becomes a path component."""
    return os.path.join(data_dir, validate_network_name(network))


def attachment_key(container_id: str, ifname: str) -> str:
    """Index file name of an attachment: fixed length and safe whatever the ifname holds."""
    return sha256_hex(f"{container_id}\0{ifname}".encode())[:32]


def owner_content(container_id: str, ifname: str) -> str:
    return f"{container_id.strip()}{LINE_BREAK}{ifname}"


def parse_owner(content: str) -> tuple[str, str | None] | None:
    """``(containerID, ifname)`` of a reservation file; ifname None for the legacy format."""
    text = content.strip()
    if not text:
        return None
    cid, sep, ifname = text.partition(LINE_BREAK)
    return (cid, ifname) if sep else (cid, None)


def owned_by(content: str, container_id: str, ifname: str) -> bool:
    """The reference's match: ``<id>\\r\\n<ifname>``, or the legacy ``<id>`` alone."""
    text = content.strip()
    return text in (owner_content(container_id, ifname), container_id.strip())


def _parse_ip_name(name: str) -> IPAddress | None:
    """The address a file name stands for; None for lock, hints, temp files, the index."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Store:
    """The reservations of one network directory. Only valid while its lock is held."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._index_dir = os.path.join(path, INDEX_DIR)
        self.indexed = False  # set by open_store: is every reservation here indexed?

    # -- reservations ------------------------------------------------------------------

    def _ip_path(self, ip: IPAddress) -> str:
        return os.path.join(self.path, str(ip))

    def is_reserved(self, ip: IPAddress) -> bool:
        return os.path.lexists(self._ip_path(ip))

    def reserve(self, ip: IPAddress, *, container_id: str, ifname: str) -> bool:
        """Create the address's file exclusively; False if it already exists (taken)."""
        path = self._ip_path(ip)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        with io_failure(f"reserve {ip} in {self.path}"):
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(owner_content(container_id, ifname).encode())
            except BaseException:
                _unlink(path)
                raise
        return True

    def owner_of(self, ip: IPAddress) -> str | None:
        """The content of the address's file, None if it is not reserved."""
        with io_failure(f"read {self._ip_path(ip)}"):
            return _read_text(self._ip_path(ip))

    def remove_ip(self, ip: IPAddress) -> None:
        with io_failure(f"release {self._ip_path(ip)}"):
            _unlink(self._ip_path(ip))

    def reserved_ips(self) -> list[IPAddress]:
        """Every reserved address (names only, nothing is read)."""
        with io_failure(f"list {self.path}"), os.scandir(self.path) as entries:
            names = [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
        return [ip for ip in map(_parse_ip_name, names) if ip is not None]

    def scan(self) -> Iterator[tuple[IPAddress, str]]:
        """Every reservation with its content: the reference's O(n) walk, used sparingly."""
        for ip in self.reserved_ips():
            try:
                content = self.owner_of(ip)
            except CNIError as err:
                log.warning("skipping unreadable reservation: %s", err)
                continue
            if content is not None:  # released between listing and reading: not ours to see
                yield ip, content

    # -- round-robin hint --------------------------------------------------------------

    def last_reserved(self, index: int) -> IPAddress | None:
        """The hint of range set ``index``; a missing or garbled one just restarts the walk."""
        path = os.path.join(self.path, f"{LAST_RESERVED_PREFIX}{index}")
        with io_failure(f"read {path}"):
            text = _read_text(path)
        return None if text is None else _parse_ip_name(text.strip())

    def set_last_reserved(self, index: int, ip: IPAddress) -> None:
        """Overwrite the hint in place. Replacing it (temp file + rename over it, or a
        truncate to empty) made ext4 start writing the new file out at once (auto_da_alloc):
        ~0.25 ms of every ADD on disk, against ~0.01 ms here. It is read under the same lock
        and a torn one (a writer killed between the write and the truncate) only restarts
        the walk, or starts it elsewhere: a hint, never a reservation."""
        path = os.path.join(self.path, f"{LAST_RESERVED_PREFIX}{index}")
        data = str(ip).encode()
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        with io_failure(f"write {path}"):
            fd = os.open(path, flags, 0o600)
            try:
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)

    # -- per-attachment index ----------------------------------------------------------

    def _index_path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self._index_dir, attachment_key(container_id, ifname))

    def _read_index_file(self, path: str) -> IndexEntry | None:
        """(cid, ifname, ips) of an index file; None when it is missing or garbled."""
        with io_failure(f"read {path}"):
            text = _read_text(path)
        if text is None:
            return None
        try:
            doc = json.loads(text)
            ips = [ipaddress.ip_address(ip) for ip in doc["ips"]]
            return str(doc["containerID"]), str(doc["ifname"]), ips
        except (ValueError, KeyError, TypeError) as err:
            log.warning("ignoring garbled IPAM index %s: %s", path, err)
            return None

    def _listed_ips(self, container_id: str, ifname: str) -> list[IPAddress] | None:
        """The attachment's indexed addresses; None when only a scan can tell."""
        path = self._index_path(container_id, ifname)
        entry = self._read_index_file(path)
        if entry is None:
            # Missing: in an indexed directory that means "holds nothing"; garbled: unknown.
            return [] if self.indexed and not os.path.lexists(path) else None
        if entry[:2] != (container_id, ifname):  # a hash collision: never act on it
            return None
        return entry[2]

    def write_index(self, container_id: str, ifname: str, ips: Sequence[IPAddress]) -> None:
        """Record the attachment's addresses atomically; an empty list removes the entry."""
        path = self._index_path(container_id, ifname)
        with io_failure(f"write {path}"):
            if not ips:
                _unlink(path)
                return
            os.makedirs(self._index_dir, mode=0o700, exist_ok=True)
            doc = {"containerID": container_id, "ifname": ifname, "ips": [str(ip) for ip in ips]}
            atomicfile.write(path, json.dumps(doc).encode())

    def index_entries(self) -> Iterator[tuple[str, IndexEntry | None]]:
        """(key, (cid, ifname, ips)) of every index file; the entry is None if garbled."""
        with io_failure(f"list {self._index_dir}"):
            try:
                names = os.listdir(self._index_dir)
            except FileNotFoundError:
                return
        for name in names:
            if not name.startswith("."):
                entry = self._read_index_file(os.path.join(self._index_dir, name))
                yield name, entry

    def remove_index_entry(self, key: str) -> None:
        path = os.path.join(self._index_dir, key)
        with io_failure(f"remove {path}"):
            _unlink(path)

    def attachment_ips(self, container_id: str, ifname: str) -> list[IPAddress]:
        """The addresses this attachment holds now, each checked against its file's content.

        Indexed directory: read the index and the files it lists, nothing else. Otherwise
        scan like the reference (matching ``<id>\\r\\n<ifname>`` and the legacy ``<id>``).
        An empty file listed in the index is ours too: an ADD died between create and write.
        """
        listed = self._listed_ips(container_id, ifname)
        held = [ip for ip in listed or () if self._listed_and_owned(ip, container_id, ifname)]
        if listed is not None and self.indexed:
            return held
        scanned = [ip for ip, text in self.scan() if owned_by(text, container_id, ifname)]
        return scanned + [ip for ip in held if ip not in scanned]

    def _listed_and_owned(self, ip: IPAddress, container_id: str, ifname: str) -> bool:
        content = self.owner_of(ip)
        if content is None:
            return False
        return not content.strip() or owned_by(content, container_id, ifname)

    # -- housekeeping ------------------------------------------------------------------

    def mark_indexed(self) -> None:
        """Declare every reservation here indexed: from now on lookups skip the scan."""
        with io_failure(f"write {self._index_dir}"):
            os.makedirs(self._index_dir, mode=0o700, exist_ok=True)
            atomicfile.write(os.path.join(self._index_dir, INDEX_COMPLETE), _COMPLETE_TEXT)
        self.indexed = True

    def detect_indexed(self, *, mark: bool = True) -> bool:
        """Indexed if marked so, or if nothing is reserved yet (then marked, if ``mark``)."""
        if os.path.lexists(os.path.join(self._index_dir, INDEX_COMPLETE)):
            self.indexed = True
        elif not self.reserved_ips():
            if mark:
                self.mark_indexed()
            else:
                self.indexed = True  # nothing to find, so nothing a scan could add
        return self.indexed

    def remove_temp_files(self) -> None:
        """Temp files left by a writer that died mid-write (under the lock, none is live)."""
        for folder in (self.path, self._index_dir):
            with io_failure(f"clean {folder}"):
                atomicfile.remove_leftovers(folder)


@contextlib.contextmanager
def open_store(
    data_dir: str, network: str, *, timeout: float | None = None, release_only: bool = False
) -> Iterator[Store]:
    """Create ``<dataDir>/<network>`` (0700) if needed, take its lock, hand out the Store.

    The lock (``pycni.lockfile.hold``: bounded wait, then code 11) is released when the
    block ends, and by the kernel when the process dies: a crash never leaves it locked.
    ``release_only`` (DEL, CHECK): the store is never marked indexed on the way, so nothing
    is written that needs a free block or inode: a DEL must work on a full disk.
    """
    path = network_dir(data_dir, network)
    with io_failure(f"create {data_dir}"):
        # dataDir and the network directory (made by hold) get 0700; parents such as
        # /run/pycni keep the default mode.
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
    wait = LOCK_TIMEOUT if timeout is None else timeout
    with contextlib.ExitStack() as held:
        with io_failure(f"lock {path}"):  # only taking the lock: the caller's errors pass untouched
            held.enter_context(hold(os.path.join(path, LOCK_FILE), timeout=wait))
        store = Store(path)
        store.detect_indexed(mark=not release_only)
        yield store
