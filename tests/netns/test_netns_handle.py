"""CNI_NETNS is opened once per plugin call, by skel: every layer under a plugin acts on that
descriptor. Plugins run in-process (``skel.run``) in a sandbox host netns while every path
lookup of the container's netns file (``os.open``, ``os.stat``, ``open``) is counted."""

from __future__ import annotations

import builtins
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import skel
from pycni.net import netns
from pycni.plugins import PLUGINS
from tests.e2e.bridge_support import ip_json, link_names

LOOKUPS = (
    (os, "open"),
    (os, "stat"),
    (os, "lstat"),
    (builtins, "open"),
)


@pytest.fixture
def lookups_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """``lookups_of(path)``: a list that records each lookup of ``path`` from now on."""

    def watch(path: str) -> list[str]:
        seen: list[str] = []
        for module, name in LOOKUPS:
            original = getattr(module, name)

            def counting(target: Any, *args: Any, _fn: Any = original, _name: str = name,
                         **kwargs: Any) -> Any:
                if isinstance(target, str | bytes | os.PathLike) and os.fsdecode(target) == path:
                    seen.append(_name)
                return _fn(target, *args, **kwargs)

            monkeypatch.setattr(module, name, counting)
        return seen

    return watch


def _call(name: str, command: str, conf: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    status = skel.run(PLUGINS[name], env={**env, "CNI_COMMAND": command},
                      stdin=io.BytesIO(json.dumps(conf).encode()), stdout=out, stderr=err)
    assert status == 0, (out.getvalue(), err.getvalue())
    return json.loads(out.getvalue()) if out.getvalue() else {}


@pytest.fixture
def env(container_ns: str, cni_bin: Path) -> dict[str, str]:
    return {"CNI_CONTAINERID": "handle1", "CNI_NETNS": container_ns, "CNI_IFNAME": "eth0",
            "CNI_PATH": str(cni_bin), "PATH": os.environ.get("PATH", "")}


@pytest.fixture
def in_host(host_ns: str) -> Iterator[None]:
    with netns.enter(host_ns):
        yield


def _bridge_conf(data_dir: Path) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": "handlenet", "type": "bridge", "bridge": "hndl0",
            "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.98.0.0/24"}]],
                     "dataDir": str(data_dir)}}


@pytest.mark.usefixtures("in_host")
def test_bridge_add_opens_the_netns_once(
    container_ns: str, host_ns: str, env: dict[str, str], tmp_path: Path,
    lookups_of: Callable[[str], list[str]],
) -> None:
    """Veth, addresses, routes and sysctls in the container, the IPAM delegate in-process:
    one open of CNI_NETNS in all (before: a stat and three opens)."""
    conf = _bridge_conf(tmp_path / "ipam")
    seen = lookups_of(container_ns)
    result = _call("bridge", "ADD", conf, env)
    assert seen == ["open"]
    assert result["ips"][0]["address"].startswith("10.98.0.")
    addresses = [a for link in ip_json(container_ns, "addr") for a in link["addr_info"]
                 if link["ifname"] == "eth0" and a["family"] == "inet"]
    assert [f"{a['local']}/{a['prefixlen']}" for a in addresses] == [result["ips"][0]["address"]]
    seen.clear()
    _call("bridge", "DEL", conf, env)
    assert seen == ["open"]
    assert "eth0" not in link_names(container_ns)
    assert not any(name.startswith("veth") for name in link_names(host_ns))


@pytest.mark.usefixtures("in_host")
@pytest.mark.parametrize("verb", ["ADD", "CHECK", "DEL"])
def test_loopback_opens_the_netns_once(
    container_ns: str, env: dict[str, str], verb: str, lookups_of: Callable[[str], list[str]]
) -> None:
    conf = {"cniVersion": "1.1.0", "name": "lo", "type": "loopback"}
    if verb != "ADD":
        _call("loopback", "ADD", conf, env)
    seen = lookups_of(container_ns)
    _call("loopback", verb, conf, env)
    assert seen == ["open"]


@pytest.mark.usefixtures("in_host")
def test_tuning_sysctls_are_written_through_the_one_handle(
    container_ns: str, env: dict[str, str], tmp_path: Path,
    lookups_of: Callable[[str], list[str]],
) -> None:
    """tuning checks, writes and (CHECK) reads sysctls inside the container netns."""
    _call("loopback", "ADD", {"cniVersion": "1.1.0", "name": "t", "type": "loopback"},
          {**env, "CNI_IFNAME": "lo"})
    key = "net.ipv4.conf.lo.accept_local"
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "lo", "sandbox": container_ns}]}
    conf = {"cniVersion": "1.1.0", "name": "t", "type": "tuning", "sysctl": {key: "1"},
            "dataDir": str(tmp_path / "tuning"), "prevResult": prev}
    seen = lookups_of(container_ns)
    _call("tuning", "ADD", conf, {**env, "CNI_IFNAME": "lo"})
    assert seen == ["open"]
    with netns.enter(container_ns), open("/proc/sys/net/ipv4/conf/lo/accept_local") as f:
        assert f.read().strip() == "1"
    with open("/proc/sys/net/ipv4/conf/lo/accept_local") as f:
        assert f.read().strip() == "0"  # the sandbox host's own lo is untouched


@pytest.mark.usefixtures("in_host")
@pytest.mark.parametrize("netns_value", ["", "missing"])
def test_del_without_a_netns_still_succeeds(
    env: dict[str, str], tmp_path: Path, netns_value: str
) -> None:
    """An empty CNI_NETNS (containerd's DEL) or one that is gone: DEL is still a success."""
    path = str(tmp_path / "gone") if netns_value else ""
    for name, conf in (("loopback", {"type": "loopback"}), ("bridge", _bridge_conf(tmp_path))):
        _call(name, "DEL", {"cniVersion": "1.1.0", "name": "n", **conf},
              {**env, "CNI_NETNS": path})
