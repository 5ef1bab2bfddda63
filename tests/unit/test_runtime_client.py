"""The pycni-run client: wire format, the daemon/in-process decision, staying import-light;
and invoke's fast path for pycni's own plugins giving what exec gives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycni_run import wire
from pycni_run.executable import install_client

from pycni.cni.errors import CNIError
from pycni.cni.invoke import Invoker
from pycni.install import install
from pycni.plugins.runner import FORKED, IN_PROCESS
from tests.support import AUTOSTART_OFF

HEAVY = ("argparse", "json", "yaml", "pyroute2", "typing", "re", "enum", "dataclasses")


def test_request_round_trip() -> None:
    data = wire.encode_request(b"/d", 0o027, [b"run", b"", b"-e", b"A=b=c"], [b"K=V", b"E="])
    req = wire.decode_request(data)
    assert (req.cwd, req.umask, req.argv, req.env) == (
        b"/d", 0o027, [b"run", b"", b"-e", b"A=b=c"], [b"K=V", b"E="]
    )


def test_every_truncation_is_refused() -> None:
    data = wire.encode_request(b"/", 0o22, [b"run", b"busybox"], [b"A=1"])
    for cut in range(len(data)):
        with pytest.raises(wire.ProtocolError):
            wire.decode_request(data[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\0",
        wire.MAGIC + b"rel\x0022\x000\x000\x00",  # cwd not absolute
        wire.MAGIC + b"/\x009\x000\x000\x00",  # bad umask
        wire.MAGIC + b"/\x0022\x0099999\x000\x00",  # count too large
        wire.MAGIC + b"/\x0022\x000\x001\x00NOEQUALS\x00",
        wire.MAGIC + b"/\x0022\x000\x002\x00A=1\x00",  # fewer env entries than promised
    ],
)
def test_malformed_requests_are_refused(data: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode_request(data)


@pytest.fixture
def client(tmp_path: Path) -> str:
    return install_client(str(tmp_path / "bin"))


def _fake_daemon(path: str, reply: str) -> Iterator[threading.Thread]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        data, fds, _, _ = socket.recv_fds(conn, wire.MAX_REQUEST, wire.FDS)
        request = wire.decode_request(data)
        assert len(fds) == wire.FDS
        assert request.argv == [b"ps", b"-a"]
        if reply == "local":
            conn.send(wire.LOCAL)
        else:
            pidfd = os.pidfd_open(os.getpid())
            socket.send_fds(conn, [wire.ACK], [pidfd])
            conn.send(wire.encode_status(7))
            os.close(pidfd)
        for fd in fds:
            os.close(fd)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield thread
    thread.join(5)
    listener.close()


PROBE = """
import sys
sys.path[:0] = {path!r}
from pycni_run import client
sys.argv = ["pycni-run", "ps", "-a"]
status = client._call({sock!r})
print(status, sorted(m for m in {heavy!r} if m in sys.modules))
"""


def test_client_through_a_daemon_stays_import_light(tmp_path: Path) -> None:
    sock = str(tmp_path / "run.sock")
    gen = _fake_daemon(sock, "ack")
    next(gen)
    root = Path(__file__).resolve().parents[2]
    code = PROBE.format(path=[str(root), str(root / "runtime")], sock=sock.encode(),
                        heavy=HEAVY)
    ran = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True,
                         timeout=30, check=False)
    next(gen, None)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split(" ", 1) == ["7", "[]\n"]


def test_status_is_the_clients_exit_code(tmp_path: Path, client: str) -> None:
    sock = str(tmp_path / "run.sock")
    gen = _fake_daemon(sock, "ack")
    next(gen)
    ran = subprocess.run([client, "ps", "-a"], env={"PYCNI_RUN_SOCKET": sock, **AUTOSTART_OFF},
                         capture_output=True, timeout=30, check=False)
    next(gen, None)
    assert ran.returncode == 7


@pytest.mark.parametrize("how", ["local", "absent", "disabled"])
def test_falls_back_in_process(tmp_path: Path, client: str, how: str) -> None:
    sock = str(tmp_path / "run.sock")
    gen = _fake_daemon(sock, "local") if how == "local" else None
    if gen:
        next(gen)
    env = {"PYCNI_RUN_SOCKET": sock if how != "absent" else str(tmp_path / "none.sock"),
           "PYCNI_RUN_CONFIG": str(tmp_path / "cfg.yaml"), **AUTOSTART_OFF}
    (tmp_path / "cfg.yaml").write_text(f"runtime:\n  state_dir: {tmp_path / 'state'}\n")
    if how == "disabled":
        env["PYCNI_RUN_NO_DAEMON"] = "1"
    ran = subprocess.run([client, "ps", "-a"], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    if gen:
        next(gen, None)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[:2] == ["CONTAINER", "ID"] or "NAME" in ran.stdout


# ------------------------------------------------------------------ invoke's fast path


@pytest.fixture
def our_bin(tmp_path: Path) -> Path:
    install(bin_dir=str(tmp_path / "ours"), conf_dir=None)
    return tmp_path / "ours"


def _version(bin_dir: Path, *, in_process: bool = False) -> dict[str, object]:
    runner = IN_PROCESS if in_process else FORKED
    return Invoker(path=(str(bin_dir),), runner=runner).version_info("none")


def test_our_plugin_forked_and_in_process_answer_as_exec(
    our_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forked = _version(our_bin)
    in_process = _version(our_bin, in_process=True)
    monkeypatch.setenv("PYCNI_DELEGATE_EXEC", "1")
    monkeypatch.setenv("PYCNI_NO_SERVER", "1")
    executed = _version(our_bin)
    assert forked == in_process == executed


def test_our_plugin_error_is_the_same_either_way(
    our_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = json.dumps({"cniVersion": "9.9.9", "name": "n", "type": "none"}).encode()

    def add(*, in_process: bool = False) -> str:
        inv = Invoker(path=(str(our_bin),), runner=IN_PROCESS if in_process else FORKED)
        with pytest.raises(CNIError) as err:
            inv.exec_plugin("none", "ADD", bad, None)
        return str(err.value)

    forked, in_process = add(), add(in_process=True)
    monkeypatch.setenv("PYCNI_DELEGATE_EXEC", "1")
    monkeypatch.setenv("PYCNI_NO_SERVER", "1")
    assert forked == in_process == add()


def test_our_plugin_is_not_executed(our_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_exec(*_a: object, **_k: object) -> None:
        raise AssertionError("pycni's own plugin must not be exec'd")

    monkeypatch.setattr(subprocess, "Popen", no_exec)
    assert _version(our_bin)["cniVersion"]


def test_a_foreign_plugin_is_still_executed(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    script = other / "none"
    script.write_text('#!/bin/sh\necho \'{"cniVersion": "1.0.0", "supportedVersions": '
                      '["1.0.0"], "foreign": true}\'\n')
    script.chmod(0o755)
    assert _version(other, in_process=True)["foreign"] is True
