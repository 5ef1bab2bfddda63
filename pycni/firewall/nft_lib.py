"""Run nftables JSON commands: libnftables in-process through ctypes, ``nft -j -f -`` if not.

One call = one ``nft_run_cmd_from_buffer`` = one netlink batch = one kernel transaction: it
all applies or nothing does. No fork/exec on the hot path (field failure #6).

A fresh context is made per call. libnftables opens its netlink socket when the context is
created, and a socket stays bound to the network namespace it was opened in; a per-call
context therefore always acts on the namespace the calling thread is in *now* (tests run the
backend under ``netns.enter``). Creating one costs about 30 µs.
"""

from __future__ import annotations

import ctypes
import functools
import json
from typing import Any, Final, Protocol

from pycni.cni.errors import CNIError, ErrorCode

__all__ = ["ExecRunner", "LibRunner", "NftError", "NftRunner", "default_runner"]

_LIBRARY: Final = "libnftables.so.1"
_OUTPUT_JSON: Final = 1 << 4  # NFT_CTX_OUTPUT_JSON (nftables/libnftables.h)
_INPUT_NO_DNS_JSON: Final = (1 << 0) | (1 << 1)  # NFT_CTX_INPUT_NO_DNS | NFT_CTX_INPUT_JSON
_CTX_DEFAULT: Final = 0
_EXEC_TIMEOUT: Final = 30.0

Doc = dict[str, Any]


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
            lib.nft_ctx_free(ctx)
        if rc != 0:
            raise NftError(err or f"nft_run_cmd_from_buffer returned {rc}")
        return _decode(out)


class ExecRunner:
    """One ``nft -j -f -`` per call, for hosts without libnftables.so.1."""

    kind = "nft"

    def __init__(self, binary: str | None = None) -> None:
        import shutil  # with bz2 and lzma: only where libnftables is missing

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
