"""Helpers for tests that exec plugin executables or the `pycni` CLI inside a sandbox netns."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycni.net import netns

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"


def modules_loaded_by(code: str, *, site: bool = True) -> list[str]:
    """The modules (sorted) a fresh interpreter has loaded after running ``code`` with this
    checkout first on its path: what an import costs a process that starts cold (a plugin
    executable runs ``-I -S``: ``site=False``)."""
    probe = (f"import sys\nsys.path[:0] = [{str(REPO)!r}]\n{code}\n"
             "print(' '.join(sorted(sys.modules)))")
    flags = ["-I"] if site else ["-I", "-S"]
    out = subprocess.run([sys.executable, *flags, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.split()


# Runs an executable as its shebang would (-IS) and writes, at exit: the modules it loaded; the
# source texts it exec'd (a dataclass made outside pycni.codecache execs the source of each of
# its methods; through the cache, ``exec`` gets compiled code); whether the cyclic collector
# was on; the modules imported the usual way (searched on ``sys.path``, code from their
# ``.pyc``), not from the code file (``pycni.importcache``). To a file, not stdout as
# ``modules_loaded_by`` does: an executable's stdout is its own (a plugin's result).
_RECORDING = (
    "import atexit, builtins, gc, json, sys\n"
    "out, exe = sys.argv[1], sys.argv[2]\n"
    "sources = []\n"
    "real_exec = builtins.exec\n"
    "def counting_exec(source, *args):\n"
    "    if isinstance(source, str):\n"
    "        sources.append(source)\n"
    "    return real_exec(source, *args)\n"
    "builtins.exec = counting_exec\n"
    "def searched(module):\n"
    "    loader = getattr(getattr(module, '__spec__', None), 'loader', None)\n"
    "    return type(loader).__name__ == 'SourceFileLoader'\n"
    "def dump():\n"
    "    with open(out, 'w') as f:\n"
    "        json.dump({'modules': sorted(sys.modules), 'sources': sources,\n"
    "                   'collector': gc.isenabled(),\n"
    "                   'searched': sorted(n for n, m in list(sys.modules.items())\n"
    "                                      if searched(m))}, f)\n"
    "atexit.register(dump)\n"
    "sys.argv = sys.argv[2:]\n"
    "real_exec(compile(open(exe).read(), exe, 'exec'), {'__name__': '__main__'})\n"
)


def recording_argv(out: Path, executable: str, *args: str) -> list[str]:
    """The argv that runs ``executable ARGS`` recording into ``out`` (``recorded``)."""
    return [sys.executable, "-IS", "-c", _RECORDING, str(out), executable, *args]


@dataclass(frozen=True)
class Recording:
    """What a ``recording_argv`` run loaded, exec'd from source, whether it collected, and
    which modules it searched for and read as usual."""

    modules: set[str]
    sources: list[str]
    collector: bool
    searched: set[str]  # imported the usual way, not from pycni's code file


def recorded(out: Path) -> Recording:
    """What a ``recording_argv`` run wrote at its exit."""
    doc = json.loads(out.read_text())
    return Recording(set(doc["modules"]), list(doc["sources"]), bool(doc["collector"]),
                     set(doc["searched"]))


# Host directories a test session or a benchmark may make: the bridge plugin's flocks
# (``pycni.lockfile.LOCK_DIR``, in the host's /run/pycni) and the mount points of the runtime
# sandbox's tmpfs (``runtime_support``), made on the host's file system before the sandbox
# hides them. Deepest first.
HOST_DIRS = ("/run/pycni/locks", "/run/pycni", "/run/netns", "/var/lib/cni", "/var/lib/pycni")


@contextlib.contextmanager
def host_left_as_found() -> Iterator[None]:
    """Every sandbox names its bridge anew, so each run would leave dozens of lock files behind,
    and the runtime sandbox leaves its empty mount points. Around a whole test session or
    benchmark, when no plugin or sandbox runs any more at its end: remove the lock files, and
    the directories, made meanwhile (a directory only if it is empty)."""
    from pycni.lockfile import LOCK_DIR

    assert LOCK_DIR in HOST_DIRS
    existed = {d: os.path.isdir(d) for d in HOST_DIRS}
    locks_before = set(os.listdir(LOCK_DIR)) if existed[LOCK_DIR] else set()
    try:
        yield
    finally:
        if os.path.isdir(LOCK_DIR):
            for name in set(os.listdir(LOCK_DIR)) - locks_before:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(LOCK_DIR, name))
        for directory in HOST_DIRS:
            if not existed[directory]:
                with contextlib.suppress(OSError):
                    os.rmdir(directory)


@dataclass(frozen=True)
class PluginRun:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def documents(self) -> list[Any]:
        """Every JSON document on stdout (the protocol allows exactly one)."""
        decoder = json.JSONDecoder()
        text, pos, docs = self.stdout.strip(), 0, []
        while pos < len(text):
            doc, end = decoder.raw_decode(text, pos)
            docs.append(doc)
            pos = end
            while pos < len(text) and text[pos].isspace():
                pos += 1
        return docs


def _run(
    argv: list[str],
    *,
    stdin: bytes | None,
    env: Mapping[str, str],
    run_in: str | None,
    timeout: float,
) -> PluginRun:
    """Run ``argv`` from inside netns ``run_in`` (the child inherits the thread's netns)."""
    with netns.enter(run_in) if run_in else contextlib.nullcontext():
        proc = subprocess.run(
            argv, input=stdin, env=env, capture_output=True, timeout=timeout, check=False
        )
    return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


# What keeps a test's plugin executables and pycni-run from starting servers (issue #18):
# tests/conftest.py puts it in os.environ; environments built from scratch add it.
AUTOSTART_OFF = {"PYCNI_AUTOSTART": "0", "PYCNI_IDLE_TIMEOUT": "30"}

# How the executables reach the plugin code (tests/conftest.py's `plugin_mode` sets these):
# forwarded into the otherwise minimal environment exec_plugin builds.
PLUGIN_MODE_ENV = ("PYCNI_SOCKET", "PYCNI_NO_SERVER", "PYCNI_AUTOSTART", "PYCNI_IDLE_TIMEOUT")


def _plugin_mode_env() -> dict[str, str]:
    return {k: os.environ[k] for k in PLUGIN_MODE_ENV if k in os.environ}


def exec_plugin(
    binary: str | Path,
    *,
    command: str,
    config: Mapping[str, Any] | bytes | None,
    env: Mapping[str, str] | None = None,
    run_in: str | None = None,
    timeout: float = 30.0,
) -> PluginRun:
    """Exec a plugin as a runtime would, from inside ``run_in`` (the sandbox host netns)."""
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
                **_plugin_mode_env(), **(env or {})}
    stdin = config if isinstance(config, bytes) else json.dumps(config or {}).encode()
    return _run([str(binary)], stdin=stdin, env=full_env, run_in=run_in, timeout=timeout)


def run_cli(
    args: Sequence[str],
    *,
    run_in: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> PluginRun:
    """Run ``pycni ARGS`` (the console script's module) from inside ``run_in``."""
    argv = [sys.executable, "-m", "pycni.cli", *args]
    return _run(argv, stdin=None, env={**os.environ, **(env or {})}, run_in=run_in, timeout=timeout)


def run_cli_in_process(
    args: Sequence[str], *, run_in: str, capsys: Any
) -> PluginRun:
    """``pycni ARGS`` through ``pycni.cli.main`` in this process, from inside ``run_in`` (what
    ``run_cli`` runs, without an interpreter's start-up); ``capsys`` is pytest's fixture."""
    from pycni import cli

    capsys.readouterr()
    with netns.enter(run_in):
        code = cli.main(list(args))
    out, err = capsys.readouterr()
    return PluginRun(code, out, err)


# ---------------------------------------------------------------------------------------------
# What containerd's CRI hands a plugin: go-cni's capability structs in libcni's stdin.


class GoStruct(dict[str, Any]):
    """A Go struct's fields in declaration order: ``json.Marshal`` keeps that order, and the
    field names as they are when the struct has no json tags (go-cni's have none)."""


def go_cni_port_mapping(host_port: int, container_port: int, protocol: str = "tcp",
                        host_ip: str = "") -> GoStruct:
    """go-cni's ``PortMapping``, as containerd's CRI fills it from a pod's hostPort."""
    return GoStruct(HostPort=host_port, ContainerPort=container_port, Protocol=protocol,
                    HostIP=host_ip)


def go_cni_bandwidth(*, ingress_rate: int = 0, egress_rate: int = 0) -> GoStruct:
    """go-cni's ``BandWidth`` as containerd's CRI fills it from the kubernetes.io/ingress-
    and egress-bandwidth annotations: a burst of MaxUint32 bits for a rate that is set."""
    burst = 2**32 - 1
    return GoStruct(IngressRate=ingress_rate, IngressBurst=burst if ingress_rate else 0,
                    EgressRate=egress_rate, EgressBurst=burst if egress_rate else 0)


def go_cni_ip_range(subnet: str, *, range_start: str = "", range_end: str = "",
                    gateway: str = "") -> GoStruct:
    """go-cni's ``IPRanges`` (one range of the ipRanges capability)."""
    return GoStruct(Subnet=subnet, RangeStart=range_start, RangeEnd=range_end, Gateway=gateway)


def go_json(value: Any) -> str:
    """``value`` as Go's ``json.Marshal`` renders it: compact, a map's keys sorted, a
    ``GoStruct``'s fields in their order."""

    def ordered(item: Any) -> Any:
        if isinstance(item, GoStruct):
            return {key: ordered(v) for key, v in item.items()}
        if isinstance(item, dict):
            return {key: ordered(item[key]) for key in sorted(item)}
        if isinstance(item, list):
            return [ordered(v) for v in item]
        return item

    return json.dumps(ordered(value), separators=(",", ":"), ensure_ascii=False)


def libcni_stdin(
    plugin: Mapping[str, Any],
    *,
    name: str,
    cni_version: str,
    capability_args: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None = None,
) -> bytes:
    """The exact bytes libcni 1.1 (containerd 1.6's go-cni) writes to ``plugin``'s stdin: the
    conflist entry re-marshalled with ``name``, ``cniVersion``, ``prevResult`` and a
    ``runtimeConfig`` of the capabilities it declares (``buildOneConfig``/``InjectConf``)."""
    doc = {**plugin, "name": name, "cniVersion": cni_version}
    if prev_result is not None:
        doc["prevResult"] = prev_result
    declared = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in capability_args.items() if declared.get(k)}
    if runtime:
        doc["runtimeConfig"] = runtime
    return go_json(doc).encode()


def netfilter_sockets(ns: str) -> int:
    """Open NETLINK_NETFILTER sockets of processes in ``ns`` (libnftables' contexts); the
    kernel's own (port 0) is not counted."""
    with netns.enter(ns):
        lines = Path("/proc/thread-self/net/netlink").read_text().splitlines()[1:]
    fields = (line.split() for line in lines)
    return sum(1 for f in fields if f[1] == "12" and f[2] != "0")


def stat_field(stat_line: str, field: int) -> int:
    """Field ``field`` (numbered from 1, as in proc(5)) of a /proc/PID/stat line; the fields
    are counted after the command name, which may hold spaces and parentheses."""
    return int(stat_line.rsplit(")", 1)[1].split()[field - 3])


def policy_in(stat_line: str) -> int:
    """The scheduling policy in a /proc/PID/stat line (field 41; 0 = SCHED_OTHER)."""
    return stat_field(stat_line, 41)


def sched_policy(pid: int) -> int:
    """``pid``'s scheduling policy (``policy_in`` its /proc/PID/stat)."""
    return policy_in(Path(f"/proc/{pid}/stat").read_text())


def private_share(pid: int) -> float:
    """The share of ``pid``'s resident memory that is its own (a fork's pages it copied)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[key] = int(rest.split()[0])
    return (fields["Private_Dirty"] + fields.get("Private_Clean", 0)) / fields["Rss"]
