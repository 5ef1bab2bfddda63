"""`pycni-run network connect`/`disconnect` of a running container against one CNI ADD/DEL of
the same network's chain through the fork server, in one run (issue #15's target: each <= the
chain call). Medians printed side by side, never asserted.

- the reference: the chain of a network `pycni network create` wrote (bridge -> portmap ->
  bandwidth -> firewall -> pycni-dns -> loopback), ADD then DEL for a fresh netns, as a
  runtime runs it: a warm process (this one) execs each plugin executable, which hands its
  call to `pycni serve`
  (``PYCNI_DELEGATE_EXEC``: no in-process shortcut for our executables);
- `pycni-run network connect NET web` and `disconnect NET web` of a running container, as a
  user runs them: the `pycni-run install-client` executable through the runtime daemon, and
  (for scale) the same client falling back in-process (``PYCNI_RUN_NO_DAEMON=1``).

All of it in turns (one of each per round: this VM's speed drifts), inside a throwaway mount +
network + pid namespace with tmpfs over the runtime's directories, the fork server and the
runtime daemon on private sockets in there; the host keeps nothing.

    .venv/bin/python -m bench.bench_network_connect [-n 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RUNS = 20
NETWORK = "benchnet"
CONTAINER = "web"
RESULTS = "results.json"
ADD = "chain ADD through pycni serve"
DEL = "chain DEL through pycni serve"
CONNECT = "pycni-run network connect (daemon)"
DISCONNECT = "pycni-run network disconnect (daemon)"
CONNECT_LOCAL = "pycni-run network connect (in-process)"
DISCONNECT_LOCAL = "pycni-run network disconnect (in-process)"


def _client(client: str, env: dict[str, str], *args: str) -> Callable[[], object]:
    def run() -> None:
        subprocess.run([client, *args], env=env, check=True, stdout=subprocess.DEVNULL)

    return run


def _chain(work: Path, sock: Path) -> tuple[Callable[[str], object], Callable[[str], object]]:
    """ADD and DEL of the network's chain for a container id (its netns made on first use)."""
    from pycni.cni.invoke import Invoker, RuntimeConf
    from pycni.net import netns
    from pycni.network.store import load_named
    from pycni.plugins.runner import FORKED

    os.environ.update(PYCNI_SOCKET=str(sock), PYCNI_DELEGATE_EXEC="1")
    os.environ.pop("PYCNI_NO_SERVER", None)
    stored = load_named(str(work / "conf"), NETWORK)
    assert stored is not None
    invoker = Invoker(path=(str(work / "bin"),), cache_dir=str(work / "chain-cache"),
                      runner=FORKED)

    def runtime_conf(cid: str) -> RuntimeConf:
        path = work / "netns" / cid
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            netns.create(str(path))
        return RuntimeConf(container_id=cid, netns=str(path), ifname="eth0")

    def add(cid: str) -> None:
        invoker.add(stored.conflist, runtime_conf(cid))

    def delete(cid: str) -> None:
        invoker.delete(stored.conflist, runtime_conf(cid))
        netns.remove(str(work / "netns" / cid))

    return add, delete


def _measure(work: Path, runs: int) -> dict[str, float]:
    from bench.bench_runtime import runtime_daemon, setup_runtime
    from bench.sandbox import run_server

    client, env = setup_runtime(work)
    times: dict[str, list[float]] = {k: [] for k in (ADD, DEL, CONNECT, DISCONNECT,
                                                    CONNECT_LOCAL, DISCONNECT_LOCAL)}
    local = {**env, "PYCNI_RUN_NO_DAEMON": "1"}
    with run_server(work / "server" / "pycni.sock") as _, runtime_daemon(work, env) as rsock:
        served = {**env, "PYCNI_RUN_SOCKET": rsock}
        _client(client, served, "network", "create", "--subnet", "10.100.50.0/24", NETWORK)()
        _client(client, served, "run", "-d", "--name", CONTAINER, "busybox", "sleep", "3600")()
        add, delete = _chain(work, work / "server" / "pycni.sock")
        steps = (
            (ADD, lambda i: add(f"bench{i}")), (DEL, lambda i: delete(f"bench{i}")),
            (CONNECT, lambda _i: _client(client, served, "network", "connect", NETWORK,
                                         CONTAINER)()),
            (DISCONNECT, lambda _i: _client(client, served, "network", "disconnect", NETWORK,
                                            CONTAINER)()),
        )
        local_steps = (
            (CONNECT_LOCAL, lambda _i: _client(client, local, "network", "connect", NETWORK,
                                               CONTAINER)()),
            (DISCONNECT_LOCAL, lambda _i: _client(client, local, "network", "disconnect",
                                                  NETWORK, CONTAINER)()),
        )
        for i in range(runs + 2):  # the first two rounds warm up
            for label, step in (*steps, *(local_steps if i % 2 == 0 else ())):
                started = time.perf_counter()
                step(i)
                if i >= 2:
                    times[label].append((time.perf_counter() - started) * 1000)
        _client(client, served, "rm", "-f", CONTAINER)()
    return {label: statistics.median(t) for label, t in times.items() if t}


def _print(results: dict[str, float], runs: int) -> None:
    print(f"\nnetwork connect/disconnect of a running container vs one chain ADD/DEL through "
          f"the fork server, median of {runs} in turns (in-process: every other round) "
          f"(wall ms; load average {os.getloadavg()[0]:.1f}):")
    width = max(len(k) for k in results)
    for label, value in results.items():
        print(f"  {label.ljust(width)}  {value:8.1f}")
    for ours, reference in ((CONNECT, ADD), (DISCONNECT, DEL)):
        ratio = results[ours] / results[reference]
        verdict = "met" if ratio <= 1.0 else "NOT met"
        print(f"  {ours} / {reference} = {ratio:.2f}x (target <= 1.0x: {verdict})")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--inside"]:
        work, runs = Path(args[1]), int(args[2])
        (work / RESULTS).write_text(json.dumps(_measure(work, runs)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=RUNS)
    ns = parser.parse_args(args)
    if os.geteuid() != 0:
        print("bench_network_connect: needs root (namespaces); skipped", file=sys.stderr)
        return 0
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="pycni-bench-connect-") as tmp:
        cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc",
               "--propagation", "private", "--", sys.executable, "-m",
               "bench.bench_network_connect", "--inside", tmp, str(ns.runs)]
        code = subprocess.run(cmd, cwd=here, check=False).returncode
        if code != 0:
            return code
        _print(json.loads((Path(tmp) / RESULTS).read_text()), ns.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
