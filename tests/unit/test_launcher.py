"""The launcher: wire format, the in-process/server decision, and staying import-light."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni.install import install
from pycni.server import protocol
from tests.support import AUTOSTART_OFF, modules_loaded_by

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------- framing


def test_request_round_trip() -> None:
    env = {b"CNI_COMMAND": b"ADD", b"CNI_ARGS": b"A=1;B=x=y", b"EMPTY": b""}
    data = protocol.encode_request("host-local", b"/some/dir", env)
    request = protocol.decode_request(data)
    assert request.name == "host-local"
    assert request.cwd == b"/some/dir"
    assert request.env == list(env.items())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage\0",
        protocol.MAGIC,  # no name, no cwd
        protocol.MAGIC + b"bridge\0/\0CNI_COMMAND=ADD",  # unterminated
        protocol.MAGIC + b"bridge\0/\0CNI_COMMAND=ADD\0",  # cut at a field boundary
        protocol.MAGIC + b"bridge\0/\0",  # cut at a field boundary
        protocol.MAGIC + b"bridge\0\0",  # no cwd
        protocol.MAGIC + b"bridge\0/\0NO_EQUALS_SIGN\0\0",
        protocol.MAGIC + b"bridge\0/\0=value\0\0",
        protocol.MAGIC + b"\0/\0\0",  # empty name
        protocol.MAGIC + b"x" * 100 + b"\0/\0\0",
        protocol.MAGIC + b"br\xffidge\0/\0\0",
        protocol.MAGIC + b"bridge\0/\0" + b"K=V\0" * (protocol.MAX_ENV_ENTRIES + 1) + b"\0",
        protocol.MAGIC + b"bridge\0/\0K=" + b"v" * protocol.MAX_REQUEST + b"\0\0",
    ],
)
def test_malformed_requests_are_refused(data: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(data)


def test_every_truncation_of_a_request_is_refused() -> None:
    data = protocol.encode_request("bridge", b"/", {b"CNI_COMMAND": b"ADD", b"A": b"1"})
    for cut in range(len(data)):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_request(data[:cut])


def test_ack_and_status_round_trip() -> None:
    assert protocol.decode_ack(protocol.encode_ack(60)) == 60.0
    assert protocol.decode_ack(protocol.encode_ack(0.25)) == 0.25
    for status in (0, 1, 255):
        assert protocol.decode_status(protocol.encode_status(status)) == status


@pytest.mark.parametrize(
    "data", [b"", b"ACK", b"ACK x", b"ACK -1", b"EXIT 0", b"ACK 1" + b"0" * 20]
)
def test_bad_ack(data: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_ack(data)


@pytest.mark.parametrize("data", [b"", b"EXIT", b"EXIT 256", b"EXIT -1", b"ACK 5", b"EXIT 1 2"])
def test_bad_status(data: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_status(data)


# ------------------------------------------------------------------------------- imports


def test_importing_the_launcher_stays_light() -> None:
    """What a plugin executable pays before it knows it must run in-process."""
    loaded = set(modules_loaded_by("import pycni.launcher", site=False))
    heavy = {"json", "re", "socket", "enum", "typing", "pyroute2", "netaddr", "pycni.cni",
             "pycni.plugins", "pycni.cni.skel", "asyncio", "__future__"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_deciding_to_start_a_server_stays_light() -> None:
    """The autostart decision is paid on the in-process path before its imports."""
    loaded = set(modules_loaded_by("import pycni.autostart", site=False))
    assert not {m for m in loaded if m.startswith("pycni.") and m != "pycni.autostart"}
    assert not loaded & {"os", "json", "re", "socket", "enum", "typing", "dataclasses"}


# ------------------------------------------------------------------------------- decision
# The executables run for real (subprocesses) against a scripted fake server. `none` VERSION
# needs no root and prints a known document in-process.

VERSION_STDIN = b'{"cniVersion": "1.0.0"}'


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bin")
    install(bin_dir=str(path), conf_dir=None)
    return path


def _run(
    bin_dir: Path, env: dict[str, str], timeout: float = 20
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(bin_dir / "none")],
        input=VERSION_STDIN,
        env={"CNI_COMMAND": "VERSION", **AUTOSTART_OFF, **env},
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def _in_process_answer(out: bytes) -> None:
    doc = json.loads(out)
    assert doc["cniVersion"] == "1.0.0"
    assert "supportedVersions" in doc


Script = Callable[[socket.socket], object]


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[Callable[[Script], str]]:
    """Serve one connection with ``script(conn)``; yields a starter returning the socket path."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def start(script: Script) -> str:
        path = str(tmp_path / "fake.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(path)
        listener.listen(1)
        listeners.append(listener)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                data, anc, _, _ = conn.recvmsg(protocol.MAX_REQUEST, socket.CMSG_SPACE(20))
                for _, _, fds in anc:
                    for i in range(0, len(fds), 4):
                        os.close(int.from_bytes(fds[i : i + 4], sys.byteorder))
                assert protocol.decode_request(data).name == "none"
                script(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(timeout=10)


def test_no_server_env_runs_in_process(bin_dir: Path) -> None:
    run = _run(bin_dir, {"PYCNI_NO_SERVER": "1", "PYCNI_SOCKET": "/nonexistent/x.sock"})
    assert run.returncode == 0, run.stderr
    _in_process_answer(run.stdout)


def test_missing_socket_runs_in_process(bin_dir: Path, tmp_path: Path) -> None:
    run = _run(bin_dir, {"PYCNI_SOCKET": str(tmp_path / "absent.sock")})
    assert run.returncode == 0, run.stderr
    _in_process_answer(run.stdout)


def test_refused_before_ack_runs_in_process(
    bin_dir: Path, fake_server: Callable[[Script], str]
) -> None:
    path = fake_server(lambda conn: None)  # reads the request, closes: no ACK
    run = _run(bin_dir, {"PYCNI_SOCKET": path})
    assert run.returncode == 0, run.stderr
    _in_process_answer(run.stdout)


def test_garbage_instead_of_ack_runs_in_process(
    bin_dir: Path, fake_server: Callable[[Script], str]
) -> None:
    path = fake_server(lambda conn: conn.send(b"HELLO"))
    run = _run(bin_dir, {"PYCNI_SOCKET": path})
    assert run.returncode == 0, run.stderr
    _in_process_answer(run.stdout)


def test_status_after_ack_is_the_exit_status(
    bin_dir: Path, fake_server: Callable[[Script], str]
) -> None:
    def script(conn: socket.socket) -> None:
        conn.send(protocol.encode_ack(5))
        conn.send(protocol.encode_status(7))

    run = _run(bin_dir, {"PYCNI_SOCKET": fake_server(script)})
    assert (run.returncode, run.stdout) == (7, b"")  # the "worker" printed nothing


def test_lost_connection_after_ack_is_999_never_a_rerun(
    bin_dir: Path, fake_server: Callable[[Script], str]
) -> None:
    run = _run(bin_dir, {"PYCNI_SOCKET": fake_server(lambda c: c.send(protocol.encode_ack(5)))})
    assert run.returncode == 1
    (doc,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert doc["code"] == 999
    assert "supportedVersions" not in doc  # the plugin did not run again in-process


def test_silent_server_after_ack_hits_the_launcher_deadline(
    bin_dir: Path, fake_server: Callable[[Script], str]
) -> None:
    release = threading.Event()

    def script(conn: socket.socket) -> None:
        conn.send(protocol.encode_ack(0.1))  # call timeout 0.1 s: deadline 2.1 s
        release.wait(30)

    try:
        run = _run(bin_dir, {"PYCNI_SOCKET": fake_server(script)}, timeout=15)
    finally:
        release.set()
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    assert doc["code"] == 999
    assert "timed out" in doc["msg"]


def test_error_json_quoting() -> None:
    from pycni.launcher import _quote

    text = 'a "quoted" \\ path\n\x01 é'
    assert json.loads(_quote(text)) == text


def test_version_in_process_costs_an_interpreter_start(bin_dir: Path, tmp_path: Path) -> None:
    """No server: the launcher answers the plain VERSION input itself, importing nothing of
    skel's (json, typing, dataclasses, the plugin registry)."""
    out = tmp_path / "modules"
    # Every import, as it happens (the fast path leaves with os._exit: no atexit).
    driver = ("import sys\nout, exe = sys.argv[1], sys.argv[2]\nlog = open(out, 'w', buffering=1)\n"
              "sys.addaudithook(lambda ev, args: ev == 'import' and log.write(args[0] + '\\n'))\n"
              "sys.argv = [exe]\nexec(compile(open(exe).read(), exe, 'exec'), "
              "{'__name__': '__main__'})\n")
    ran = subprocess.run([sys.executable, "-IS", "-c", driver, str(out), str(bin_dir / "none")],
                         input=VERSION_STDIN, capture_output=True, timeout=20, check=False,
                         env={"CNI_COMMAND": "VERSION", "PYCNI_NO_SERVER": "1", **AUTOSTART_OFF})
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["cniVersion"] == "1.0.0"
    loaded = set(out.read_text().split())
    assert not loaded & {"json", "typing", "dataclasses", "pycni.plugins", "pycni.cni.skel"}
