"""SHA-256 hex digests without loading OpenSSL.

``hashlib``'s first import opens libcrypto (~2 ms of every plugin executable's start-up, for
the few short names and tags the plugins derive). CPython's own SHA-256 (the builtin
``_sha256`` module, which ``hashlib`` falls back to itself) gives the same digest.
"""

from __future__ import annotations

try:
    from _sha256 import sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - CPython >= 3.12 names it _sha2; other interpreters
    from hashlib import sha256

__all__ = ["sha256_hex"]


def sha256_hex(data: bytes) -> str:
    return str(sha256(data).hexdigest())
