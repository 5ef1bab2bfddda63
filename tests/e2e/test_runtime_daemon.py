"""pycni-run through its daemon behaves as in-process; the daemon survives hostile peers.

Each behaviour runs both ways (``mode``): in-process (``PYCNI_RUN_NO_DAEMON=1``) and through
a `pycni-run daemon` started inside the sandbox, via the `install-client` executable.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.e2e.runtime_support import RuntimeSandbox, comm, descendants
from tests.support import recorded, recording_argv

pytestmark = [pytest.mark.root, pytest.mark.runtime_sandbox]


@pytest.fixture(params=["in-process", "daemon"])
def mbox(box: RuntimeSandbox, request: pytest.FixtureRequest) -> Iterator[RuntimeSandbox]:
    if request.param == "daemon":
        box.start_daemon()
    yield box
    if request.param == "daemon":
        assert box.daemon is not None
        assert box.daemon.poll() is None, "the daemon died"


def _served(box: RuntimeSandbox) -> int:
    """How many commands the daemon's workers ran (its DEBUG log)."""
    box.stop_daemon()  # flush and end it: the log is complete
    assert box.daemon_log is not None
    return box.daemon_log.read_text().count("): exit 0 in")


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["/bin/true"], 0),
        (["sh", "-c", "exit 1"], 1),
        (["/etc/passwd"], 126),
        (["no-such-command"], 127),
    ],
)
def test_exit_codes(mbox: RuntimeSandbox, command: list[str], code: int) -> None:
    ran = mbox.run("--rm", "--net=none", "busybox", *command)
    assert ran.code == code, ran.stderr
    if code >= 126:
        assert "exec:" in ran.stderr


def test_bad_flags_are_125(mbox: RuntimeSandbox) -> None:
    ran = mbox.run("--no-such-flag", "busybox", "true")
    assert ran.code == 125
    assert "no-such-flag" in ran.stderr


def test_stdio_and_rm_leave_nothing(mbox: RuntimeSandbox) -> None:
    ran = mbox.run("--rm", "-i", "--net=none", "busybox", "sh", "-c",
                   "cat; echo out; echo err >&2", input="in\n")
    assert (ran.code, ran.stdout, ran.stderr) == (0, "in\nout\n", "err\n")
    assert mbox.sh("ls", "-A", "/run/pycni/containers").stdout.split() == []
    assert mbox.sh("ls", "-A", "/run/netns").stdout.split() == []
    # Through the daemon, the next spare's standby init may already be parked (``standby``).
    assert [d for d in mbox.cgroup_dirs() if not mbox.is_standby_or_parent(d)] == []


@pytest.mark.parametrize("net", ["none", "bridge", "host"])
def test_network_modes(mbox: RuntimeSandbox, net: str) -> None:
    ran = mbox.run("--rm", f"--net={net}", "busybox", "ip", "-o", "link")
    assert ran.code == 0, ran.stderr
    names = {line.split(":")[1].strip().split("@")[0] for line in ran.stdout.splitlines()}
    assert "lo" in names
    assert ("eth0" in names) == (net == "bridge")


def test_memory_limit_is_137(mbox: RuntimeSandbox) -> None:
    ran = mbox.run("--rm", "--net=none", "-m", "16m", "busybox", "sh", "-c",
                   "x=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived")
    assert ran.code == 137, (ran.code, ran.stderr)


def test_signal_is_forwarded_to_the_container(mbox: RuntimeSandbox) -> None:
    """SIGTERM to the foreground pycni-run reaches the container (its trap exits 42)."""
    args = ["--rm", "--net=none", "--name", "sig", "busybox", "sh", "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done"]
    if mbox.daemon_socket:
        argv = [str(mbox.client), *args]
    else:
        argv = [sys.executable, "-m", "pycni_run.cli", *args]
    proc = subprocess.Popen(mbox._argv(argv), env=mbox._env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        inner = [p for p in descendants(proc.pid) if comm(p).startswith(("python", "pycni"))]
        os.kill(inner[0], 15)  # the pycni-run (or client) process nsenter forked: ours
        # No stderr in the message: were the container orphaned, it would hold the pipe open.
        assert proc.wait(timeout=30) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ the daemon itself


@pytest.fixture
def served(box: RuntimeSandbox) -> RuntimeSandbox:
    box.start_daemon()
    return box


def _sandbox_python(box: RuntimeSandbox, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(box._argv([sys.executable, "-c", code, *args]), env=box._env(),
                          capture_output=True, text=True, timeout=60, check=False)


HOSTILE = """
import socket, sys, os
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    return s
s = conn(); s.close()                                  # connect and leave
s = conn(); s.send(b"garbage"); s.settimeout(5); print("garbage ->", s.recv(64))
Z = bytes(1)
cut = b"pycni-run/1" + Z + Z.join([b"/", b"22", b"1"]) + Z        # argv promised, missing
s = conn(); s.send(cut); s.settimeout(5); print("cut ->", s.recv(64))
whole = b"pycni-run/1" + Z + Z.join([b"/", b"22", b"1", b"ps", b"0"]) + Z
fds = [os.open("/dev/null", os.O_RDONLY)] * 3            # a right request, too few fds
s = conn(); socket.send_fds(s, [whole], fds)
s.settimeout(5); print("fds ->", s.recv(64))
"""


def test_daemon_survives_hostile_requests(served: RuntimeSandbox) -> None:
    ran = _sandbox_python(served, HOSTILE, served.daemon_socket)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["garbage -> b''", "cut -> b''", "fds -> b''"]
    assert served.run("--rm", "--net=none", "busybox", "true").code == 0
    assert _served(served) == 1
    assert served.daemon_log is not None
    log = served.daemon_log.read_text()
    assert log.count("expected 9 descriptors, got 0") == 2  # garbage and cut: refused unread
    assert "expected 9 descriptors, got 3" in log


def test_non_root_peer_is_refused(box: RuntimeSandbox) -> None:
    """The socket is 0600 in a 0700 dir; opened up here (test only), the daemon still refuses
    a non-root peer by SO_PEERCRED: no ACK, so a client would run in-process."""
    box.start_daemon("/run/pycni/daemon/run.sock")  # the sandbox's tmpfs: no 0700 test dirs
    served, path = box, box.daemon_socket
    assert served.sh("chmod", "755", os.path.dirname(path)).code == 0
    assert served.sh("chmod", "777", path).code == 0
    code = ("import os, socket, sys; os.setgid(65534); os.setuid(65534); "
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1]); "
            "s.settimeout(5); print(s.recv(64))")
    ran = _sandbox_python(served, code, path)
    assert (ran.returncode, ran.stdout.strip()) == (0, "b''"), ran.stderr
    served.stop_daemon()
    assert served.daemon_log is not None
    assert "uid 65534 is not root" in served.daemon_log.read_text()


def test_fallback_in_process_without_a_daemon(box: RuntimeSandbox) -> None:
    from pycni_run.executable import install_client

    client = install_client(str(box.workdir / "client"))
    env = {**box._env(), "PYCNI_RUN_SOCKET": str(box.workdir / "absent.sock")}
    env.pop("PYCNI_RUN_NO_DAEMON")
    ran = subprocess.run(box._argv([client, "--rm", "--net=none", "busybox", "sh", "-c",
                                    "exit 3"]), env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert ran.returncode == 3, ran.stderr


def test_in_process_makes_its_dataclasses_through_the_code_cache(box: RuntimeSandbox) -> None:
    """A client that runs its command itself is a process of its own, as a plugin executable
    in-process is: once a first run filled the code cache, a run compiles no dataclass method
    and imports no inspect (``pycni.codecache``). It keeps the cyclic collector on."""
    from pycni_run.executable import install_client

    client = install_client(str(box.workdir / "client"))
    for attempt in ("fills", "uses"):
        out = box.workdir / f"recorded-{attempt}.json"
        ran = subprocess.run(box._argv(recording_argv(out, client, "--rm", "--net=none",
                                                      "busybox", "true")),
                             env=box._env(), capture_output=True, text=True, timeout=60,
                             check=False)
        assert ran.returncode == 0, ran.stderr
    record = recorded(out)
    assert "pycni_run.cli" in record.modules  # the command did run here
    assert "inspect" not in record.modules
    assert [text.split("(")[0] for text in record.sources] == []
    # Unlike a plugin call, its command may be a container in the foreground, or the daemon.
    assert record.collector


def test_tty_stays_in_process(served: RuntimeSandbox) -> None:
    """`-t` is answered LOCAL: the client runs it itself (here without a terminal)."""
    served.run("--rm", "-t", "--net=none", "busybox", "true")
    assert _served(served) == 0


def test_through_the_daemon_state_is_the_callers(served: RuntimeSandbox) -> None:
    """A detached container started through the daemon is managed like any other."""
    cid = served.ok("-d", "--name", "web", "--net=none", "busybox", "sleep", "60").strip()
    doc = json.loads(served.ok("inspect", "web"))
    assert doc["Id"].startswith(cid[:12]) if "Id" in doc else cid
    served.ok("rm", "-f", "web")
    deadline = time.monotonic() + 10
    while served.sh("ls", "-A", "/run/pycni/containers").stdout.split():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_socket_is_private(served: RuntimeSandbox) -> None:
    mode = served.sh("stat", "-c", "%a", served.daemon_socket).stdout.strip()
    parent = served.sh("stat", "-c", "%a", os.path.dirname(served.daemon_socket)).stdout.strip()
    assert (mode, parent) == ("600", "700")
    assert socket.SOCK_SEQPACKET  # the protocol's socket type (one packet per message)


# ------------------------------------------------------------------ a caller's privileges

CAPLESS = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")


def test_a_root_caller_without_capabilities_gets_the_in_process_refusal(
    served: RuntimeSandbox,
) -> None:
    """uid 0 with every capability dropped: through the socket it used to get a fully
    privileged container. Nothing done through the daemon may exceed what the caller could do
    itself: it gets exactly what the in-process pycni-run gives it, one clear error."""
    args = ("--rm", "--net=none", "busybox", "true")
    through = served.sh(*CAPLESS, str(served.client), *args)
    alone = served.sh("env", "PYCNI_RUN_NO_DAEMON=1", *CAPLESS, sys.executable, "-m",
                      "pycni_run.cli", *args)
    assert (through.code, through.stderr) == (alone.code, alone.stderr)
    assert through.code == 125
    assert "Traceback" not in through.stderr
    assert "CAP_SYS_ADMIN" in through.stderr
    assert served.sh("ls", "-A", "/run/pycni/containers").stdout.split() == []
    assert served.daemon_log is not None
    assert _served(served) == 0
    assert "capabilities lack" in served.daemon_log.read_text()
