"""Throwaway namespaces, plugin variants and a private fork server for the benchmarks.

Everything lives in netns pinned under a private temp dir; nothing touches the root netns,
and everything made here is removed on exit, failure included.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.net import netns

__all__ = [
    "REFERENCE_BIN",
    "Sandbox",
    "Variant",
    "bridge_conf",
    "open_sandbox",
    "run_in_own_system",
    "run_server",
    "stop_started_server",
    "wait_listening",
]

REFERENCE_BIN = Path("/usr/lib/cni")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One way of running the plugins: a bin dir and the extra env that selects the path."""

    label: str
    bin_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)


def bridge_conf(*, bridge: str, subnet: str, data_dir: Path, version: str = "1.0.0") -> bytes:
    """bridge + host-local with isGateway and ipMasq: the reference's comparable set-up."""
    doc: dict[str, Any] = {
        "cniVersion": version, "name": bridge, "type": "bridge", "bridge": bridge,
        "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                 "dataDir": str(data_dir)},
    }
    return json.dumps(doc).encode()


@dataclass
class Sandbox:
    """A sandbox host netns; containers are made and removed around the timed calls."""

    root: Path
    host: str
    containers: dict[str, str] = field(default_factory=dict)

    def container(self, cid: str) -> str:
        if cid not in self.containers:
            self.containers[cid] = netns.create(str(self.root / f"c-{cid}"))
        return self.containers[cid]

    def drop_container(self, cid: str) -> None:
        path = self.containers.pop(cid, None)
        if path:
            netns.remove(path)

    def env(self, variant: Variant, command: str, cid: str) -> dict[str, str]:
        return {"PATH": PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
                "CNI_NETNS": self.container(cid), "CNI_IFNAME": "eth0",
                "CNI_PATH": str(variant.bin_dir), **variant.env}

    def call(self, variant: Variant, command: str, cid: str, conf: bytes) -> float:
        """One plugin call like a runtime makes it; its wall time in ms (fails loudly)."""
        env = self.env(variant, command, cid)
        with netns.enter(self.host):
            started = time.perf_counter()
            proc = subprocess.run([str(variant.bin_dir / "bridge")], input=conf, env=env,
                                  capture_output=True, check=False, timeout=120)
            elapsed = (time.perf_counter() - started) * 1000
        if proc.returncode != 0:
            raise RuntimeError(f"{variant.label} {command} {cid}: {proc.stdout!r} {proc.stderr!r}")
        return elapsed

    def call_parallel(self, variant: Variant, command: str, cids: list[str], conf: bytes) -> float:
        """All calls at once; the wall time until the last one exits, in ms. Each one's stdin
        is a pipe that holds the whole config already (and its EOF): handed over one process
        at a time (``communicate(conf)`` in turn), each call would wait for the ones before
        it to exit, and the calls ran one after the other once started."""
        envs = [self.env(variant, command, cid) for cid in cids]
        stdins = [_filled_pipe(conf) for _ in envs]
        try:
            with netns.enter(self.host):
                started = time.perf_counter()
                procs = [subprocess.Popen([str(variant.bin_dir / "bridge")], stdin=stdin,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=env)
                         for env, stdin in zip(envs, stdins, strict=True)]
        finally:
            for stdin in stdins:
                os.close(stdin)
        outs = [(p, *p.communicate(timeout=120)) for p in procs]
        elapsed = (time.perf_counter() - started) * 1000
        failed = [(out, err) for p, out, err in outs if p.returncode != 0]
        if failed:
            raise RuntimeError(f"{variant.label} parallel {command}: {failed[0]!r}")
        return elapsed


def _filled_pipe(data: bytes) -> int:
    """The read end of a pipe holding ``data`` and then EOF (``data`` fits its buffer)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


@contextlib.contextmanager
def open_sandbox(name: str) -> Iterator[Sandbox]:
    root = Path(tempfile.mkdtemp(prefix=f"pycni-bench-{name}-"))
    box = Sandbox(root=root, host=netns.create(str(root / "host")))
    try:
        with netns.enter(box.host):
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield box
    finally:
        for cid in list(box.containers):
            box.drop_container(cid)
        netns.remove(box.host)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def run_server(socket_path: Path, *, timeout: float = 60.0) -> Iterator[int]:
    """`pycni serve` on a private socket; stopped by its PID."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pycni.cli", "serve", "--socket", str(socket_path),
         "--timeout", str(timeout), "--log-level", "WARNING"],
    )
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pycni serve did not start")
            time.sleep(0.02)
        yield proc.pid
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# PID 1 of the benchmark's own system: it runs the benchmark and reaps whatever is orphaned
# to it (servers started on demand, once stopped), then exits with the benchmark's status.
_REAPER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == child.pid:
        code = os.waitstatus_to_exitcode(status)
        break
sys.exit(code if code >= 0 else 128 - code)
"""


def run_in_own_system(module: str, argv: list[str]) -> int:
    """``python -m module argv`` as a process of a throwaway system of its own: mount, network
    and pid namespaces with its own /proc, where it is "the system" to pycni.autostart (as
    a runtime on a host is), so servers start on demand there. Nothing it mounts, pins or
    starts outlives it; the root network namespace is not even in its reach."""
    from tests.support import host_left_as_found

    here = Path(__file__).resolve().parent.parent
    cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--propagation",
           "private", "--", sys.executable, "-c", _REAPER, sys.executable, "-m", module, *argv]
    with host_left_as_found():  # the bridges' lock files are on the host's /run
        return subprocess.run(cmd, cwd=here, check=False).returncode


def wait_listening(socket_path: Path, timeout: float = 60.0) -> int:
    """The pid of the server started on demand at ``socket_path``, once it listens."""
    from pycni.autostart import answers

    marker = Path(f"{socket_path}.ondemand")
    deadline = time.monotonic() + timeout
    while not (answers(bytes(socket_path)) and marker.exists()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no server started at {socket_path}")
        time.sleep(0.01)
    return int(marker.read_text())


def stop_started_server(socket_path: Path) -> None:
    """SIGTERM the server started on demand at ``socket_path`` (by its pid) and wait for it."""
    pid = wait_listening(socket_path)
    with contextlib.suppress(ProcessLookupError):
        pidfd = os.pidfd_open(pid)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            select.select([pidfd], [], [], 30)
        finally:
            os.close(pidfd)
