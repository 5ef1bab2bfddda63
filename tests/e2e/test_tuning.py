"""`tuning` end to end: the installed executable against a veth whose end is in a container
netns (and chained after `bridge`). Sysctls are read from /proc/sys inside each namespace;
link state through ``ip -j`` (the independent oracle)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pycni.cni.errors import CNIError
from pycni.cni.handle import open_netns_handle
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest
from pycni.net import netns
from pycni.net.ipr import open_ipr
from pycni.plugins import tuning
from tests.e2e.bridge_support import Sandbox, bridge_conflist, ip_json, link_names, ping
from tests.support import PluginRun, exec_plugin

ORIGINAL_MAC = "0a:00:00:00:00:01"
NEW_MAC = "0e:12:34:56:78:9a"


def read_sysctl(ns: str, key: str) -> str:
    with netns.enter(ns), open(f"/proc/sys/{key}", encoding="ascii") as f:
        return f.read().strip()


def root_sysctl(key: str) -> str:
    """Read-only look at the machine's own value (it must never change)."""
    with open(f"/proc/sys/{key}", encoding="ascii") as f:
        return f.read().strip()


def link(ns: str, dev: str = "eth0") -> dict[str, Any]:
    found: dict[str, Any] = ip_json(ns, "-d", "link", "show", "dev", dev)[0]
    return found


def state(ns: str) -> tuple[str, int, bool, bool, int]:
    entry = link(ns)
    flags = entry["flags"]
    return (
        entry["address"],
        entry["mtu"],
        "PROMISC" in flags,
        "ALLMULTI" in flags,
        entry["txqlen"],
    )


@pytest.fixture
def attached(host_ns: str, container_ns: str) -> str:
    """A veth: ``veth0`` in the sandbox host, ``eth0`` (up, known MAC) in the container."""
    fd = netns.open_netns(container_ns)
    try:
        with open_ipr(host_ns) as ipr:
            ipr.link(
                "add",
                ifname="veth0",
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": fd, "address": ORIGINAL_MAC},
            )
    finally:
        os.close(fd)
    with open_ipr(container_ns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], state="up")
    return container_ns


def prev_result(container: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "veth0", "mac": "0a:00:00:00:00:02"},
            {"name": "eth0", "mac": ORIGINAL_MAC, "mtu": 1500, "sandbox": container},
        ],
        "ips": [{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 1}],
    }


Call = Callable[..., PluginRun]


@pytest.fixture
def call(host_ns: str, attached: str, tmp_path: Path, cni_bin: Path) -> Call:
    """``call("ADD", mtu=1400)``: the installed executable, run from the sandbox host, for
    attachment c1/eth0 with ``dataDir`` under tmp_path and a prevResult naming ``attached``."""

    def run(command: str, **config: Any) -> PluginRun:
        doc = {
            "cniVersion": "1.1.0",
            "name": "testnet",
            "type": "tuning",
            "dataDir": str(tmp_path),
            "prevResult": prev_result(attached),
            **config,
        }
        env = {
            "CNI_CONTAINERID": "c1",
            "CNI_NETNS": attached,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(cni_bin),
        }
        return exec_plugin(cni_bin / "tuning", command=command, config=doc, env=env, run_in=host_ns)

    return run


def backups(data_dir: Path) -> list[str]:
    directory = data_dir / "testnet"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------------------- sysctls


def test_sysctls_are_written_inside_the_container_only(
    host_ns: str, attached: str, tmp_path: Path, call: Call
) -> None:
    host_before = read_sysctl(host_ns, "net/core/somaxconn")
    root_before = root_sysctl("net/core/somaxconn")
    out = call("ADD", sysctl={"net.core.somaxconn": "1234", "net.ipv4.conf.IFNAME.arp_ignore": "2"})
    assert out.code == 0, out.stdout + out.stderr
    assert read_sysctl(attached, "net/core/somaxconn") == "1234"
    assert read_sysctl(attached, "net/ipv4/conf/eth0/arp_ignore") == "2"
    assert read_sysctl(host_ns, "net/core/somaxconn") == host_before
    assert root_sysctl("net/core/somaxconn") == root_before
    assert out.json()["interfaces"][1]["mac"] == ORIGINAL_MAC  # no mac configured: unchanged
    assert backups(tmp_path) == []  # no link attribute changed: nothing to restore
    assert call("CHECK", sysctl={"net.core.somaxconn": "1234"}).code == 0
    check = call("CHECK", sysctl={"net.core.somaxconn": "99"})
    assert check.code != 0
    assert "sysctl net.core.somaxconn is '1234', expected '99'" in check.json()["details"]


@pytest.mark.parametrize(
    "key",
    [
        "kernel.domainname",  # not net.*
        "net/../kernel/domainname",  # an escape
        "net.core.rmem_max",  # host-wide: read-only inside a netns
        "net.ipv4.tcp_mem",  # host-wide: absent inside a netns
        "net.ipv4.conf.nosuch0.rp_filter",  # no such interface in the container
        "net.ipv4.conf.IFNAME.no_such_setting",
        "net.ipv4.conf.IFNAME.rp_filter=",  # not a key at all
    ],
)
def test_refused_keys_fail_with_code_7_and_change_nothing(
    attached: str, tmp_path: Path, key: str, call: Call
) -> None:
    before = (read_sysctl(attached, "net/core/somaxconn"), state(attached))
    root_domain = root_sysctl("kernel/domainname")
    out = call(
        "ADD", mac=NEW_MAC, mtu=1400, promisc=True, sysctl={"net.core.somaxconn": "1234", key: "7"}
    )
    assert out.code != 0
    error = out.json()
    assert error["code"] == 7, error
    assert key in error["msg"] or key in error.get("details", ""), error
    assert (read_sysctl(attached, "net/core/somaxconn"), state(attached)) == before
    assert root_sysctl("kernel/domainname") == root_domain
    assert backups(tmp_path) == []


def test_a_value_the_kernel_refuses_is_code_7_and_undoes_earlier_sysctls(
    attached: str, call: Call
) -> None:
    before = read_sysctl(attached, "net/core/somaxconn")
    out = call("ADD", sysctl={"net.core.somaxconn": "1234", "net.ipv4.conf.IFNAME.rp_filter": "x"})
    assert out.code != 0
    assert out.json()["code"] == 7
    assert out.json()["msg"] == "invalid sysctl.net.ipv4.conf.IFNAME.rp_filter"
    assert read_sysctl(attached, "net/core/somaxconn") == before


# ---------------------------------------------------------------------------- link attributes


def test_link_attributes_are_applied_reported_and_restored_on_del(
    host_ns: str, attached: str, tmp_path: Path, call: Call
) -> None:
    before = state(attached)
    out = call("ADD", mac=NEW_MAC, mtu=1400, promisc=True, allmulti=True, txQLen=77)
    assert out.code == 0, out.stdout + out.stderr
    assert state(attached) == (NEW_MAC, 1400, True, True, 77)
    assert link(host_ns, "veth0")["mtu"] == 1500  # the host end is not ours to change
    reported = out.json()["interfaces"]
    assert reported[1] == {"name": "eth0", "mac": NEW_MAC, "mtu": 1400, "sandbox": attached}
    assert reported[0]["mac"] == "0a:00:00:00:00:02"  # host-side interfaces untouched
    assert backups(tmp_path) == ["c1_eth0.json"]
    saved = json.loads((tmp_path / "testnet" / "c1_eth0.json").read_text())
    assert saved == {
        "ifName": "eth0",
        "mac": ORIGINAL_MAC,
        "mtu": 1500,
        "promisc": False,
        "allmulti": False,
        "txQLen": 1000,
    }
    check = call("CHECK", mac=NEW_MAC, mtu=1400, promisc=True, allmulti=True, txQLen=77)
    assert check.code == 0, check.stdout
    assert call("DEL").code == 0
    assert state(attached) == before
    assert backups(tmp_path) == []
    assert call("DEL").code == 0  # twice: nothing left to do


def test_check_reports_a_changed_link(attached: str, call: Call) -> None:
    assert call("ADD", mtu=1400).code == 0
    with open_ipr(attached) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], mtu=1300)
    check = call("CHECK", mtu=1400)
    assert check.code != 0
    assert "eth0 mtu is 1300, expected 1400" in check.json()["details"]


def test_a_second_add_keeps_the_first_originals(attached: str, call: Call) -> None:
    assert call("ADD", mtu=1400).code == 0
    assert call("ADD", mtu=1300, mac=NEW_MAC).code == 0
    assert call("DEL").code == 0
    assert state(attached)[:2] == (ORIGINAL_MAC, 1500)


def test_del_after_the_container_is_gone_removes_the_backup(
    attached: str, tmp_path: Path, call: Call
) -> None:
    assert call("ADD", mac=NEW_MAC).code == 0
    netns.remove(attached)
    out = call("DEL")
    assert out.code == 0, out.stdout + out.stderr
    assert backups(tmp_path) == []


def test_failed_add_rolls_back_sysctls_link_and_backup(
    host_ns: str, attached: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process with a failpoint on the last step: everything before it is undone."""

    def fail(*_: Any) -> None:
        raise CNIError(999, "failpoint")

    monkeypatch.setattr(tuning, "set_txqlen", fail)
    before = (read_sysctl(attached, "net/core/somaxconn"), state(attached))
    doc = {
        "cniVersion": "1.1.0",
        "name": "testnet",
        "type": "tuning",
        "dataDir": str(tmp_path),
        "prevResult": prev_result(attached),
        "sysctl": {"net.core.somaxconn": "1234"},
        "mac": NEW_MAC,
        "mtu": 1400,
        "promisc": True,
        "allmulti": True,
        "txQLen": 5,
    }
    handle = open_netns_handle(attached)  # what skel opens from CNI_NETNS
    args = CmdArgs(
        command="ADD",
        container_id="c1",
        netns=attached,
        netns_handle=handle,
        ifname="eth0",
        config=PluginRequest.from_dict(doc),
    )
    with closing(handle), netns.enter(host_ns), pytest.raises(CNIError, match="failpoint"):
        tuning.cmd_add(args)
    assert (read_sysctl(attached, "net/core/somaxconn"), state(attached)) == before
    assert backups(tmp_path) == []


# ---------------------------------------------------------------------------- chained


def test_chained_after_bridge_with_the_mac_capability(sandbox: Sandbox, tmp_path: Path) -> None:
    conf = bridge_conflist(data_dir=sandbox.data_dir)
    conf["plugins"].append(
        {
            "type": "tuning",
            "capabilities": {"mac": True},
            "dataDir": str(tmp_path),
            "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"},
        }
    )
    sandbox.write_conf(conf)
    result = sandbox.add("a", capability_args={"mac": NEW_MAC})
    container = sandbox.containers["a"]
    assert result.interfaces[2].name == "eth0"
    assert result.interfaces[2].mac == NEW_MAC
    assert link(container)["address"] == NEW_MAC
    assert read_sysctl(container, "net/ipv4/conf/eth0/arp_notify") == "1"
    assert ping(container, "10.99.0.1")  # the new MAC works on the bridge
    sandbox.check("a")
    sandbox.add("b", capability_args={"mac": "0e:00:00:00:00:0b"})
    assert sorted(backups(tmp_path)) == ["a_eth0.json", "b_eth0.json"]
    (sandbox.cache_dir / "results" / "testnet-b-eth0").unlink()  # the runtime forgot b
    from pycni.cni.conf import find_conflist

    with netns.enter(sandbox.host_ns):
        sandbox.invoker().gc(find_conflist(str(sandbox.conf_dir), "testnet"), [("a", "eth0")])
    assert backups(tmp_path) == ["a_eth0.json"]
    sandbox.delete("a")
    assert backups(tmp_path) == []
    assert "eth0" not in link_names(container)  # the DEL chain went on to bridge
