"""A throwaway sandbox for pycni-run: its own mount, network and pid namespaces.

The sandbox's PID 1 (a small Python reaper) mounts tmpfs over every directory the runtime
writes under /run and /var/lib, brings its lo up and waits; each command runs inside it
through ``nsenter``. Nothing touches the root network namespace or the host's mounts; when
the sandbox ends, the kernel kills everything left in its pid namespace and drops its mounts
and network namespace. cgroups are global, so ``close`` also sweeps the test's cgroup parent.

``nested=True`` adds a pid namespace inside it that keeps the sandbox's /proc (``unshare
--pid --fork`` without ``--mount-proc``, a second reaper as its PID 1), and every command runs
in there: a pid of the runtime turned into a ``/proc`` path then names a process of the
sandbox (the stand-in host), never one of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni_run.standby import PREFIX as STANDBY_PREFIX

from pycni.install import install

# Their mount points are made on the host; the root conftest removes those a session made.
TMPFS_DIRS = ("/run/netns", "/run/pycni", "/var/lib/cni", "/var/lib/pycni")
CGROUP_CONTROLLERS = ("memory", "cpu", "pids", "devices")
WAIT = 20.0  # for what comes "soon" after a command: never this long, even on a slow VM


def until(what: str, check: Any, timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value

_INIT = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    for d in sys.argv[1:]:
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.1)
    """
)


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (a process this test started), children first."""
    kids = _children(pid)
    return kids + [d for k in kids for d in descendants(k)]


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


@dataclass
class RuntimeSandbox:
    workdir: Path
    cni_bin: Path
    image_store: Path
    cgroup_parent: str
    proc: subprocess.Popen[str] | None = None
    init_pid: int = 0  # the sandbox's PID 1, as the machine sees it
    inner: subprocess.Popen[str] | None = None  # nested: the inner pid namespace's reaper
    runtime_pid: int = 0  # the PID 1 of the pid namespace commands run in, as the machine sees it
    daemon: subprocess.Popen[bytes] | None = None
    daemon_socket: str = ""
    daemon_log: Path | None = None
    client: Path | None = None
    conf_dir: Path = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.conf_dir = self.workdir / "conf"
        install(bin_dir=str(self.workdir / "unused-bin"), conf_dir=str(self.conf_dir))
        shutil.rmtree(self.workdir / "unused-bin")
        self.config = self.workdir / "pycni.yaml"
        self.config.write_text(
            "runtime:\n"
            f"  image_store: {self.image_store}\n"
            f"  cni_path: [{self.cni_bin}]\n"
            f"  conf_dir: {self.conf_dir}\n"
            f"  cgroup_parent: {self.cgroup_parent}\n"
            "  stop_timeout: 3\n"
        )

    def start(self, *, nested: bool = False) -> None:
        argv = [
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-c",
            _INIT,
            *TMPFS_DIRS,
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self.init_pid = self.runtime_pid = _children(self.proc.pid)[0]
        if nested:
            self._start_inner()

    def _start_inner(self) -> None:
        """A pid namespace in the sandbox, its /proc still the sandbox's, for every command."""
        argv = self._argv(["unshare", "--pid", "--fork", "--", sys.executable, "-c", _INIT])
        self.inner = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.inner.stdout is not None
        assert self.inner.stdout.readline().strip() == "ready"
        unshare = _children(self.inner.pid)[0]  # nsenter's child, in the sandbox
        self.runtime_pid = _children(unshare)[0]

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.runtime_pid), "-m", "-n", "-p", "--", *argv]

    def _env(self) -> dict[str, str]:
        # Plugins run in-process inside the sandbox: a `pycni serve` outside it could not
        # see the sandbox's mounts (its /run/netns pins). No daemon unless started here.
        hide = ("PYCNI_SOCKET", "PYCNI_RUN_SOCKET", "PYCNI_RUN_NO_DAEMON")
        env = {k: v for k, v in os.environ.items() if k not in hide}
        env.update(PYCNI_RUN_CONFIG=str(self.config), PYCNI_NO_SERVER="1")
        if self.daemon_socket:
            env["PYCNI_RUN_SOCKET"] = self.daemon_socket
        else:
            env["PYCNI_RUN_NO_DAEMON"] = "1"
        return env

    def sh(self, *argv: str, timeout: float = 30, input: str | None = None,
           env: dict[str, str] | None = None) -> Ran:
        """Any command inside the sandbox (its mounts, netns and pid namespace); ``env``
        instead of the sandbox's usual environment."""
        env = self._env() if env is None else env
        proc = subprocess.run(
            self._argv(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            check=False,
        )
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, *argv: str, env: dict[str, str], input: str = "") -> subprocess.Popen[str]:
        """A command started inside the sandbox, left running (its caller waits for it)."""
        proc = subprocess.Popen(self._argv(argv), env=env, text=True, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(input)
        proc.stdin.close()
        proc.stdin = None  # communicate() then only reads
        return proc

    def run(self, *args: str, timeout: float = 60, input: str | None = None) -> Ran:
        """``pycni-run ARGS`` inside the sandbox (through its daemon once one was started)."""
        if self.daemon_socket:
            return self.sh(str(self.client), *args, timeout=timeout, input=input)
        return self.sh(sys.executable, "-m", "pycni_run.cli", *args, timeout=timeout, input=input)

    def start_daemon(self, socket_path: str = "") -> None:
        """`pycni-run daemon` inside the sandbox; `run` goes through it from now on."""
        from pycni_run.executable import install_client

        self.client = Path(install_client(str(self.workdir / "client")))
        socket_path = socket_path or str(self.workdir / "daemon" / "run.sock")
        self.daemon_log = self.workdir / "daemon.log"
        with self.daemon_log.open("wb") as log:
            self.daemon = subprocess.Popen(
                self._argv([sys.executable, "-m", "pycni_run", "daemon", "--socket",
                            socket_path, "--log-level", "DEBUG"]),
                stdout=log, stderr=subprocess.STDOUT, env=self._env(),
            )
        deadline = time.monotonic() + 60
        while self.sh("test", "-S", socket_path).code != 0:
            assert self.daemon.poll() is None, self.daemon_log.read_text()
            assert time.monotonic() < deadline, "pycni-run daemon did not start"
            time.sleep(0.05)
        self.daemon_socket = socket_path

    def ok(self, *args: str, timeout: float = 60) -> str:
        ran = self.run(*args, timeout=timeout)
        assert ran.code == 0, f"pycni-run {' '.join(args)} -> {ran.code}: {ran.stderr}"
        return ran.stdout

    def fetch(self, url: str) -> str:
        """The body at ``url``, fetched from the sandbox's host with busybox wget, once it
        answers (an httpd is up a moment after `run -d` returns)."""
        def body() -> str:
            got = self.sh("busybox", "wget", "-qO-", url)
            return got.stdout if got.code == 0 else ""

        return str(until(f"{url} to answer", body))

    def state(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            self.sh("cat", f"/run/pycni/containers/{name}/state.json").stdout
        )
        return doc

    def inspect(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.ok("inspect", name))
        return doc

    def ip_json(self, *args: str) -> Any:
        ran = self.sh("ip", "-j", *args)
        assert ran.code == 0, ran.stderr
        return json.loads(ran.stdout or "[]")

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            _stop(self.daemon)
            self.daemon = None
        self.daemon_socket = ""

    def cgroup_dirs(self) -> list[str]:
        return list(_cgroup_dirs(self.cgroup_parent))

    def is_standby_or_parent(self, path: str) -> bool:
        """The cgroup parent itself, or a daemon spare's standby init under it."""
        name = os.path.basename(path)
        return name == self.cgroup_parent or name.startswith(STANDBY_PREFIX)

    def close(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            names = self.run("ps", "-a", "-q", timeout=30).stdout.split()
            for name in names:
                self.run("rm", "-f", name, timeout=60)
        self.stop_daemon()
        if self.inner is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.runtime_pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.inner.wait(timeout=10)  # else it goes with the sandbox's PID 1 below
            if self.inner.stdout is not None:
                self.inner.stdout.close()
            self.inner = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.init_pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        sweep_cgroups(self.cgroup_parent)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """nsenter forks the daemon into the pid namespace: signal that child (ours), by PID."""
    if proc.poll() is None:
        with contextlib.suppress(OSError, IndexError):
            os.kill(_children(proc.pid)[0], signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError, IndexError):
            os.kill(_children(proc.pid)[0], signal.SIGKILL)
        proc.wait(timeout=10)


def _own_cgroup(controller: str) -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return path
    return "/"


def _cgroup_dirs(parent: str) -> Iterator[str]:
    for ctrl in CGROUP_CONTROLLERS:
        base = os.path.join("/sys/fs/cgroup", ctrl, _own_cgroup(ctrl).strip("/"), parent)
        if os.path.isdir(base):
            for root, dirs, _ in os.walk(base, topdown=False):
                yield from (os.path.join(root, d) for d in dirs)
            yield base


def sweep_cgroups(parent: str) -> None:
    """Remove whatever a failed test left under the test's cgroup parent (kill, then rmdir)."""
    for path in _cgroup_dirs(parent):
        for _ in range(100):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split()]
            except FileNotFoundError:  # removed meanwhile (a container's monitor)
                break
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            os.rmdir(path)


@contextlib.contextmanager
def open_sandbox(
    workdir: Path, cni_bin: Path, image_store: Path, *, nested: bool = False
) -> Iterator[RuntimeSandbox]:
    box = RuntimeSandbox(
        workdir=workdir,
        cni_bin=cni_bin,
        image_store=image_store,
        cgroup_parent=f"pycni-test-{os.getpid()}",
    )
    try:
        box.start(nested=nested)
        yield box
    finally:
        box.close()


_IMAGE_STORE: list[Path] = []


def shared_image_store(factory: Any) -> Path:
    """One image store per test session (``tmp_path_factory``): busybox is built once."""
    if not _IMAGE_STORE:
        _IMAGE_STORE.append(factory.mktemp("images"))
    return _IMAGE_STORE[0]
