"""Plugin latency side by side: the reference bridge+host-local, pycni as a user gets it
(autostart: the first call starts `pycni serve`, the calls after it go through it), and pycni
with no server at all (in-process), all in one run, inside throwaway namespaces.

    python -m bench.bench_plugins [--quick] [-n N] [--scale N] [--boots N]

The whole run happens in a system of its own (mount, network and pid namespaces, its own
/proc: ``bench.sandbox.run_in_own_system``), where servers start on demand as on a host, on
private sockets; each variant gets its own sandbox host netns, bridge and IPAM data dir.
Plugins are exec'd directly with the CNI env, as a runtime does: no CLI start-up is measured.
Container netns creation and removal happen outside the timed region. "First ADD after a
boot": a fresh host netns with no bridge, and for pycni no server either (the call starts it).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from bench.ratios import per_round
from bench.sandbox import (
    REFERENCE_BIN,
    Sandbox,
    Variant,
    bridge_conf,
    open_sandbox,
    run_in_own_system,
    stop_started_server,
    wait_listening,
)

__all__ = ["main"]

PARALLEL = 20
REFERENCE, DEFAULT, IN_PROCESS = "reference", "default", "in-process"
FLOOR = "floor"
# The floor under an in-process ADD: the interpreter and what it imports from outside pycni
# (the standard library's share, pyroute2's message classes and request filters, libnftables'
# ctypes), in a process made one-shot as the executable makes it (``pycni.oneshot``'s
# ``prepare`` and ``finish``: what they do is the executable's cost, not pycni's call).
FLOOR_IMPORTS = (
    "import sys; sys.path[:0] = {path!r}; "
    "from pycni import oneshot; oneshot.prepare(one_call=True); "
    "import typing, dataclasses, json, traceback, logging, socket, ipaddress, ctypes, fcntl; "
    "import pyroute2.netlink.rtnl.ifinfmsg, pyroute2.netlink.rtnl.ifaddrmsg; "
    "import pyroute2.netlink.rtnl.rtmsg, pyroute2.requests.link, pyroute2.requests.address; "
    "import pyroute2.requests.route, pyroute2.netlink.exceptions; oneshot.finish(0)"
)


@dataclass
class Lane:
    """One variant in its own sandbox host, with its own bridge and IPAM data dir."""

    variant: Variant
    box: Sandbox
    conf: bytes


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p90(xs: Sequence[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else float("nan")


def _variants(work: Path) -> list[Variant]:
    from pycni.install import install

    bin_dir = work / "bin"
    install(bin_dir=str(bin_dir), conf_dir=None)
    return [
        Variant(label=REFERENCE, bin_dir=REFERENCE_BIN),
        # What a user gets: autostart as pycni.yaml ships it, on a socket of this run's.
        Variant(label=DEFAULT, bin_dir=bin_dir, env={"PYCNI_SOCKET": str(work / "srv" / "s")}),
        Variant(label=IN_PROCESS, bin_dir=bin_dir, env={"PYCNI_NO_SERVER": "1"}),
    ]


def _socket(variant: Variant) -> Path | None:
    value = variant.env.get("PYCNI_SOCKET")
    return Path(value) if value and "PYCNI_NO_SERVER" not in variant.env else None


def _lanes(variants: list[Variant], work: Path, stack: ExitStack, subnet: str) -> list[Lane]:
    lanes = []
    for i, variant in enumerate(variants):
        box = stack.enter_context(open_sandbox(variant.label))
        data = work / f"ipam-{i}-{time.monotonic_ns()}"
        lanes.append(Lane(variant, box, bridge_conf(bridge=f"bb{i}{work.name[-4:]}"[:15],
                                                    subnet=subnet, data_dir=data)))
    return lanes


def _add_del(lane: Lane, cid: str, cpu: dict[str, list[float]] | None = None
             ) -> tuple[float, float]:
    """Wall ms of an ADD and a DEL; with ``cpu``, also the CPU ms of the processes each ran
    (the executable and what it ran: all of the call for the reference and in-process, the
    launcher alone through a server), which other jobs on the machine do not inflate as much."""
    walls = []
    for command in ("ADD", "DEL"):
        before = _children_cpu()
        walls.append(lane.box.call(lane.variant, command, cid, lane.conf))
        if cpu is not None:
            cpu.setdefault(f"{lane.variant.label} {command}", []).append(_children_cpu() - before)
    lane.box.drop_container(cid)
    return walls[0], walls[1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _warm(lanes: list[Lane]) -> None:
    """One ADD and DEL per lane, not timed: the bridge and firewall tables exist from here on,
    and the server the default lane's first call started listens."""
    for lane in lanes:
        _add_del(lane, "warm")
        sock = _socket(lane.variant)
        if sock is not None:
            wait_listening(sock)


def bench_sequential(lanes: list[Lane], n: int, cpu: dict[str, list[float]]
                     ) -> dict[str, tuple[list[float], list[float]]]:
    """Interleaved across variants (and the in-process floor), so drift on the machine hits
    them all alike; CPU ms per call into ``cpu``."""
    times: dict[str, tuple[list[float], list[float]]] = {
        lane.variant.label: ([], []) for lane in lanes}
    times[FLOOR] = ([], [])
    floor = [sys.executable, "-IS", "-c", FLOOR_IMPORTS.format(path=sys.path)]
    for i in range(n):
        for lane in lanes:
            add, delete = _add_del(lane, f"seq{i}", cpu)
            times[lane.variant.label][0].append(add)
            times[lane.variant.label][1].append(delete)
        before = _children_cpu()
        started = time.perf_counter()
        subprocess.run(floor, check=True)
        times[FLOOR][0].append((time.perf_counter() - started) * 1000)
        cpu.setdefault(FLOOR, []).append(_children_cpu() - before)
    return times


def bench_parallel(lanes: list[Lane], rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    times: dict[str, tuple[list[float], list[float]]] = {
        lane.variant.label: ([], []) for lane in lanes}
    for r in range(rounds):
        for lane in lanes:
            cids = [f"par{r}x{k}" for k in range(PARALLEL)]
            for cid in cids:
                lane.box.container(cid)
            add = lane.box.call_parallel(lane.variant, "ADD", cids, lane.conf)
            delete = lane.box.call_parallel(lane.variant, "DEL", cids, lane.conf)
            for cid in cids:
                lane.box.drop_container(cid)
            times[lane.variant.label][0].append(add)
            times[lane.variant.label][1].append(delete)
    return times


def bench_first_add(variants: list[Variant], work: Path, boots: int) -> dict[str, list[float]]:
    """The first ADD on a fresh host: no bridge, no firewall state, and for pycni no server
    (the call starts it, and runs itself in-process meanwhile). Stopped again after each."""
    times: dict[str, list[float]] = {v.label: [] for v in variants}
    for boot in range(boots):
        for i, base in enumerate(variants):
            variant = base
            if _socket(base) is not None:
                variant = replace(base, env={**base.env,
                                             "PYCNI_SOCKET": str(work / f"boot{boot}" / "s")})
            with open_sandbox(f"boot-{variant.label}") as box:
                conf = bridge_conf(bridge=f"fb{i}{boot}{work.name[-4:]}"[:15],
                                   subnet="10.79.0.0/24", data_dir=work / f"boot-ipam-{boot}-{i}")
                times[variant.label].append(box.call(variant, "ADD", "first", conf))
                sock = _socket(variant)
                if sock is not None:
                    stop_started_server(sock)
                box.call(replace(variant, env={**variant.env, "PYCNI_NO_SERVER": "1"}), "DEL",
                         "first", conf)
    return times


def bench_scale(lane: Lane, n: int, marks: Sequence[int]) -> dict[int, tuple[float, float]]:
    """ADD n containers on one bridge, then DEL them newest first; the median of the 5 calls
    ending at each mark (the mark-th container joining; the mark-th leaving)."""
    cids = [f"s{k}" for k in range(1, n + 1)]
    adds: list[float] = []
    for cid in cids:
        lane.box.container(cid)  # netns creation is outside the timed call
        adds.append(lane.box.call(lane.variant, "ADD", cid, lane.conf))
    dels: dict[int, float] = {}
    for k in range(n, 0, -1):
        dels[k] = lane.box.call(lane.variant, "DEL", cids[k - 1], lane.conf)
        lane.box.drop_container(cids[k - 1])
    out = {}
    for mark in marks:
        window = range(max(1, mark - 4), mark + 1)
        out[mark] = (median([adds[k - 1] for k in window]), median([dels[k] for k in window]))
    return out


def bench_version(variants: list[Variant], n: int) -> dict[str, float]:
    """Start-up alone: a VERSION call (podman sends one per plugin before every ADD and DEL)."""
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}
    cases: dict[str, Callable[[], object]] = {
        "python -IS -c pass": lambda: subprocess.run([sys.executable, "-IS", "-c", "pass"],
                                                     check=True),
    }
    for v in variants:
        cases[v.label] = (lambda v=v: subprocess.run(  # type: ignore[misc]
            [str(v.bin_dir / "bridge")], input=b'{"cniVersion":"1.0.0"}', env={**env, **v.env},
            stdout=subprocess.DEVNULL, check=True))
    out: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(n):
        for label, fn in cases.items():
            started = time.perf_counter()
            fn()
            out[label].append((time.perf_counter() - started) * 1000)
    return {k: median(v) for k, v in out.items()}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b else "  -  "


def _row(name: str, vals: dict[str, float], target: str = "") -> str:
    ref, default, inp = vals[REFERENCE], vals[DEFAULT], vals[IN_PROCESS]
    return (f"{name:<28}{ref:>10.1f}{default:>10.1f}{inp:>12.1f}   {_ratio(default, ref):>8}"
            f" {_ratio(inp, ref):>8}   {target}")


def _per_round_row(rounds: dict[str, list[float]]) -> str:
    """Each variant against the reference, the median of each round's own ratio
    (``bench.ratios``): the drift between rounds cancels out of it."""
    ref = rounds[REFERENCE]
    cells = [f"{per_round(rounds[label], ref):7.2f}x" for label in (DEFAULT, IN_PROCESS)]
    return f"{'  per-round ratio':<28}{'':>10}{'':>10}{'':>12}   {cells[0]} {cells[1]}"


def report(seq: dict[str, tuple[list[float], list[float]]],
           par: dict[str, tuple[list[float], list[float]]], version: dict[str, float],
           first: dict[str, list[float]]) -> None:
    print(f"\n{'ms':<28}{'reference':>10}{'default':>10}{'in-process':>12}   "
          f"{'def/ref':>8} {'inp/ref':>8}   targets")
    print(_row("ADD median", {k: median(v[0]) for k, v in seq.items()},
               "default <= 0.6x, in-process <= 3x"))
    print(_per_round_row({k: v[0] for k, v in seq.items()}))
    floor, ref_add = median(seq[FLOOR][0]), median(seq[REFERENCE][0])
    print(f"{'  in-process floor':<28}{'':>10}{'':>10}{floor:>12.1f}   {'':>8} "
          f"{_ratio(floor, ref_add):>8}   the interpreter + the modules an ADD needs from "
          "outside pycni")
    print(_row("ADD p90", {k: p90(v[0]) for k, v in seq.items()}))
    print(_row("DEL median", {k: median(v[1]) for k, v in seq.items()}, "default <= 0.3x"))
    print(_per_round_row({k: v[1] for k, v in seq.items()}))
    print(_row("DEL p90", {k: p90(v[1]) for k, v in seq.items()}))
    print(_row(f"{PARALLEL} parallel ADDs (wall)", {k: median(v[0]) for k, v in par.items()},
               "default <= 0.7x"))
    print(_row(f"{PARALLEL} parallel DELs (wall)", {k: median(v[1]) for k, v in par.items()},
               "default <= 0.35x"))
    if first:
        print(_row("first ADD after a boot", {k: median(v) for k, v in first.items()},
                   "default (it starts the server) <= 3x"))
        print(_per_round_row(first))
    bare = version["python -IS -c pass"]
    print(_row("VERSION (start-up)", version,
               f"bare python -IS: {bare:.1f} ms; in-process {version[IN_PROCESS] / bare:.2f}x "
               "of it (target <= 1.2x)"))


def report_cpu(cpu: dict[str, list[float]]) -> None:
    ref_add, ref_del = median(cpu[f"{REFERENCE} ADD"]), median(cpu[f"{REFERENCE} DEL"])
    inp_add, inp_del = median(cpu[f"{IN_PROCESS} ADD"]), median(cpu[f"{IN_PROCESS} DEL"])
    floor = median(cpu[FLOOR])
    print(f"\nCPU ms of the processes a call runs (median; the reference's iptables and "
          f"pycni's in-process call whole):\n"
          f"  ADD: reference {ref_add:.1f}, in-process {inp_add:.1f} ({_ratio(inp_add, ref_add)}),"
          f" its floor {floor:.1f} ({_ratio(floor, ref_add)})\n"
          f"  DEL: reference {ref_del:.1f}, in-process {inp_del:.1f} ({_ratio(inp_del, ref_del)})\n"
          f"  through the server, the launcher alone: ADD "
          f"{median(cpu[f'{DEFAULT} ADD']):.1f}, DEL {median(cpu[f'{DEFAULT} DEL']):.1f}")


def report_scale(results: dict[str, dict[int, tuple[float, float]]]) -> None:
    print("\nscale: one bridge, latency of the k-th container (median of k-4..k), ms")
    for label, marks in results.items():
        cells = "  ".join(f"#{m}: ADD {a:6.1f} DEL {d:6.1f}" for m, (a, d) in marks.items())
        first, last = min(marks), max(marks)
        growth = marks[last][0] / marks[first][0]
        print(f"  {label:<11} {cells}   ADD #{last}/#{first} = {growth:.2f}x (target <= 1.2x)")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.bench_plugins", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N (CI sanity)")
    parser.add_argument("-n", type=int, default=0, help="sequential iterations")
    parser.add_argument("--scale", type=int, default=-1, help="containers on one bridge (0: skip)")
    parser.add_argument("--rounds", type=int, default=0, help="parallel rounds (default 3)")
    parser.add_argument("--boots", type=int, default=-1, help="first-ADD rounds (default 5)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench_plugins: needs root (namespaces); skipped", file=sys.stderr)
        return 0
    ns = _parse(args)
    if not ns.inside:
        return run_in_own_system("bench.bench_plugins", [*args, "--inside"])
    n = ns.n or (5 if ns.quick else 30)
    scale = ns.scale if ns.scale >= 0 else (30 if ns.quick else 1000)
    boots = ns.boots if ns.boots >= 0 else (2 if ns.quick else 5)
    marks = [m for m in (10, 100, 1000) if m <= scale] or [scale]
    if scale and scale not in marks:
        marks.append(scale)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pycni-bench-")))
        variants = _variants(work)
        print(f"pycni plugin benchmark: bridge+host-local, isGateway+ipMasq; n={n}", flush=True)
        version = bench_version(variants, max(n, 20))
        lanes = _lanes(variants, work, stack, "10.77.0.0/24")
        _warm(lanes)
        cpu: dict[str, list[float]] = {}
        seq = bench_sequential(lanes, n, cpu)
        par = bench_parallel(lanes, ns.rounds or (1 if ns.quick else 3))
        first = bench_first_add(variants, work, boots) if boots else {}
        report(seq, par, version, first)
        report_cpu(cpu)
        if scale:
            results = {}
            for variant in variants[:2]:
                with ExitStack() as lane_stack:
                    (lane,) = _lanes([variant], work, lane_stack, "10.78.0.0/16")
                    results[variant.label] = bench_scale(lane, scale, marks)
                    print(f"  scale {variant.label}: done", flush=True)
            report_scale(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
