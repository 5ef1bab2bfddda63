"""Parallel plugin processes on one network: the flock makes every address distinct."""

from __future__ import annotations

import multiprocessing as mp
from ipaddress import ip_address
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from pycni.ipam import hostlocal
from pycni.ipam.config import parse_ipam_config

NET = "racenet"
WORKERS = 20


def _ipam(data_dir: str) -> dict[str, object]:
    return {"ranges": [[{"subnet": "10.7.0.0/24"}], [{"subnet": "fd07::/64"}]], "dataDir": data_dir}


def _worker(data_dir: str, n: int, start: Barrier, out: Queue[tuple[int, list[str] | str]]) -> None:
    """One plugin invocation: parse the config and allocate, as the executable would."""
    conf = parse_ipam_config(_ipam(data_dir))
    start.wait()  # all processes hit the lock together
    try:
        allocs = hostlocal.allocate(conf, network=NET, container_id=f"c{n}", ifname="eth0")
        out.put((n, [a.address for a in allocs]))
    except Exception as err:  # reported to the parent, which fails the test with it
        out.put((n, repr(err)))


def _run(data_dir: str) -> dict[int, list[str] | str]:
    # spawn, not fork: no inherited locks or threads from pytest, like separate executables.
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    out: Queue[tuple[int, list[str] | str]] = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(data_dir, n, start, out)) for n in range(WORKERS)]
    for proc in procs:
        proc.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return results


def test_parallel_allocations_get_distinct_addresses(tmp_path: Path) -> None:
    results = _run(str(tmp_path))
    errors = {n: r for n, r in results.items() if isinstance(r, str)}
    assert errors == {}
    addresses = [addr for r in results.values() for addr in r]
    assert len(addresses) == len(set(addresses)) == 2 * WORKERS
    net = tmp_path / NET
    files = {p.name: p.read_bytes() for p in net.iterdir() if p.name[0] in "1f"}
    assert len(files) == 2 * WORKERS
    for n, r in results.items():
        for addr in r:
            assert files[str(ip_address(addr.split("/")[0]))] == f"c{n}\r\neth0".encode()
    # Sequential round-robin order overall: exactly the first 20 addresses of each set.
    v4 = sorted(int(ip_address(a.split("/")[0])) for r in results.values() for a in r[:1])
    assert v4 == [int(ip_address("10.7.0.2")) + i for i in range(WORKERS)]

    conf = parse_ipam_config(_ipam(str(tmp_path)))
    for n in range(WORKERS):
        hostlocal.release(conf, network=NET, container_id=f"c{n}", ifname="eth0")
    assert sorted(p.name for p in net.iterdir() if p.name[0] in "1f") == []
