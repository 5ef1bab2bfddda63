"""`pycni serve` end to end: executables hand their calls to a private server, whose workers
run them in the caller's namespaces; bad peers and bad workers never take the server down."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycni.net import netns
from pycni.server import protocol
from pycni.server.loop import BUSY_WORKERS, SPARES
from tests.e2e.autostart_support import gone_within
from tests.e2e.bridge_support import bridge_conflist
from tests.e2e.runtime_support import until
from tests.support import (
    AUTOSTART_OFF,
    PluginRun,
    exec_plugin,
    netfilter_sockets,
    private_share,
    sched_policy,
)

CALL_TIMEOUT = 3.0
BURST = 12


@dataclass(frozen=True)
class ServerProc:
    pid: int
    socket: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [int(c) for c in children]


@contextlib.contextmanager
def _start_server(sock: Path, log: Path) -> Iterator[ServerProc]:
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pycni.cli", "serve", "--socket", str(sock), "--timeout",
             str(CALL_TIMEOUT), "--log-level", "DEBUG"],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        yield ServerProc(pid=proc.pid, socket=sock, log=log)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=CALL_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    directory = tmp_path_factory.mktemp("server")
    sock = directory / "run" / "pycni.sock"
    with _start_server(sock, directory / "server.log") as proc:
        yield proc
    assert not sock.exists(), "the server removes its socket on SIGTERM"


def _env(container: str, cni_bin: Path, **extra: str) -> dict[str, str]:
    return {"CNI_CONTAINERID": "srv1", "CNI_NETNS": container, "CNI_IFNAME": "eth0",
            "CNI_PATH": str(cni_bin), **AUTOSTART_OFF, **extra}


def _via(server: ServerProc) -> dict[str, str]:
    return {"PYCNI_SOCKET": str(server.socket)}


IN_PROCESS = {"PYCNI_NO_SERVER": "1"}
LO_CONFIG = {"cniVersion": "1.1.0", "name": "lonet", "type": "loopback"}


def _error(run: PluginRun) -> dict[str, object]:
    (doc,) = run.documents()
    assert isinstance(doc, dict)
    return doc


def test_server_socket_is_private(server: ServerProc) -> None:
    assert server.socket.stat().st_mode & 0o777 == 0o600
    assert server.socket.parent.stat().st_mode & 0o777 == 0o700


def test_loopback_add_through_the_server_equals_in_process(
    server: ServerProc, host_ns: str, make_netns: object, cni_bin: Path
) -> None:
    assert callable(make_netns)
    results = []
    for i, mode in enumerate((_via(server), IN_PROCESS)):
        container = make_netns(f"c{i}", lo_up=False)
        run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                          env=_env(container, cni_bin, **mode), run_in=host_ns)
        assert run.code == 0, run.stdout + run.stderr
        results.append({**run.json(), "interfaces": [
            {**i, "sandbox": "X"} for i in run.json()["interfaces"]]})
    assert results[0] == results[1]
    assert "loopback ADD (pid" in server.log_text()


def test_worker_is_in_the_callers_netns(server: ServerProc, host_ns: str, cni_bin: Path) -> None:
    """CNI_NETNS naming the caller's own netns is refused: only true if the worker is there."""
    for mode in (_via(server), IN_PROCESS):
        run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                          env=_env(host_ns, cni_bin, **mode), run_in=host_ns)
        assert run.code == 1
        assert "should not be the same" in str(_error(run)["msg"])


def test_worker_sees_the_callers_mount_namespace(
    server: ServerProc, host_ns: str, container_ns: str, cni_bin: Path, tmp_path: Path
) -> None:
    """The netns file exists only in the caller's private mount namespace."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    script = (
        f"mount -t tmpfs none {hidden} && touch {hidden}/ns && "
        f"mount --bind {container_ns} {hidden}/ns && exec {cni_bin / 'loopback'}"
    )
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD",
           **_env(f"{hidden}/ns", cni_bin), **_via(server)}
    with netns.enter(host_ns):
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            input=json.dumps(LO_CONFIG).encode(), env=env, capture_output=True, timeout=30,
            check=False,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["interfaces"][0]["sandbox"] == f"{hidden}/ns"
    assert not (hidden / "ns").exists()  # and the test's own view never saw it


def test_no_socket_falls_back_in_process(host_ns: str, container_ns: str, cni_bin: Path,
                                         tmp_path: Path) -> None:
    run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                      env=_env(container_ns, cni_bin, PYCNI_SOCKET=str(tmp_path / "none.sock")),
                      run_in=host_ns)
    assert run.code == 0, run.stderr


def _version_works(server: ServerProc, cni_bin: Path) -> None:
    before = server.log_text().count("none VERSION (pid")
    run = exec_plugin(cni_bin / "none", command="VERSION", config={"cniVersion": "1.0.0"},
                      env=_via(server))
    assert run.code == 0, run.stderr
    assert server.alive()
    assert server.log_text().count("none VERSION (pid") == before + 1


def test_non_root_peer_is_refused(tmp_path_factory: pytest.TempPathFactory,
                                  cni_bin: Path) -> None:
    """Defence behind the 0600 socket: SO_PEERCRED. Needs a server whose socket nobody can
    reach, so this one lives in a world-searchable directory with its mode opened up."""
    directory = Path(tempfile.mkdtemp(prefix="pycni-peer-", dir="/tmp"))
    directory.chmod(0o711)
    try:
        with _start_server(directory / "pycni.sock", directory / "server.log") as other:
            other.socket.chmod(0o666)
            probe = (
                "import os, socket, sys; os.setgid(65534); os.setuid(65534); "
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); "
                "s.settimeout(5); s.connect(sys.argv[1]); print(repr(s.recv(64)))"
            )
            proc = subprocess.run([sys.executable, "-c", probe, str(other.socket)],
                                  capture_output=True, text=True, timeout=30, check=False)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip() == "b''"  # closed without an ACK
            assert "uid 65534 is not root" in other.log_text()
            _version_works(other, cni_bin)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _send_raw(server: ServerProc, data: bytes, *, fds: list[int] | None = None,
              linger: float = 0.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(10)
        conn.connect(str(server.socket))
        if fds:
            conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))])
        elif data:
            conn.send(data)
        if linger:
            time.sleep(linger)
            return b""
        return conn.recv(64)


@pytest.mark.parametrize(
    "kind",
    ["garbage", "no-fds", "too-few-fds", "unknown-plugin", "oversized", "truncated", "empty",
     "hang-up", "slow"],
)
def test_bad_requests_never_take_the_server_down(
    server: ServerProc, cni_bin: Path, kind: str
) -> None:
    good = protocol.encode_request("none", b"/", {b"CNI_COMMAND": b"VERSION"})
    fds = [0, 1, 2, os.open("/proc/self/ns/net", os.O_RDONLY), os.open("/proc/self/ns/mnt",
                                                                        os.O_RDONLY)]
    try:
        if kind == "garbage":
            reply = _send_raw(server, os.urandom(512), fds=fds)
        elif kind == "no-fds":
            reply = _send_raw(server, good)
        elif kind == "too-few-fds":
            reply = _send_raw(server, good, fds=fds[:2])
        elif kind == "unknown-plugin":
            reply = _send_raw(server, protocol.encode_request("nope", b"/", {}), fds=fds)
        elif kind == "oversized":
            reply = _send_raw(server, good + b"X=" + b"y" * protocol.MAX_REQUEST + b"\0", fds=fds)
        elif kind == "truncated":
            reply = _send_raw(server, good[: len(good) // 2], fds=fds)
        elif kind == "empty":
            reply = _send_raw(server, b"", fds=None)
        elif kind == "hang-up":
            reply = _send_raw(server, b"", linger=0.01)
        else:  # slow: connect and say nothing; dropped after the read deadline
            reply = _send_raw(server, b"", fds=None)
        assert reply == b"", reply  # never an ACK
    finally:
        for fd in fds[3:]:
            os.close(fd)
    _version_works(server, cni_bin)


def _wait_for_worker(server: ServerProc, log_offset: int) -> int:
    """The worker running the new call: the log names it once the call starts (an idle spare
    worker is a child of the server too, and may be the one the call is given)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        named = re.findall(r": worker pid (\d+)", server.log_text()[log_offset:])
        if named:
            return int(named[0])
        time.sleep(0.02)
    raise AssertionError("no worker appeared")


def _sleeping_add(server: ServerProc, host_ns: str, container_ns: str,
                  cni_bin: Path) -> subprocess.Popen[bytes]:
    """A loopback ADD through ``server`` whose worker sleeps 30 s first (stdin still open)."""
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", **_env(container_ns, cni_bin),
           **_via(server), "PYCNI_TEST_SLEEP": "30"}
    with netns.enter(host_ns):
        return subprocess.Popen([str(cni_bin / "loopback")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_worker_killed_mid_call_gives_999(server: ServerProc, host_ns: str, container_ns: str,
                                          cni_bin: Path) -> None:
    log_offset = len(server.log_text())
    proc = _sleeping_add(server, host_ns, container_ns, cni_bin)
    try:
        worker = _wait_for_worker(server, log_offset)
        os.kill(worker, signal.SIGKILL)
        out, _ = proc.communicate(json.dumps(LO_CONFIG).encode(), timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    (doc,) = [json.loads(line) for line in out.decode().splitlines()]
    assert doc["code"] == 999
    assert "killed by signal 9" in doc["details"]
    assert server.alive()


def test_a_caller_that_hangs_up_has_its_worker_killed(
    server: ServerProc, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    """A runtime that kills its plugin (a timeout of its own) must not leave the call running:
    the server sees the launcher's connection close and kills the worker, well before the
    call timeout would have."""
    log_offset = len(server.log_text())
    proc = _sleeping_add(server, host_ns, container_ns, cni_bin)
    try:
        worker = _wait_for_worker(server, log_offset)
        hung_up = time.monotonic()
    finally:
        proc.kill()
        proc.wait()
    assert gone_within(worker, CALL_TIMEOUT / 2)
    assert time.monotonic() - hung_up < CALL_TIMEOUT
    assert "caller hung up, killing the worker" in server.log_text()[log_offset:]
    assert server.alive()
    _version_works(server, cni_bin)


def test_wedged_worker_is_killed_after_the_timeout(
    server: ServerProc, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    started = time.monotonic()
    run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                      env={**_env(container_ns, cni_bin), **_via(server),
                           "PYCNI_TEST_SLEEP": "60"},
                      run_in=host_ns, timeout=CALL_TIMEOUT + 15)
    elapsed = time.monotonic() - started
    assert run.code == 1
    doc = _error(run)
    assert doc["code"] == 999
    assert "timed out" in str(doc["details"])
    assert CALL_TIMEOUT <= elapsed < CALL_TIMEOUT + 5
    assert server.alive()
    _version_works(server, cni_bin)


def test_status_and_stdout_do_not_wait_for_the_worker_to_exit(
    server: ServerProc, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    """The worker hands back the caller's stdio and reports its status before it exits: a
    worker lingering after its report (the server kills it at the call timeout) holds up
    neither the exit status nor stdout's EOF."""
    log_offset = len(server.log_text())
    started = time.monotonic()
    run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                      env={**_env(container_ns, cni_bin), **_via(server),
                           "PYCNI_TEST_LINGER": "60"},
                      run_in=host_ns, timeout=CALL_TIMEOUT + 15)
    elapsed = time.monotonic() - started
    worker = _wait_for_worker(server, log_offset)
    lingering = Path(f"/proc/{worker}").exists()
    assert (run.code, run.stderr) == (0, ""), run.stdout
    assert json.loads(run.stdout)["interfaces"][0]["name"] == "lo"
    assert elapsed < CALL_TIMEOUT, "the caller waited for the worker's exit"
    assert lingering
    assert server.alive()


def test_a_worker_lets_go_of_its_nftables_sockets_only_after_its_report(
    server: ServerProc, host_ns: str, container_ns: str, cni_bin: Path, tmp_path: Path
) -> None:
    """Closing a netfilter socket after a deletion waits for a grace period
    (``pycni.firewall.nftables.engine``): a bridge DEL's worker keeps its libnftables contexts
    open past its report, and lets go of them before it takes another call (the ADD's worker,
    back for the next call, holds none) or when it exits."""
    conflist = bridge_conflist(data_dir=tmp_path / "ipam", bridge="heldbr0")  # ipMasq on
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"],
            **conflist["plugins"][0]}
    env = {**_env(container_ns, cni_bin), **_via(server)}
    log_offset = len(server.log_text())
    added = exec_plugin(cni_bin / "bridge", command="ADD", config=conf, env=env, run_in=host_ns)
    assert added.code == 0, added.stdout
    adder = _wait_for_worker(server, log_offset)
    until("the ADD's contexts freed", lambda: netfilter_sockets(host_ns) == 0)
    assert Path(f"/proc/{adder}").exists()  # back for the next call
    log_offset = len(server.log_text())
    deleted = exec_plugin(cni_bin / "bridge", command="DEL", config=conf,
                          env={**env, "PYCNI_TEST_LINGER": "60"}, run_in=host_ns,
                          timeout=CALL_TIMEOUT + 15)
    worker = _wait_for_worker(server, log_offset)
    held = netfilter_sockets(host_ns)
    lingering = Path(f"/proc/{worker}").exists()
    assert (deleted.code, deleted.stdout) == (0, ""), deleted.stderr
    assert lingering  # it has reported and not exited yet (killed at the call timeout)
    assert held >= 2  # the masquerade read and deletion
    assert gone_within(worker, CALL_TIMEOUT + 10)
    assert netfilter_sockets(host_ns) == 0


@pytest.mark.parametrize("version", ["0.4.0", "1.1.0"])
def test_version_is_answered_by_the_server_itself(
    server: ServerProc, cni_bin: Path, version: str
) -> None:
    through = exec_plugin(cni_bin / "bridge", command="VERSION", config={"cniVersion": version},
                          env=_via(server))
    alone = exec_plugin(cni_bin / "bridge", command="VERSION", config={"cniVersion": version},
                        env=IN_PROCESS)
    assert (through.code, through.stdout) == (alone.code, alone.stdout)
    assert json.loads(through.stdout)["cniVersion"] == version
    assert "bridge VERSION from pid" not in server.log_text()  # no worker was given it
    assert "bridge VERSION (pid" in server.log_text()
    assert "answered in the server" in server.log_text()


def test_version_from_a_regular_file_stdin(server: ServerProc, cni_bin: Path,
                                            tmp_path: Path) -> None:
    conf = tmp_path / "conf.json"
    conf.write_text('{"cniVersion": "0.3.1"}')
    with conf.open("rb") as stdin:
        run = subprocess.run([str(cni_bin / "bridge")], stdin=stdin, capture_output=True,
                             env={"CNI_COMMAND": "VERSION", **_via(server)}, timeout=10,
                             check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["cniVersion"] == "0.3.1"


def test_version_whose_stdin_never_ends_times_out(server: ServerProc, cni_bin: Path) -> None:
    """The loop never blocks on a caller's stdin: the call times out with 999, others run."""
    read_end, write_end = os.pipe()
    try:
        started = time.monotonic()
        proc = subprocess.Popen([str(cni_bin / "bridge")], stdin=read_end,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"CNI_COMMAND": "VERSION", **_via(server)})
        os.close(read_end)
        _version_works(server, cni_bin)  # served meanwhile
        out, _ = proc.communicate(timeout=CALL_TIMEOUT + 10)
        elapsed = time.monotonic() - started
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    doc = json.loads(out)
    assert doc["code"] == 999
    assert "timed out" in doc["details"]
    assert CALL_TIMEOUT <= elapsed < CALL_TIMEOUT + 5
    assert server.alive()


def _idle_spares(server: ServerProc) -> set[int]:
    named = {int(pid) for pid in re.findall(r": worker pid (\d+)", server.log_text())}
    return set(server.workers()) - named


def test_a_spare_worker_waits_and_is_replaced_if_it_dies(
    server: ServerProc, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    deadline = time.monotonic() + 10
    while not _idle_spares(server):
        assert time.monotonic() < deadline, "no spare worker"
        time.sleep(0.02)
    spare = min(_idle_spares(server))
    os.kill(spare, signal.SIGKILL)
    while f"spare worker {spare} exited while idle" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.02)
    log_offset = len(server.log_text())
    run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                      env={**_env(container_ns, cni_bin), **_via(server)}, run_in=host_ns)
    assert run.code == 0, run.stderr
    assert _wait_for_worker(server, log_offset) != spare
    assert server.alive()


def _namespaces(pid: int) -> tuple[str, str]:
    return os.readlink(f"/proc/{pid}/ns/net"), os.readlink(f"/proc/{pid}/ns/mnt")


def _back(server: ServerProc, worker: int) -> None:
    """Until ``worker`` is in the server's namespaces again, waiting for its next call."""
    until(f"worker {worker} back", lambda: _namespaces(worker) == _namespaces(server.pid))


def test_a_worker_serves_the_next_call_from_where_it_started(
    server: ServerProc, host_ns: str, make_netns: object, cni_bin: Path
) -> None:
    """A worker whose call succeeded goes back to the server's namespaces and takes the next
    call (``pycni.warmfork.reuse``), which it runs in that caller's namespaces."""
    assert callable(make_netns)
    workers = []
    for i in range(3):
        container = make_netns(f"again{i}", lo_up=False)
        log_offset = len(server.log_text())
        run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                          env={**_env(container, cni_bin), **_via(server)}, run_in=host_ns)
        assert (run.code, run.stderr) == (0, ""), run.stdout
        assert run.json()["interfaces"][0]["sandbox"] == container
        workers.append(_wait_for_worker(server, log_offset))
        _back(server, workers[-1])
    assert workers[1] == workers[2] or workers[0] in workers[1:]


def test_a_failed_calls_worker_exits(server: ServerProc, host_ns: str, cni_bin: Path) -> None:
    log_offset = len(server.log_text())
    run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                      env={**_env(host_ns, cni_bin), **_via(server)}, run_in=host_ns)
    assert run.code == 1
    assert gone_within(_wait_for_worker(server, log_offset), 10)


def _most_at_once(log: str) -> int:
    """The most workers running calls at once, from the server's log (one thread writes it,
    in the order things happened)."""
    running = most = 0
    for started, _ in re.findall(r"(: worker pid \d+)|(\(pid \d+\): exit )", log):
        running += 1 if started else -1
        most = max(most, running)
    return most


def test_a_burst_is_served_by_a_few_workers(
    server: ServerProc, host_ns: str, container_ns: str, cni_bin: Path, tmp_path: Path
) -> None:
    """Calls that find every worker busy wait for one to be back rather than forking more:
    at most ``BUSY_WORKERS`` run, or the idle ones when a call takes them. Each call sleeps
    0.1 s first, so that without the wait they would all have run at once."""
    config = tmp_path / "lo.json"  # each stdin whole at once: no call waits on the test
    config.write_text(json.dumps(LO_CONFIG))
    log_offset = len(server.log_text())
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", **_env(container_ns, cni_bin),
           **_via(server), "PYCNI_TEST_SLEEP": "0.1"}
    with netns.enter(host_ns):
        procs = []
        for _ in range(BURST):
            with config.open("rb") as stdin:
                procs.append(subprocess.Popen([str(cni_bin / "loopback")], stdin=stdin,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              env=env))
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * BURST, outs
    log = server.log_text()[log_offset:]
    named = re.findall(r": worker pid (\d+)", log)
    assert len(named) == BURST
    assert _most_at_once(log) <= BUSY_WORKERS + SPARES, log
    assert len(set(named)) <= BUSY_WORKERS + SPARES + 2, log


def test_spares_copy_the_pages_calls_write_and_leave_the_rest_shared(
    tmp_path: Path, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    """A fresh server's spares copy nothing (no call has taught them); a spare forked after a
    call copies the pages that call wrote, in the idle class, and only those."""
    with _start_server(tmp_path / "run" / "pycni.sock", tmp_path / "server.log") as proc:
        first = _idle_spares_of(proc, SPARES, set())
        until("the first warm-ups done",
              lambda: all(sched_policy(pid) == os.SCHED_OTHER for pid in first))
        untaught = max(private_share(pid) for pid in first)
        run = exec_plugin(cni_bin / "loopback", command="ADD", config=LO_CONFIG,
                          env={**_env(container_ns, cni_bin), **_via(proc)}, run_in=host_ns)
        assert run.code == 0, run.stderr
        (worker,) = {int(p) for p in re.findall(r": worker pid (\d+)", proc.log_text())}
        _back(proc, worker)  # it taught the map before it came back
        os.kill(worker, signal.SIGKILL)  # its replacement is forked now
        (spare,) = _idle_spares_of(proc, 1, first)
        until("the warm-up done", lambda: private_share(spare) > untaught + 0.05
              and sched_policy(spare) == os.SCHED_OTHER)
        assert private_share(spare) < 0.6


def _idle_spares_of(server: ServerProc, count: int, not_these: set[int]) -> set[int]:
    deadline = time.monotonic() + 10
    while len(spares := _idle_spares(server) - not_these) < count:
        assert time.monotonic() < deadline, "no spare worker"
        time.sleep(0.02)
    assert len(spares) == count, spares
    return spares


def test_stopping_the_server_leaves_no_spare_behind(tmp_path: Path) -> None:
    with _start_server(tmp_path / "run" / "pycni.sock", tmp_path / "server.log") as proc:
        deadline = time.monotonic() + 10
        while not proc.workers():
            assert time.monotonic() < deadline, "no spare worker"
            time.sleep(0.02)
        children = proc.workers()
    for pid in children:  # gone, or a zombie about to be reaped by init
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            assert state == "Z", f"spare {pid} outlived the server"
