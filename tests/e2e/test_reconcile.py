"""`pycni reconcile` after `nft flush ruleset` in the sandbox host: rules and traffic come back.

Two containers on the default chain (masquerade, published ports, forward rules); the
sandbox host's ruleset is flushed, as a firewalld reload or nftables.service restart does;
then `pycni reconcile` runs in the sandbox host with the test's results cache. Every nft
element is back as it was, masqueraded traffic reaches the outside again, the published port
answers, a second reconcile changes nothing and DEL still leaves nothing behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pycni.cni.conf import find_conflist
from pycni.cni.errors import CNIError
from pycni.cni.types import Result
from pycni.net import netns
from tests.e2e.bridge_support import Sandbox, nsexec, ping
from tests.e2e.crash_support import capability_args, full_conflist, host_state, leaks
from tests.e2e.test_portmap import Serve, http_get, serve  # noqa: F401 - a fixture

OUTSIDE = "10.200.0.2"
HOST_IP = "10.200.0.1"


def _reconcile(sandbox: Sandbox) -> subprocess.CompletedProcess[str]:
    return nsexec(
        sandbox.host_ns, sys.executable, "-m", "pycni.cli", "reconcile",
        "--cache-dir", str(sandbox.cache_dir), timeout=60,
    )


def _elements(sandbox: Sandbox, hostports: Path) -> tuple[str, ...]:
    return host_state(sandbox, hostports).nft_elements


@pytest.fixture
def hostports(tmp_path: Path) -> Path:
    path = tmp_path / "hostports"
    path.mkdir()
    return path


def _http_ok(outside: str, port: int) -> bool:
    return http_get(outside, f"http://{HOST_IP}:{port}/") == "hello-a"


def test_reconcile_restores_flushed_rules(
    sandbox: Sandbox,
    hostports: Path,
    serve: Serve,  # noqa: F811 - the fixture imported above
    plugin_mode: str,
) -> None:
    sandbox.write_conf(full_conflist(sandbox, hostports))
    outside = sandbox.connect_outside()
    results = {cid: sandbox.add(cid, capability_args=capability_args(port))
               for cid, port in (("a", 8080), ("b", 8081))}
    assert all(isinstance(r, Result) for r in results.values())
    serve(sandbox.containers["a"], "http", 80, "hello-a")
    assert ping(sandbox.containers["a"], OUTSIDE)
    assert _http_ok(outside, 8080)
    before = _elements(sandbox, hostports)
    assert before

    flushed = nsexec(sandbox.host_ns, "nft", "flush", "ruleset")
    assert flushed.returncode == 0, flushed.stderr
    assert _elements(sandbox, hostports) == ()
    assert not ping(sandbox.containers["a"], OUTSIDE, wait=1)  # no masquerade: no answer

    run = _reconcile(sandbox)
    assert run.returncode == 0, run.stderr
    restored = run.stdout.splitlines()
    for cid in ("a", "b"):
        for what in ("masquerade", "portmap", "forward"):
            assert f"restored testnet/{cid}/eth0 {what}" in restored, run.stdout
    assert _elements(sandbox, hostports) == before
    assert ping(sandbox.containers["a"], OUTSIDE)
    assert _http_ok(outside, 8080)

    again = _reconcile(sandbox)  # idempotent
    assert again.returncode == 0, again.stderr
    assert _elements(sandbox, hostports) == before
    for cid, port in (("a", 8080), ("b", 8081)):
        sandbox.delete(cid, capability_args=capability_args(port))
    assert leaks(sandbox, hostports) == []


def test_reconcile_skips_an_add_in_progress(sandbox: Sandbox, hostports: Path) -> None:
    from pycni.cni import cache

    sandbox.write_conf(full_conflist(sandbox, hostports))
    conf = json.loads((sandbox.conf_dir / "10-test.conflist").read_text())
    cache.write(str(sandbox.cache_dir), cache.CachedAttachment(
        network="testnet", container_id="pending", ifname="eth0",
        config=json.dumps(conf).encode(), result=None))
    run = _reconcile(sandbox)
    assert run.returncode == 0, run.stderr
    assert "skipped testnet/pending/eth0" in run.stderr
    assert run.stdout == ""


def _status(sandbox: Sandbox) -> CNIError | None:
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    try:
        with netns.enter(sandbox.host_ns):
            sandbox.invoker().status(conf)
    except CNIError as err:
        return err
    return None


def test_status_reports_flushed_rules_until_reconcile(sandbox: Sandbox, hostports: Path) -> None:
    sandbox.write_conf(full_conflist(sandbox, hostports))
    sandbox.add("a", capability_args=capability_args(8080))
    assert _status(sandbox) is None
    flushed = nsexec(sandbox.host_ns, "nft", "flush", "ruleset")
    assert flushed.returncode == 0, flushed.stderr
    err = _status(sandbox)
    assert err is not None
    assert err.code == 51  # existing containers are cut off; new ADDs would still work
    assert "masquerade rules are missing" in err.msg  # bridge, the first plugin, says so
    assert "reconcile" in err.msg
    # Each plugin reports its own loss: portmap too, when asked on its own.
    portmap_only = full_conflist(sandbox, hostports)
    portmap_only["plugins"] = portmap_only["plugins"][1:2]
    sandbox.write_conf({**portmap_only, "name": "testnet"})
    err = _status(sandbox)
    assert err is not None
    assert err.code == 51
    assert "published ports are missing" in err.msg
    sandbox.write_conf(full_conflist(sandbox, hostports))
    run = _reconcile(sandbox)
    assert run.returncode == 0, run.stderr
    assert _status(sandbox) is None
