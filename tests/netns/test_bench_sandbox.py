"""The benchmarks' harness (``bench.sandbox``): what it calls "parallel" runs at once.

Its parallel calls once handed each process its config in turn, waiting for the one before to
exit: twenty "parallel" ADDs ran one after the other once started, the reference's and ours
alike, and the ratios in the README came from that."""

from __future__ import annotations

from pathlib import Path

from bench.sandbox import Variant, open_sandbox

_CALLS = 6
_PAUSE = 0.5  # each call's own time, after it has read all of its stdin


def test_parallel_calls_run_at_the_same_time(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = bin_dir / "bridge"
    plugin.write_text(f"#!/bin/sh\ncat >/dev/null\nsleep {_PAUSE}\necho '{{}}'\n")
    plugin.chmod(0o755)
    with open_sandbox("harness") as box:
        elapsed_ms = box.call_parallel(Variant(label="sleepy", bin_dir=bin_dir), "ADD",
                                       [f"c{i}" for i in range(_CALLS)], b'{"cniVersion": "1.0.0"}')
    assert elapsed_ms < _CALLS * _PAUSE * 1000 / 2  # one after the other: >= 3000 ms
