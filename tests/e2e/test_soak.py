"""A small soak (bench/bench_soak.py at 100 ops): after random concurrent ADD/DEL/CHECK from
8 workers on one network, allocations equal the live attachments, no IP is held twice and no
rule, link, cache entry or reservation is orphaned; after deleting everything, nothing is left.
Runs in-process and through the fork server (plugin_mode)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.bench_soak import soak
from tests.e2e.bridge_support import Sandbox


def test_soak_100_ops_8_workers(sandbox: Sandbox, tmp_path: Path, plugin_mode: str) -> None:
    hostports = tmp_path / "hostports"
    hostports.mkdir()
    env = {k: os.environ.get(k, "") for k in ("PYCNI_SOCKET", "PYCNI_NO_SERVER")}
    report = soak(sandbox, hostports, ops=100, workers=8, seed=7, mode=plugin_mode, env=env)
    assert report.failures == []
    assert report.leaks == []
    assert report.leaks_after_cleanup == []
    assert sum(report.counts.values()) == 100
