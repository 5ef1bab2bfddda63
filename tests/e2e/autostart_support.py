"""Servers started on demand, observed from outside: a runtime sandbox (its own mount, net and
pid namespaces, so its callers are "the system" there) with a private socket path.

Every server a test's callers start is a process of the sandbox's pid namespace: teardown
SIGKILLs each by its PID (as the machine numbers it), and the sandbox's end takes whatever is
left. Nothing here listens on the machine's /run/pycni.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pycni_run.executable import install_client

from pycni import autostart
from tests.e2e.runtime_support import Ran, RuntimeSandbox, descendants, until

VERSION_STDIN = '{"cniVersion": "1.0.0"}'
LO_CONFIG = '{"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}'
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def ns_pid(pid: int) -> int:
    """``pid``'s number in its own (innermost) pid namespace."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def answers(path: Path) -> bool:
    """Somebody listens at ``path`` (it will refuse us, a caller from another pid namespace,
    after accepting: connecting is all this asks)."""
    return autostart.answers(bytes(path))


@dataclass
class Starts:
    """One sandbox, one socket path, and the servers its callers start there."""

    box: RuntimeSandbox
    cni_bin: Path
    socket: Path
    kind: str  # "serve" (pycni serve) or "daemon" (pycni-run daemon)
    client: str = ""

    @property
    def log(self) -> Path:
        name = "pycni-server" if self.kind == "serve" else "pycni-run-daemon"
        return self.socket.parent / f"{name}.log"

    def env(self, **extra: str) -> dict[str, str]:
        """A caller's environment: autostart on, this socket, the sandbox's config."""
        socket_var = "PYCNI_SOCKET" if self.kind == "serve" else "PYCNI_RUN_SOCKET"
        return {"PATH": PATH, "PYCNI_AUTOSTART": "1", "PYCNI_IDLE_TIMEOUT": "120",
                socket_var: str(self.socket), "PYCNI_RUN_CONFIG": str(self.box.config),
                "PYCNI_NO_SERVER": "1" if self.kind == "daemon" else "0", **extra}

    def version(self, *wrapper: str, **env: str) -> Ran:
        """``loopback`` VERSION from inside the sandbox (behind ``wrapper``, e.g. unshare)."""
        ran = self.box.sh(*wrapper, str(self.cni_bin / "loopback"), input=VERSION_STDIN,
                          env=self.env(CNI_COMMAND="VERSION", **env))
        assert ran.code == 0, ran.stdout + ran.stderr
        assert '"supportedVersions"' in ran.stdout
        return ran

    def pycni_run(self, *args: str, **env: str) -> Ran:
        return self.box.sh(self.client, *args, env=self.env(**env), timeout=120)

    def servers(self) -> list[int]:
        """Machine pids of the servers started on demand in the sandbox, alive now (not their
        workers, forks with the same command line)."""
        found = [pid for pid in descendants(self.box.init_pid)
                 if "--on-demand" in cmdline(pid) and self.kind in cmdline(pid) and alive(pid)]
        return [pid for pid in found if ppid(pid) not in found]

    def listening(self) -> int:
        """The machine pid of the server listening at the socket, once one does."""
        def found() -> list[int]:
            marker = Path(f"{self.socket}.ondemand")  # written right after it listens
            if not answers(self.socket) or not marker.exists():
                return []
            marked = int(marker.read_text())
            return [p for p in self.servers() if ns_pid(p) == marked]

        (pid,) = until("a server listening", found)
        return int(pid)

    def kill_all(self) -> None:
        for pid in self.servers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def starts_logged(self) -> int:
        return self.log.read_text().count("preloaded") if self.log.exists() else 0


@contextlib.contextmanager
def open_starts(box: RuntimeSandbox, cni_bin: Path, kind: str) -> Iterator[Starts]:
    """``Starts`` on ``box`` with a socket under the test's own directory; every server
    started meanwhile is SIGKILLed by its PID at the end."""
    starts = Starts(box=box, cni_bin=cni_bin, socket=box.workdir / "srv" / f"{kind}.sock",
                    kind=kind)
    if kind == "daemon":
        starts.client = install_client(str(box.workdir / "client"))
    try:
        yield starts
    finally:
        starts.kill_all()


def served_by(server: int, cwd: Path) -> bool:
    """A worker of ``server`` runs a call from a caller whose cwd was ``cwd`` (a worker takes
    its caller's cwd)."""
    for pid in descendants(server):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd") == str(cwd):
                return True
    return False


def gone_within(pid: int, timeout: float) -> bool:
    """``pid`` exited (a zombie counts) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_gone(pid: int, timeout: float = 60) -> None:
    assert gone_within(pid, timeout), f"pid {pid} still alive"

