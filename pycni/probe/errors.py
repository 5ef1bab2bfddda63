"""The one error the probe raises for things a user got wrong (a bad target or --to)."""

from __future__ import annotations

__all__ = ["ProbeError"]


class ProbeError(Exception):
    """A target that cannot be resolved, a destination that cannot be parsed."""
