"""The one error type of pycni, carrying the CNI spec's error code.

Every failure a plugin reports becomes a ``CNIError``; the skeleton prints it as the spec's
error document on stdout. Subclasses exist only where callers branch on them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from enum import IntEnum

__all__ = [
    "CNIError",
    "ErrorCode",
    "LinkNotFound",
    "NetNSNotFound",
    "io_failure",
]


class ErrorCode(IntEnum):
    """Error codes of the CNI spec (SPEC.md §5) plus skel's 8 and 999."""

    INCOMPATIBLE_CNI_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    INVALID_NETNS = 8
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    INTERNAL = 999


class CNIError(Exception):
    """A failure with a CNI error code, a short message and optional details."""

    def __init__(self, code: ErrorCode | int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def __repr__(self) -> str:
        return f"CNIError(code={self.code}, msg={self.msg!r}, details={self.details!r})"

    def to_dict(self, cni_version: str | None = None) -> dict[str, object]:
        """The spec's error document; ``cniVersion`` whenever the request's version is known."""
        doc: dict[str, object] = {}
        if cni_version:
            doc["cniVersion"] = cni_version
        doc["code"] = self.code
        doc["msg"] = self.msg
        if self.details:
            doc["details"] = self.details
        return doc

    def to_json(self, cni_version: str | None = None) -> str:
        return json.dumps(self.to_dict(cni_version))

    @classmethod
    def from_dict(cls, doc: object, *, fallback: str = "") -> CNIError:
        """Rebuild a plugin's error from its JSON document (runtime side)."""
        if isinstance(doc, dict) and isinstance(doc.get("code"), int):
            return cls(int(doc["code"]), str(doc.get("msg", "")), str(doc.get("details", "")))
        return cls(ErrorCode.INTERNAL, "plugin failed without a valid error document", fallback)


class NetNSNotFound(CNIError):
    """The network namespace path does not exist or is not a namespace (DEL treats it as gone)."""

    def __init__(self, path: str, details: str = "") -> None:
        # Code 3: the container's namespace is unknown, so nothing was made for it.
        super().__init__(
            ErrorCode.UNKNOWN_CONTAINER, f"network namespace {path} not found", details
        )
        self.path = path


class LinkNotFound(CNIError):
    """A network interface does not exist (DEL treats it as already gone)."""

    def __init__(self, name: str, where: str = "") -> None:
        at = f" in {where}" if where else ""
        super().__init__(ErrorCode.INTERNAL, f"link {name} not found{at}")
        self.name = name


@contextlib.contextmanager
def io_failure(action: str) -> Iterator[None]:
    """OSError inside the block becomes code 5 (I/O failure): ``cannot <action>``."""
    try:
        yield
    except OSError as err:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot {action}", str(err)) from err
