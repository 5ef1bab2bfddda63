"""Content digests (``sha256:<hex>``), hashing while reading, and chain ids.

A layer is named three ways: its blob digest (the bytes as stored in the archive, compressed
or not), its diff id (the uncompressed tar: what the image config's ``rootfs.diff_ids`` list)
and its chain id (the diff ids of it and every layer below it, folded: what the store keys an
unpacked layer by, since a layer's directory only makes sense on top of its parents).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from pycni_run.errors import RunError

__all__ = ["Digest", "HashingReader", "Readable", "chain_ids", "parse_digest"]

ALGORITHM: Final = "sha256"
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
_CHUNK: Final = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    hex: str  # 64 lowercase hex digits of a sha256

    def __str__(self) -> str:
        return f"{ALGORITHM}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())


def parse_digest(text: object, what: str) -> Digest:
    """``sha256:<64 hex>`` (the only algorithm images use in practice); RunError otherwise."""
    if not isinstance(text, str):
        raise RunError(f"{what}: a digest must be a string, not {type(text).__name__}")
    algorithm, sep, value = text.partition(":")
    if not sep or algorithm != ALGORITHM:
        raise RunError(f"{what}: unsupported digest {text!r} (only sha256:<hex> is supported)")
    if not _HEX_RE.fullmatch(value):
        raise RunError(f"{what}: malformed digest {text!r}")
    return Digest(value)


def is_hex_digest(text: str) -> bool:
    return bool(_HEX_RE.fullmatch(text))


class HashingReader:
    """A read-only binary stream that hashes (and counts) every byte read through it."""

    def __init__(self, raw: Readable, *, limit: int | None = None, what: str = "") -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._limit = limit
        self._what = what
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            raise RunError(f"{self._what}: larger than the limit of {self._limit} bytes")
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end: the digest covers the whole stream, not what a parser needed."""
        while self.read(_CHUNK):
            pass

    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest())


def chain_ids(diff_ids: Iterable[Digest]) -> list[Digest]:
    """The OCI chain id of each layer: ``ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))``."""
    out: list[Digest] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append(Digest.of(f"{out[-1]} {diff_id}".encode()))
    return out
