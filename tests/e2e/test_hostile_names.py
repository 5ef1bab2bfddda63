"""Hostile names through the installed executables (in-process and via the fork server), in a
sandbox host: refused with the spec's code, and nothing appears on disk (the test's private
dirs, the plugin's own dataDir) or in the sandbox host's links and nft ruleset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.bridge_support import Sandbox, link_names, nsexec
from tests.support import PluginRun, exec_plugin

HOSTILE = ["..", "../../etc", "a/b", "x" * 256, "a\nb", "-rf"]
HOSTILE_IFNAMES = ["..", "a/b", "x" * 16, "a b", "a:b"]
HOSTILE_DATA_DIRS = ["relative", "{tmp}/a/../../escape", "/" + "x" * 300]


def _conf(
    sandbox: Sandbox, *, name: str = "testnet", data_dir: str | None = None
) -> dict[str, Any]:
    ipam = {"type": "host-local", "subnet": "10.98.0.0/24",
            "dataDir": data_dir or str(sandbox.data_dir)}
    return {"cniVersion": "1.1.0", "name": name, "type": "bridge", "bridge": "hostile0",
            "isGateway": True, "ipMasq": True, "ipam": ipam}


def _env(sandbox: Sandbox, cid: str = "c1", ifname: str = "eth0") -> dict[str, str]:
    return {"CNI_CONTAINERID": cid, "CNI_NETNS": sandbox.runtime_conf("c1").netns,
            "CNI_IFNAME": ifname, "CNI_PATH": str(sandbox.bin_dir)}


def _kernel(sandbox: Sandbox) -> tuple[frozenset[str], str]:
    ruleset = nsexec(sandbox.host_ns, "nft", "list", "ruleset").stdout
    return frozenset(link_names(sandbox.host_ns)), ruleset


def _refused(sandbox: Sandbox, run: PluginRun, code: int, before: Any) -> None:
    assert run.code == 1, run
    (doc,) = run.documents()
    assert isinstance(doc, dict)
    assert doc["code"] == code, doc
    assert "Traceback" not in run.stdout
    assert list(sandbox.data_dir.iterdir()) == []
    assert _kernel(sandbox) == before


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_container_id_and_network(sandbox: Sandbox, plugin_mode: str, value: str) -> None:
    before = _kernel(sandbox)
    bridge = sandbox.bin_dir / "bridge"
    for verb in ("ADD", "DEL"):
        run = exec_plugin(bridge, command=verb, config=_conf(sandbox),
                          env=_env(sandbox, cid=value), run_in=sandbox.host_ns)
        _refused(sandbox, run, 4, before)
        run = exec_plugin(bridge, command=verb, config=_conf(sandbox, name=value),
                          env=_env(sandbox), run_in=sandbox.host_ns)
        _refused(sandbox, run, 7, before)


@pytest.mark.parametrize("value", HOSTILE_IFNAMES)
def test_hostile_ifname(sandbox: Sandbox, plugin_mode: str, value: str) -> None:
    before = _kernel(sandbox)
    run = exec_plugin(sandbox.bin_dir / "bridge", command="ADD", config=_conf(sandbox),
                      env=_env(sandbox, ifname=value), run_in=sandbox.host_ns)
    _refused(sandbox, run, 4, before)
    assert "hostile0" not in link_names(sandbox.host_ns)


@pytest.mark.parametrize("value", HOSTILE_DATA_DIRS)
def test_hostile_ipam_data_dir(sandbox: Sandbox, plugin_mode: str, value: str,
                               tmp_path: Path) -> None:
    """Before the fix, "<dir>/a/../../escape" made <dir>/a and a network dir two levels up."""
    before = _kernel(sandbox)
    inside = tmp_path / "inside"
    inside.mkdir()
    listing = sorted(os.listdir(tmp_path))
    data_dir = value.format(tmp=inside)
    run = exec_plugin(sandbox.bin_dir / "host-local", command="ADD",
                      config=_conf(sandbox, data_dir=data_dir), env=_env(sandbox),
                      run_in=sandbox.host_ns)
    _refused(sandbox, run, 7, before)
    assert sorted(os.listdir(tmp_path)) == listing
    assert list(inside.iterdir()) == []
