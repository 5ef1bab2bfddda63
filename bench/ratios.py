"""The ratio of two commands measured in turns, round by round.

This VM's speed drifts by a third within a minute (the reference's median went from 35 to 57
ms between runs of the same code), and a Python start slows more than a Go one when it does.
A round's commands ran moments apart, so the median of each round's own ratio lets the drift
between rounds cancel out, and never pairs one command's slow round with another's quick one.
The benchmarks print it beside the ratio of the medians, which the targets are judged on."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["per_round"]


def per_round(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The median of ``ours[i] / theirs[i]`` over the rounds ``i``."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
