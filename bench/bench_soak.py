"""Soak: random ADD/DEL/CHECK from several workers on one network, then count the leaks.

    python -m bench.bench_soak [--ops 1000] [--workers 8] [--seed 1] [--mode inprocess|server|both]

Each worker owns its own containers (a runtime never runs two verbs on one container at
once) and picks, at random, a verb that is valid for the container's state: ADD when it is
down (or a DEL of nothing, which must succeed), DEL or CHECK when it is up. The network is
the default chain (bridge+host-local -> portmap -> bandwidth -> firewall), every container
publishing its own host port. Afterwards: the IPAM allocations are exactly the live
attachments, no IP is held twice (on disk or in two containers), and no nft element, veth,
ifb, cache entry or host-port reservation is left beyond the live attachments; then
everything is deleted and the host must be empty. Prints ops, failures, leaks and time;
asserts nothing (``tests/e2e/test_soak.py`` does, on a smaller run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pycni.cni.conf import find_conflist
from pycni.cni.errors import CNIError
from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.install import install
from pycni.net import netns
from pycni.plugins.runner import FORKED
from tests.e2e.bridge_support import Sandbox, ip_json
from tests.e2e.crash_support import NETWORK, capability_args, full_conflist, host_state, leaks

__all__ = ["SoakReport", "open_soak_sandbox", "soak"]

CONTAINERS_PER_WORKER = 3
BASE_PORT = 20000


@dataclass
class SoakReport:
    mode: str
    ops: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    leaks_after_cleanup: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        verbs = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return (
            f"soak[{self.mode}]: ops={self.ops} ({verbs}) failures={len(self.failures)} "
            f"leaks={len(self.leaks)} leaks_after_cleanup={len(self.leaks_after_cleanup)} "
            f"time={self.seconds:.1f}s ({self.ops / max(self.seconds, 1e-9):.1f} ops/s)"
        )


@dataclass
class _Container:
    cid: str
    port: int
    up: bool = False


class _Worker:
    def __init__(
        self, sandbox: Sandbox, invoker: Invoker, containers: list[_Container], seed: int
    ) -> None:
        self.sandbox, self.invoker, self.containers = sandbox, invoker, containers
        self.rng = random.Random(seed)
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []

    def rt(self, c: _Container) -> RuntimeConf:
        return RuntimeConf(
            container_id=c.cid,
            netns=self.sandbox.containers[c.cid],
            ifname="eth0",
            capability_args=capability_args(c.port),
        )

    def step(self) -> None:
        c = self.rng.choice(self.containers)
        if c.up:
            verb = self.rng.choices(("DEL", "CHECK"), weights=(4, 6))[0]
        else:
            verb = self.rng.choices(("ADD", "DEL"), weights=(8, 2))[0]
        conf = find_conflist(str(self.sandbox.conf_dir), NETWORK)
        self.counts[verb] = self.counts.get(verb, 0) + 1
        try:
            with netns.enter(self.sandbox.host_ns):
                if verb == "ADD":
                    self.invoker.add(conf, self.rt(c))
                elif verb == "DEL":
                    self.invoker.delete(conf, self.rt(c))
                else:
                    self.invoker.check(conf, self.rt(c))
        except CNIError as err:
            self.failures.append(f"{verb} {c.cid} (up={c.up}): {err}")
            if verb == "ADD":
                return  # the Invoker rolled it back
        if verb == "ADD":
            c.up = True
        elif verb == "DEL":
            c.up = False


def _duplicates(sandbox: Sandbox, alive: list[str]) -> list[str]:
    """IPs held twice: across containers (read from their netns) and on disk."""
    seen: dict[str, str] = {}
    problems: list[str] = []
    for cid in alive:
        for link in ip_json(sandbox.containers[cid], "addr", "show", "eth0"):
            for addr in link.get("addr_info", []):
                if addr.get("family") != "inet":
                    continue
                ip = addr["local"]
                if ip in seen:
                    problems.append(f"duplicate IP {ip}: {seen[ip]} and {cid}")
                seen[ip] = cid
    return problems


def _allocation_problems(sandbox: Sandbox, hostports: Path, alive: list[str]) -> list[str]:
    state = host_state(sandbox, hostports)
    owners = sorted(owner.split("\r\n")[0] for owner in state.ips.values())
    if owners != sorted(alive):
        return [f"allocations {owners} != live attachments {sorted(alive)}"]
    return []


def soak(
    sandbox: Sandbox,
    hostports: Path,
    *,
    ops: int,
    workers: int,
    seed: int,
    mode: str,
    env: Mapping[str, str],
) -> SoakReport:
    sandbox.write_conf(full_conflist(sandbox, hostports))
    invoker = Invoker(
        path=(str(sandbox.bin_dir),),
        cache_dir=str(sandbox.cache_dir),
        timeout=120,
        base_env={**os.environ, **env},
        log=lambda msg: None,
        runner=FORKED,
    )
    pools = [
        [
            _Container(f"soak{w}-{k}", BASE_PORT + w * CONTAINERS_PER_WORKER + k)
            for k in range(CONTAINERS_PER_WORKER)
        ]
        for w in range(workers)
    ]
    for pool in pools:  # namespaces are made up front, not from the worker threads
        for c in pool:
            sandbox.runtime_conf(c.cid)
    runners = [_Worker(sandbox, invoker, pool, seed * 1000 + w) for w, pool in enumerate(pools)]
    budget = iter(range(ops))
    lock = threading.Lock()

    def run(worker: _Worker) -> None:
        while True:
            with lock:
                if next(budget, None) is None:
                    return
            worker.step()

    report = SoakReport(mode=mode, ops=ops)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool_exec:
        list(pool_exec.map(run, runners))
    report.seconds = time.monotonic() - started
    for w in runners:
        report.failures += w.failures
        for verb, n in w.counts.items():
            report.counts[verb] = report.counts.get(verb, 0) + n
    alive = [c.cid for pool in pools for c in pool if c.up]
    report.leaks = (
        leaks(sandbox, hostports, alive)
        + _duplicates(sandbox, alive)
        + _allocation_problems(sandbox, hostports, alive)
    )
    conf = find_conflist(str(sandbox.conf_dir), NETWORK)
    with netns.enter(sandbox.host_ns):
        for pool in pools:
            for c in pool:
                invoker.delete(conf, runners[0].rt(c))
    report.leaks_after_cleanup = leaks(sandbox, hostports)
    return report


@contextlib.contextmanager
def open_soak_sandbox() -> Iterator[tuple[Sandbox, Path]]:
    """A sandbox host netns, installed executables and private dirs; all removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="pycni-soak-"))
    made: list[str] = []

    def make_netns(name: str, *, lo_up: bool = True) -> str:
        path = netns.create(str(root / "ns" / name))
        made.append(path)
        if lo_up:
            from pyroute2 import IPRoute

            with netns.enter(path), IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return path

    try:
        (root / "ns").mkdir()
        dirs = {n: root / n for n in ("conf", "cache", "ipam", "bin", "hostports")}
        for d in dirs.values():
            d.mkdir()
        install(bin_dir=str(dirs["bin"]), conf_dir=None)
        sandbox = Sandbox(
            host_ns=make_netns("host"),
            conf_dir=dirs["conf"],
            cache_dir=dirs["cache"],
            data_dir=dirs["ipam"],
            bin_dir=dirs["bin"],
            make_netns=make_netns,
        )
        yield sandbox, dirs["hostports"]
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                netns.remove(path)
        shutil.rmtree(root, ignore_errors=True)


def _run(mode: str, ops: int, workers: int, seed: int) -> SoakReport:
    from bench.sandbox import run_server

    with open_soak_sandbox() as (sandbox, hostports):
        if mode == "server":
            sock = sandbox.cache_dir.parent / "pycni.sock"
            with run_server(sock):
                return soak(sandbox, hostports, ops=ops, workers=workers, seed=seed, mode=mode,
                            env={"PYCNI_SOCKET": str(sock), "PYCNI_NO_SERVER": ""})
        return soak(sandbox, hostports, ops=ops, workers=workers, seed=seed, mode=mode,
                    env={"PYCNI_NO_SERVER": "1"})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_soak")
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=("inprocess", "server", "both"), default="both")
    ns = parser.parse_args(argv)
    modes = ("inprocess", "server") if ns.mode == "both" else (ns.mode,)
    for mode in modes:
        report = _run(mode, ns.ops, ns.workers, ns.seed)
        print(report.line(), flush=True)
        for line in (report.failures + report.leaks + report.leaks_after_cleanup)[:20]:
            print(f"  {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
