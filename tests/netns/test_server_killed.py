"""`pycni serve` killed in the middle of a call: no plugin work after the caller was told.

The caller (a runtime) gets 999 when the server dies, and rolls its ADD back with a DEL. The
worker that was running the ADD must not go on behind that DEL's back: it dies with the
server (its parent-death signal), and the launcher reports only once it is gone (the ACK
gave it the worker's pidfd). Before, the worker finished the ADD after the DEL: a second JSON
document on the caller's stdout, and a veth, an address and masquerade nobody would DEL.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
from pathlib import Path
from typing import IO

from pycni.net import netns
from tests.e2e.bridge_support import Sandbox, bridge_conflist, link_names
from tests.netns.test_server import _start_server
from tests.support import AUTOSTART_OFF, PluginRun, exec_plugin

SLEEP = 20.0  # the worker's nap mid-ADD: the old worker woke up from it and finished the ADD


def _await_failpoint(stderr: IO[bytes]) -> int:
    """The pid of the process that reached the sleeping failpoint (it says so on stderr)."""
    lines = []
    for line in iter(stderr.readline, b""):
        lines.append(line)
        found = re.search(rb"failpoint bridge\.add\.after_veth: sleeping \S+ s pid (\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"the ADD never reached its failpoint: {b''.join(lines)!r}")


def _gone(pidfd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def test_a_server_killed_mid_add_leaves_nothing_after_the_callers_rollback(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    conf = bridge_conflist(data_dir=sandbox.data_dir)
    stdin = json.dumps({**conf["plugins"][0], "name": conf["name"],
                        "cniVersion": conf["cniVersion"]}).encode()
    container = sandbox.make_netns("c1", lo_up=False)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **AUTOSTART_OFF, "CNI_CONTAINERID": "c1",
           "CNI_NETNS": container, "CNI_IFNAME": "eth0", "CNI_PATH": str(sandbox.bin_dir)}
    with _start_server(tmp_path / "run" / "pycni.sock", tmp_path / "server.log") as server:
        with netns.enter(sandbox.host_ns):
            add = subprocess.Popen(
                [str(sandbox.bin_dir / "bridge")], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**env, "CNI_COMMAND": "ADD", "PYCNI_SOCKET": str(server.socket),
                     "PYCNI_FAILPOINTS": f"bridge.add.after_veth=sleep:{SLEEP}"})
        try:
            assert add.stdin is not None
            assert add.stdout is not None
            assert add.stderr is not None
            add.stdin.write(stdin)
            add.stdin.close()
            worker = os.pidfd_open(_await_failpoint(add.stderr))
            os.kill(server.pid, signal.SIGKILL)  # mid-ADD: IP reserved, veth made
            assert add.wait(timeout=60) == 1
            rollback = exec_plugin(sandbox.bin_dir / "bridge", command="DEL", config=stdin,
                                   env={**env, "PYCNI_NO_SERVER": "1"}, run_in=sandbox.host_ns)
            assert rollback.code == 0, rollback.stdout + rollback.stderr
            assert _gone(worker, SLEEP + 30), "the worker outlived its server"
            out = add.stdout.read().decode()  # EOF: the last holder of the caller's stdout
        finally:
            if add.poll() is None:
                add.kill()
                add.wait()
    (doc,) = PluginRun(1, out, "").documents()
    assert doc["code"] == 999
    assert sandbox.host_veths() == set()
    assert sandbox.allocations() == []
    assert "eth0" not in link_names(container)
    assert "10.99.0." not in sandbox.nft_ruleset()
    os.close(worker)
