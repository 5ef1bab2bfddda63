"""`pycni network ls` with 200 networks and 1000 attachments in the results cache (issue #15's
target: under 100 ms). Printed, never asserted.

The conf dir holds 200 conflists as `network create` writes them; the cache 1000 entries in
libcni's format (5 per network, each with its conflist and a result, as a runtime leaves
them). Three figures, medians of ``-n`` runs:

- the listing in-process (``list_networks`` + the table): what the command itself costs;
- ``python -m pycni.cli network ls``, the whole command from a fresh interpreter: wall time,
  and the CPU time it used (user + system, from ``wait4``), which a busy machine inflates
  less than the wall time. Twice: with the locations as flags (``pycni.yaml`` is then not
  read), and with them in ``pycni.yaml`` (``--config``: PyYAML's import paid);
- `pycni-run network ls` through the warm runtime daemon (the `pycni-run install-client`
  executable), in a throwaway mount + network + pid namespace (root only); its CPU figure
  is the client's alone (the worker is the daemon's child, not ours);
- ``python -I -S -c pass``, the interpreter's own start, and ``python -c 'import pycni'``,
  what any command of this install pays before its own imports (site, the package), for scale.

Nothing touches the host's kernel state (`ls` reads files only; the daemon runs in its own
namespaces); everything is under a temp dir.

    .venv/bin/python -m bench.bench_network_ls [--networks 200] [--attachments 1000] [-n 20]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pycni.cni import cache
from pycni.network import report, store
from pycni.network.config import NetworkSettings
from pycni.network.manager import list_networks
from pycni.network.render import render_conflist
from pycni.network.spec import NetworkSpec, SubnetSpec

TARGET_MS = 100.0


def _spec(i: int) -> NetworkSpec:
    subnet = ipaddress.ip_network((0x0A640000 + (i << 8), 24))  # 10.100.0.0/24, ...
    return NetworkSpec(name=f"net{i:03d}", bridge=f"pycni-b{i:08x}",
                       subnets=(SubnetSpec(subnet=subnet, gateway=subnet.network_address + 1),),
                       labels=(("bench", "yes"),))


def _result(spec: NetworkSpec, j: int) -> dict[str, object]:
    ip = spec.subnets[0].subnet.network_address + 2 + j
    return {"cniVersion": "1.1.0",
            "interfaces": [{"name": spec.bridge, "mac": "02:00:00:00:00:01"},
                           {"name": f"veth{j}", "mac": "02:00:00:00:00:02"},
                           {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/n"}],
            "ips": [{"address": f"{ip}/24", "gateway": str(spec.subnets[0].gateway),
                     "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": str(spec.subnets[0].gateway)}]}


def populate(root: Path, networks: int, attachments: int) -> NetworkSettings:
    conf, cache_dir = root / "conf", root / "cache"
    (cache_dir / "results").mkdir(parents=True)
    conf.mkdir()
    specs = [_spec(i) for i in range(networks)]
    for spec in specs:
        store.write_new(str(conf), spec.name, render_conflist(spec))
    raw = {s.name: (conf / f"50-{s.name}.conflist").read_bytes() for s in specs}
    for k in range(attachments):
        spec, cid = specs[k % networks], f"{k:064x}"
        entry = cache.CachedAttachment(
            network=spec.name, container_id=cid, ifname="eth0", netns=f"/run/netns/c{k}",
            cni_args=(("K8S_POD_NAME", f"c{k}"),), config=raw[spec.name],
            result=_result(spec, k // networks))
        path = cache.entry_path(str(cache_dir), spec.name, cid, "eth0")
        Path(path).write_text(json.dumps(entry.to_dict()))  # no fsync: setup speed
    return NetworkSettings(conf_dir=str(conf), cache_dir=str(cache_dir),
                           state_dir=str(root / "state"))


def _median_ms(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


# The commands run as installed: with their bytecode written (the first run writes it).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _process_ms(argv: list[str], runs: int, env: dict[str, str] | None = None
                ) -> tuple[float, float]:
    """Median wall and CPU (user + system) milliseconds of running ``argv``."""
    walls, cpus = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env or _ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append((time.perf_counter() - start) * 1000)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, argv
        cpus.append((usage.ru_utime + usage.ru_stime) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def _cli(settings: NetworkSettings) -> list[str]:
    return [sys.executable, "-m", "pycni.cli", "network", "ls", "--conf-dir", settings.conf_dir,
            "--cache-dir", settings.cache_dir, "--state-dir", settings.state_dir]


def _config_file(root: Path, settings: NetworkSettings) -> Path:
    path = root / "pycni.yaml"
    path.write_text(f"runtime:\n  conf_dir: {settings.conf_dir}\n  cni_cache_dir: "
                    f"{settings.cache_dir}\n  state_dir: {settings.state_dir}\nnetwork: {{}}\n")
    return path


def _daemon_inside(root: Path, networks: int, runs: int) -> int:
    """In a throwaway mount + network + pid namespace: `pycni-run network ls` through the
    warm daemon, on the populated conf dir and cache; the figures to ``root/daemon.json``."""
    from bench.bench_runtime import runtime_daemon, setup_runtime

    work = root / "runtime"
    work.mkdir()
    client, env = setup_runtime(work)
    config = Path(env["PYCNI_RUN_CONFIG"])
    text = config.read_text().replace(f"conf_dir: {work / 'conf'}", f"conf_dir: {root / 'conf'}")
    config.write_text(text + f"  cni_cache_dir: {root / 'cache'}\n")
    with runtime_daemon(work, env) as sock:
        served = {**env, "PYCNI_RUN_SOCKET": sock}
        argv = [client, "network", "ls"]
        out = subprocess.run(argv, env=served, capture_output=True, text=True, check=True)
        assert len(out.stdout.splitlines()) == networks + 1, out.stdout[-500:]
        (root / "daemon.json").write_text(json.dumps(_process_ms(argv, runs, served)))
    return 0


def _through_daemon(root: Path, networks: int, runs: int) -> tuple[float, float] | str:
    if os.geteuid() != 0:
        return "skipped: needs root (namespaces)"
    here = Path(__file__).resolve().parent.parent
    argv = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--propagation",
            "private", "--", sys.executable, "-m", "bench.bench_network_ls", "--daemon-inside",
            str(root), str(networks), str(runs)]
    if subprocess.run(argv, cwd=here, check=False).returncode != 0:
        return "failed (see above)"
    wall, cpu = json.loads((root / "daemon.json").read_text())
    return float(wall), float(cpu)


def _figures(root: Path, ns: argparse.Namespace) -> list[tuple[str, tuple[float, float] | str]]:
    settings = populate(root, ns.networks, ns.attachments)
    rows = list_networks(settings)
    assert len(rows) == ns.networks
    assert sum(r.attachments for r in rows) == ns.attachments
    inproc = _median_ms(lambda: report.ls_table(list_networks(settings)), ns.runs)
    flags, config = _cli(settings), [*_cli(settings)[:5], "--config",
                                      str(_config_file(root, settings))]
    for argv in (flags, config):
        out = subprocess.run(argv, capture_output=True, text=True, check=True, env=_ENV).stdout
        assert len(out.splitlines()) == ns.networks + 1
    return [
        ("in-process (list + table)", (inproc, inproc)),
        ("pycni network ls, locations as flags", _process_ms(flags, ns.runs)),
        ("pycni network ls --config (PyYAML)", _process_ms(config, ns.runs)),
        ("pycni-run network ls (daemon; cpu: client)",
         _through_daemon(root, ns.networks, ns.runs)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--daemon-inside"]:
        return _daemon_inside(Path(args[1]), int(args[2]), int(args[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=200)
    parser.add_argument("--attachments", type=int, default=1000)
    parser.add_argument("-n", "--runs", type=int, default=20)
    ns = parser.parse_args(args)
    with tempfile.TemporaryDirectory(prefix="pycni-bench-ls-") as tmp:
        figures = _figures(Path(tmp), ns)
        bare = _process_ms([sys.executable, "-I", "-S", "-c", "pass"], ns.runs)
        floor = _process_ms([sys.executable, "-c", "import pycni"], ns.runs)
    print(f"network ls, {ns.networks} networks, {ns.attachments} attachments, "
          f"median of {ns.runs} (ms; load average {os.getloadavg()[0]:.1f})")
    print(f"{'':40}{'wall':>8}{'cpu':>8}{'target':>8}{'wall/target':>13}")
    for label, figure in figures:
        if isinstance(figure, str):
            print(f"{label:40}  {figure}")
            continue
        wall, cpu = figure
        print(f"{label:40}{wall:8.1f}{cpu:8.1f}{TARGET_MS:8.0f}{wall / TARGET_MS:12.2f}x")
    for label, (wall, cpu) in (("python -I -S -c pass (for scale)", bare),
                               ("python -c 'import pycni' (for scale)", floor)):
        print(f"{label:40}{wall:8.1f}{cpu:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
