"""The nftables engine: run JSON commands, read a table, apply a change, retry; every feature's
I/O goes through here (layouts: ``masquerade``, ``forward``, ``portmap``, ``macspoof``).

One call = one ``nft_run_cmd_from_buffer`` = one netlink batch = one kernel transaction: it
all applies or nothing does, and the kernel serialises transactions, so concurrent ADDs need
no lock. libnftables is used in-process through ctypes, ``nft -j -f -`` where it is missing:
no fork/exec on the hot path (field failure #6).

A fresh context is made per call. libnftables opens its netlink socket when the context is
created, and a socket stays bound to the network namespace it was opened in; a per-call
context therefore always acts on the namespace the calling thread is in *now* (tests run the
drivers under ``netns.enter``). Creating one costs about 30 µs. The library itself is loaded
on first use, not at import.

Freeing a context closes its socket, and the kernel's release of a netfilter netlink socket
(``nft_rcv_nl_event``, NETLINK_URELEASE) first waits, holding the commit mutex, until every
transaction queued for destruction is destroyed: after a batch that deleted anything, ours or
any process's, an RCU grace period. Measured here: a masquerade element's deletion commits in
~0.4 ms and the free that follows takes 5-10 ms. A process that tells its caller the outcome
before it exits (a fork server's worker, the runtime daemon's worker) calls ``hold_contexts``:
its contexts are then kept open until ``release_held_contexts`` (after the report) or the
process's exit, off the caller's clock. Every context, not only a deleting batch's: the free of
a read after our own deletion would wait for that deletion's grace period just the same.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import AttachmentKey, network_tag
from pycni.firewall.nftables import nftjson as nj

__all__ = [
    "ATTEMPTS",
    "ExecRunner",
    "LibRunner",
    "NftError",
    "NftRunner",
    "NftTable",
    "default_runner",
    "hold_contexts",
    "release_held_contexts",
]

log = logging.getLogger(__name__)

_LIBRARY: Final = "libnftables.so.1"
_OUTPUT_JSON: Final = 1 << 4  # NFT_CTX_OUTPUT_JSON (nftables/libnftables.h)
_INPUT_NO_DNS_JSON: Final = (1 << 0) | (1 << 1)  # NFT_CTX_INPUT_NO_DNS | NFT_CTX_INPUT_JSON
_CTX_DEFAULT: Final = 0
_EXEC_TIMEOUT: Final = 30.0
# Reads and read-then-writes, retried while the table changed in between: with 8 concurrent DELs
# a second attempt could lose the race too (the soak test's "portmap DEL incomplete: No such
# file").
ATTEMPTS: Final = 5

Doc = dict[str, Any]

@dataclass(slots=True)
class _Held:
    """The contexts kept open while the caller waits (``on``: keep each new one)."""

    on: bool = False
    contexts: list[int] = field(default_factory=list)


_HELD: Final = _Held()
# At most this many are held (a descriptor each): a command that tears down hundreds of
# containers in one worker frees the oldest as it goes, rather than running out of them.
HELD_MAX: Final = 32


def hold_contexts() -> None:
    """From now on keep every context open (see the module docstring)."""
    _HELD.on = True


def release_held_contexts() -> None:
    """Free the contexts kept since ``hold_contexts`` (this may wait for a grace period) and
    free each one at once again."""
    _HELD.on = False
    held, _HELD.contexts = _HELD.contexts, []
    if held:
        lib = _load_library()
        for ctx in held:
            lib.nft_ctx_free(ctx)


class NftError(CNIError):
    """nft refused a batch (nothing of it was applied). ``details`` holds nft's message."""

    def __init__(self, details: str) -> None:
        super().__init__(ErrorCode.INTERNAL, "nftables command failed", details.strip())


class NftRunner(Protocol):
    """Runs one JSON document of commands as one transaction; returns nft's JSON output."""

    def run(self, commands: list[Doc]) -> Doc: ...

    @property
    def kind(self) -> str: ...


def _encode(commands: list[Doc]) -> bytes:
    return json.dumps({"nftables": commands}, separators=(",", ":")).encode()


def _decode(output: str) -> Doc:
    # Writes print nothing; reads print one JSON document.
    text = output.strip()
    if not text:
        return {"nftables": []}
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise NftError(f"unexpected nft output: {text[:200]}")
    return doc


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures we use (ctypes would otherwise truncate pointers to int)."""
    p, i = ctypes.c_void_p, ctypes.c_int
    sigs: dict[str, tuple[list[Any], Any]] = {
        "nft_ctx_new": ([ctypes.c_uint32], p),
        "nft_ctx_free": ([p], None),
        "nft_ctx_output_set_flags": ([p, ctypes.c_uint], None),
        "nft_ctx_buffer_output": ([p], i),
        "nft_ctx_buffer_error": ([p], i),
        "nft_run_cmd_from_buffer": ([p, ctypes.c_char_p], i),
        "nft_ctx_get_output_buffer": ([p], ctypes.c_char_p),
        "nft_ctx_get_error_buffer": ([p], ctypes.c_char_p),
    }
    for fname, (argtypes, restype) in sigs.items():
        func = getattr(lib, fname)
        func.argtypes, func.restype = argtypes, restype
    # Only in nftables >= 1.0.7; older versions parse JSON input whenever output is JSON.
    setter = getattr(lib, "nft_ctx_input_set_flags", None)
    if setter is not None:
        setter.argtypes, setter.restype = [p, ctypes.c_uint], ctypes.c_uint
    return lib


@functools.cache
def _load_library() -> ctypes.CDLL:
    return _bind(ctypes.CDLL(_LIBRARY, use_errno=True))


@functools.cache
def _has_input_flags() -> bool:
    """Asked once: ctypes does not remember a symbol it did not find, and looking for it again
    (every runner, every plugin call) searched every loaded library, ~1 ms."""
    return hasattr(_load_library(), "nft_ctx_input_set_flags")


class LibRunner:
    """libnftables through ctypes: the default, no process per call."""

    kind = "libnftables"

    def __init__(self) -> None:
        self._lib = _load_library()  # OSError if the library is missing: caller falls back
        self._set_input = _has_input_flags()

    def run(self, commands: list[Doc]) -> Doc:
        lib = self._lib
        ctx = lib.nft_ctx_new(_CTX_DEFAULT)
        if not ctx:
            raise NftError("nft_ctx_new failed (out of memory?)")
        try:
            lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
            if self._set_input:
                lib.nft_ctx_input_set_flags(ctx, _INPUT_NO_DNS_JSON)
            if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
                raise NftError("cannot buffer libnftables output")
            rc = lib.nft_run_cmd_from_buffer(ctx, _encode(commands))
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        finally:
            if _HELD.on:
                _HELD.contexts.append(ctx)
                if len(_HELD.contexts) > HELD_MAX:
                    lib.nft_ctx_free(_HELD.contexts.pop(0))
            else:
                lib.nft_ctx_free(ctx)
        if rc != 0:
            raise NftError(err or f"nft_run_cmd_from_buffer returned {rc}")
        return _decode(out)


class ExecRunner:
    """One ``nft -j -f -`` per call, for hosts without libnftables.so.1."""

    kind = "nft"

    def __init__(self, binary: str | None = None) -> None:
        import shutil  # the fallback only: the usual path never pays for it

        found = binary or shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
        if found is None:
            raise FileNotFoundError("nft not found")
        self._binary = found

    def run(self, commands: list[Doc]) -> Doc:
        import subprocess

        try:
            proc = subprocess.run(
                [self._binary, "-j", "-f", "-"], input=_encode(commands),
                capture_output=True, timeout=_EXEC_TIMEOUT, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise NftError(f"cannot run {self._binary}: {err}") from err
        if proc.returncode != 0:
            raise NftError(proc.stderr.decode(errors="replace") or f"exit status {proc.returncode}")
        return _decode(proc.stdout.decode(errors="replace"))


def default_runner() -> NftRunner:
    """libnftables if it loads, else the nft binary; OSError if neither exists."""
    try:
        return LibRunner()
    except OSError as lib_err:
        try:
            return ExecRunner()
        except FileNotFoundError as exec_err:
            raise OSError(f"{_LIBRARY}: {lib_err}; {exec_err}") from exec_err


Build = Callable[[nj.TableState], list[nj.Cmd]]


class NftTable:
    """One table pycni owns, through a runner made on first use (in the calling thread's
    network namespace): run, read the whole table, read-build-write retried, and the three
    writes of a setup."""

    def __init__(self, table: nj.Table = nj.PYCNI, runner: NftRunner | None = None) -> None:
        self.table = table
        self._runner = runner

    def run(self, commands: list[nj.Cmd]) -> Doc:
        if self._runner is None:
            try:
                self._runner = default_runner()
            except OSError as err:
                raise CNIError(ErrorCode.INTERNAL, "nftables is not available", str(err)) from err
        return self._runner.run(commands)

    def status(self) -> str | None:
        """None if nftables answers here, else why not."""
        try:
            self.run([nj.list_tables()])
        except CNIError as err:
            return str(err)
        return None

    def read(self, listing: nj.Cmd | None = None) -> nj.TableState:
        """The whole table, or what ``listing`` lists of it; empty if it does not exist
        (nothing was ever set up).

        libnftables gives no errno for a failed listing, so a failure asks whether the table
        exists. If it does, it may have been created by a concurrent ADD between the listing
        and the question (a DEL of nothing on a fresh host raced that way): list again.
        """
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return nj.parse_table(self.run([listing or nj.list_table(self.table)]),
                                      self.table)
            except NftError:
                if not nj.table_in(self.run([nj.list_tables()]), self.table):
                    return nj.TableState()
                if attempt == ATTEMPTS:
                    raise
                log.debug("listing failed but the table exists, listing again", exc_info=True)
        raise AssertionError("unreachable")

    def apply(self, build: Build, *, listing: nj.Cmd | None = None) -> None:
        """Read (the whole table, or what ``listing`` lists), build the commands from what is
        there, write; again while the write fails."""
        for attempt in range(ATTEMPTS):
            commands = build(self.read(listing))
            if not commands:
                return
            try:
                self.run(commands)
            except NftError:
                if attempt + 1 == ATTEMPTS:
                    raise
                log.debug("nftables write failed, re-reading and retrying", exc_info=True)
            else:
                return

    def setup(self, what: str, label: str, *, insert: Callable[[], list[nj.Cmd]],
              replace: Callable[[], list[nj.Cmd]], informed: Build,
              fresh: Callable[[], list[nj.Cmd]] | None = None) -> None:
        """Up to four writes, each complete on its own, so the common case is the cheapest
        (measured on this kernel: a pure insert commits in ~0.5 ms and queues nothing for
        destruction, while after any transaction that deletes or re-adds a chain the context's
        free waits ~13 ms for an RCU grace period, unless it is held: see the module docstring):

        1. ``insert`` the elements (``create``): done for any new container of a known network;
        2. if that failed, ``fresh``: the layout made from nothing (``nftjson.first_write``),
           pure additions too: done for the first container on a fresh host;
        3. if that failed too (a key is already there: a retried ADD; or the network's chain
           is new), ``replace``: the layout rewritten and the elements replaced without reading;
        4. if that failed too (a key still holds another value, a leftover of a crash), read
           the table and write what ``informed`` builds from it.
        """
        steps = (("insert", insert), ("fresh", fresh), ("replace", replace))
        for step, build in steps:
            if build is None:
                continue
            try:
                self.run(build())
            except NftError as err:
                log.debug("%s %s for %s failed: %s", what, step, label, err.details)
            else:
                return
        self.run(informed(self.read()))

    def check(self, judge: Callable[[nj.TableState], list[str]], *,
              who: str = "nftables") -> list[str]:
        """What ``judge`` finds wrong in the table; a failed read is one problem."""
        try:
            state = self.read()
        except CNIError as err:
            return [f"{who}: cannot read table {self.table.family} {self.table.name}: {err}"]
        return judge(state)

    def gc(self, what: str, network: str, valid: Collection[tuple[str, str]],
           build: Callable[[nj.TableState, str, set[str]], list[nj.Cmd]]) -> list[str]:
        """Remove the attachments of ``network`` not in ``valid`` (``build`` gets the state,
        the network's tag and the labels to keep); the error met, as GC collects them."""
        keep = {AttachmentKey(network, cid, ifname).label for cid, ifname in valid}
        try:
            self.apply(lambda state: build(state, network_tag(network), keep))
        except CNIError as err:
            return [f"{what} GC of network {network!r}: {err}"]
        return []
