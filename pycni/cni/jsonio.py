"""JSON decoding for untrusted input: every bad document is a ``ValueError``, however deep.

``json.loads`` raises ``RecursionError`` (a ``RuntimeError``) for nesting deeper than the
interpreter's recursion limit ("[" * 100000 on stdin is a few bytes): callers that turn
``ValueError`` into a decoding failure (code 6) would let it through as a traceback and 999.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def loads(data: str | bytes) -> Any:
    """``json.loads``, with nesting too deep to decode reported as ``ValueError``."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to decode") from None
