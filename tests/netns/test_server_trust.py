"""Whom the sockets trust: neither side hands anything to a socket that is not root's alone.

Callers (the plugin launcher, the pycni-run client) send their stdio, environment and
namespaces only to a root listener (SO_PEERCRED) in a directory only root can write; anything
else and they run the call themselves, with a note on stderr. The listeners (`pycni serve`,
`pycni-run daemon`) refuse a directory someone else owns or may write, and a path that is not
a socket (a dangling symlink), with one clear error. Every listener here is private.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycni_run.executable import install_client

from pycni.net import netns
from tests.conftest import MakeNetNS
from tests.e2e.bridge_support import ip_json
from tests.netns.test_server import _start_server
from tests.support import AUTOSTART_OFF, exec_plugin

NOBODY = 65534
LO_CONFIG = {"cniVersion": "1.1.0", "name": "lonet", "type": "loopback"}

# Binds as root at argv[1], then listens as argv[2] (SO_PEERCRED records the listener's
# credentials at listen()). Prints the first packet of the first connection it accepts.
_LISTENER = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1])
uid = int(sys.argv[2])
os.setgroups([]); os.setgid(uid); os.setuid(uid)
s.listen(4)
print("ready", flush=True)
conn, _ = s.accept()
conn.settimeout(30)
print(repr(conn.recv(1 << 20)[:64]), flush=True)
"""


class Listener:
    """A stand-in for whatever may listen at the path; ``first_packet`` tells whether the
    caller sent it anything (a sentinel connects last, so it answers even if none came)."""

    def __init__(self, path: Path, uid: int) -> None:
        self.path = path
        self.proc = subprocess.Popen([sys.executable, "-c", _LISTENER, str(path), str(uid)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def first_packet(self) -> str:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sentinel:
            try:
                sentinel.connect(str(self.path))
                sentinel.send(b"sentinel")
            except ConnectionRefusedError:
                pass  # it took a connection before and is done with it
            out, _ = self.proc.communicate(timeout=30)
        return out.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def _listening(path: Path, uid: int) -> Iterator[Listener]:
    listener = Listener(path, uid)
    try:
        yield listener
    finally:
        listener.stop()


@pytest.fixture
def nobodys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o755)
    os.chown(directory, NOBODY, NOBODY)
    return directory


@pytest.fixture
def roots_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ours"
    directory.mkdir(mode=0o700)
    return directory


def _loopback_add(socket_path: Path, host_ns: str, container_ns: str, cni_bin: Path) -> str:
    """A loopback ADD through the launcher: it must succeed in-process; its stderr."""
    run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                      env={"CNI_CONTAINERID": "trust1", "CNI_NETNS": container_ns,
                           "CNI_IFNAME": "eth0", "CNI_PATH": str(cni_bin),
                           "PYCNI_SOCKET": str(socket_path)},
                      run_in=host_ns)
    assert run.code == 0, run.stdout + run.stderr
    assert run.json()["interfaces"][0]["name"] == "lo"
    return run.stderr


def test_launcher_sends_nothing_into_a_directory_root_does_not_own(
    nobodys_dir: Path, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    with _listening(nobodys_dir / "pycni.sock", 0) as listener:
        stderr = _loopback_add(listener.path, host_ns, container_ns, cni_bin)
        assert listener.first_packet() == "b'sentinel'"  # the launcher never even connected
    assert "not using the pycni server socket" in stderr
    assert f"owner uid {NOBODY}" in stderr


def test_launcher_sends_nothing_to_a_listener_that_is_not_root(
    roots_dir: Path, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    with _listening(roots_dir / "pycni.sock", NOBODY) as listener:
        stderr = _loopback_add(listener.path, host_ns, container_ns, cni_bin)
        assert listener.first_packet() == "b''"  # connected, checked, closed: nothing sent
    assert f"is uid {NOBODY}, not root" in stderr


def _client_ps(client: str, socket_path: Path, state_dir: Path) -> subprocess.CompletedProcess[str]:
    ran = subprocess.run([client, "--state-dir", str(state_dir), "ps", "-a"],
                         env={"PYCNI_RUN_SOCKET": str(socket_path), "PATH": "/usr/bin:/bin",
                              **AUTOSTART_OFF},
                         capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[:2] == ["NAME", "ID"]  # ps ran, in-process
    return ran


@pytest.mark.parametrize("owner", ["directory", "listener"])
def test_pycni_run_client_sends_nothing_to_a_socket_not_roots_alone(
    tmp_path: Path, nobodys_dir: Path, roots_dir: Path, owner: str
) -> None:
    client = install_client(str(tmp_path / "bin"))
    path, uid = (nobodys_dir, 0) if owner == "directory" else (roots_dir, NOBODY)
    with _listening(path / "run.sock", uid) as listener:
        ran = _client_ps(client, listener.path, tmp_path / "state")
        sent = listener.first_packet()
    assert sent == ("b'sentinel'" if owner == "directory" else "b''")
    assert "not using the runtime daemon's socket" in ran.stderr


# ---------------------------------------------------------------------------- privileges

CAPLESS = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")


def test_a_root_caller_without_capabilities_gets_the_in_process_refusal(
    tmp_path: Path, host_ns: str, make_netns: MakeNetNS, cni_bin: Path
) -> None:
    """uid 0 with every capability dropped: the server used to run its ADD with all of its
    own. Now it refuses the caller before the ACK and the launcher runs the call itself,
    where the kernel refuses it: the same error either way, and the container untouched."""
    with _start_server(tmp_path / "run" / "pycni.sock", tmp_path / "server.log") as server:
        outcomes = {}
        for mode, extra in (("server", {"PYCNI_SOCKET": str(server.socket)}),
                            ("in-process", {"PYCNI_NO_SERVER": "1"})):
            container = make_netns(f"c-{mode}", lo_up=False)
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD",
                   "CNI_CONTAINERID": "capless", "CNI_NETNS": container, "CNI_IFNAME": "eth0",
                   "CNI_PATH": str(cni_bin), **AUTOSTART_OFF, **extra}
            with netns.enter(host_ns):
                ran = subprocess.run([*CAPLESS, str(cni_bin / "loopback")],
                                     input=json.dumps(LO_CONFIG).encode(), env=env,
                                     capture_output=True, timeout=60, check=False)
            (doc,) = [json.loads(line) for line in ran.stdout.decode().splitlines()]
            outcomes[mode] = (ran.returncode, doc["code"], doc["msg"].replace(container, "NS"))
            assert "UP" not in ip_json(container, "link", "show", "lo")[0]["flags"]
        assert outcomes["server"] == outcomes["in-process"]
        assert outcomes["server"][0] == 1
        assert "effective capabilities lack CAP_" in server.log_text()
        assert "loopback ADD (pid" not in server.log_text()  # no worker ran it


# ---------------------------------------------------------------------------- the listeners


def _serve(socket_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pycni.cli", "serve", "--socket",
                           str(socket_path)], capture_output=True, text=True, timeout=120,
                          check=False)


def _daemon(socket_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pycni_run", "daemon", "--socket",
                           str(socket_path)], capture_output=True, text=True, timeout=120,
                          check=False)


def _server_refused(ran: subprocess.CompletedProcess[str], why: str) -> None:
    assert ran.returncode == 1, ran.stdout + ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["msg"] == "pycni server cannot listen"
    assert why in doc["details"]
    assert "Traceback" not in ran.stderr


def _daemon_refused(ran: subprocess.CompletedProcess[str], why: str) -> None:
    assert ran.returncode == 125, ran.stdout + ran.stderr
    assert why in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("mode", [0o755, 0o1777, 0o770])
def test_listeners_refuse_a_directory_that_is_not_roots_alone(
    tmp_path: Path, nobodys_dir: Path, mode: int
) -> None:
    directory = nobodys_dir
    if mode != 0o755:  # root's, but others (or a group) may create entries in it
        directory = tmp_path / f"open{mode:o}"
        directory.mkdir()
        directory.chmod(mode)
    _server_refused(_serve(directory / "pycni.sock"), "is not this user's alone")
    _daemon_refused(_daemon(directory / "run.sock"), "is not this user's alone")
    assert sorted(directory.iterdir()) == []


def test_listeners_refuse_a_dangling_symlink_at_their_path(roots_dir: Path) -> None:
    for name in ("pycni.sock", "run.sock"):
        (roots_dir / name).symlink_to(roots_dir / "elsewhere" / name)
    _server_refused(_serve(roots_dir / "pycni.sock"), "exists and is a symlink")
    _daemon_refused(_daemon(roots_dir / "run.sock"), "exists and is a symlink")
    assert not (roots_dir / "elsewhere").exists()
