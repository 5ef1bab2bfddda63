"""The runtime's one error type, Docker's exit statuses, and how an error that does not stop
the runtime is said (``warn``)."""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["EXIT_CANNOT_INVOKE", "EXIT_NOT_FOUND", "EXIT_RUNTIME", "RunError", "warn"]

EXIT_RUNTIME: Final = 125  # the runtime itself failed (Docker's 125)
EXIT_CANNOT_INVOKE: Final = 126  # the command exists but cannot be executed
EXIT_NOT_FOUND: Final = 127  # the command was not found


class RunError(Exception):
    """A failure reported to the user as one line on stderr and exit status ``code``."""

    def __init__(self, msg: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code

    def __str__(self) -> str:
        return self.msg


def warn(msg: str) -> None:
    """One line on stderr for what went wrong while the runtime carries on (a cleanup step)."""
    print(f"pycni-run: {msg}", file=sys.stderr, flush=True)
