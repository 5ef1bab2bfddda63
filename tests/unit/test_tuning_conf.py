"""`tuning` configuration: sysctl key refusal, IFNAME, precedence, values, backup paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest, Result
from pycni.net import netns
from pycni.plugins import tuning
from pycni.plugins.tuning import backup_path
from pycni.plugins.tuning_conf import (
    DEFAULT_DATA_DIR,
    LinkSettings,
    TuningConfig,
    parse_tuning_config,
    sysctl_path,
)


def args_for(
    config: dict[str, Any],
    *,
    ifname: str = "eth0",
    cni_args: dict[str, str] | None = None,
    version: str = "1.1.0",
) -> CmdArgs:
    doc = {"cniVersion": version, "name": "net", "type": "tuning", **config}
    return CmdArgs(
        command="ADD",
        container_id="c1",
        netns="/var/run/netns/c1",
        ifname=ifname,
        cni_args=cni_args or {},
        config=PluginRequest.from_dict(doc),
    )


def parse(config: dict[str, Any], **kw: Any) -> TuningConfig:
    return parse_tuning_config(args_for(config, **kw))


def refused(config: dict[str, Any], **kw: Any) -> CNIError:
    with pytest.raises(CNIError) as err:
        parse(config, **kw)
    return err.value


# ---------------------------------------------------------------------------- sysctl keys


@pytest.mark.parametrize(
    ("key", "ifname", "path"),
    [
        ("net.core.somaxconn", "eth0", "/proc/sys/net/core/somaxconn"),
        ("net/core/somaxconn", "eth0", "/proc/sys/net/core/somaxconn"),
        ("/proc/sys/net/core/somaxconn", "eth0", "/proc/sys/net/core/somaxconn"),
        ("net.ipv4.conf.IFNAME.arp_ignore", "eth0", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"),
        # only the first IFNAME is replaced, as in the reference
        ("net.ipv4.conf.IFNAME.IFNAME", "eth0", "/proc/sys/net/ipv4/conf/eth0/IFNAME"),
        # an interface name with a dot stays one component in both forms
        (
            "net.ipv4.conf.IFNAME.rp_filter",
            "eth0.100",
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
        ),
        (
            "net/ipv4/conf/IFNAME/rp_filter",
            "eth0.100",
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
        ),
    ],
)
def test_sysctl_path(key: str, ifname: str, path: str) -> None:
    assert sysctl_path(key, ifname) == path


@pytest.mark.parametrize(
    "key",
    [
        "kernel.hostname",
        "kernel/hostname",
        "vm.swappiness",
        "fs.file-max",
        "/proc/sys/kernel/hostname",
        "/etc/passwd",
        "net",
        "net.",
        "net..core",
        "net/../kernel/hostname",
        "net.core/../../kernel.hostname",
        "net/core/../../../etc/passwd",
        "../net/core/somaxconn",
        "/proc/sys/net/../kernel/hostname",
        "net.core.somaxconn\0",
        "",
        "netfilter.x",  # starts with "net" but is not under net/
    ],
)
def test_keys_outside_proc_sys_net_are_refused_with_code_7(key: str) -> None:
    with pytest.raises(CNIError) as err:
        sysctl_path(key, "eth0")
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    err2 = refused({"sysctl": {key: "1"}})
    assert err2.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "sysctl" in err2.msg


def test_ifname_cannot_smuggle_an_escape() -> None:
    # CNI_IFNAME is validated by skel ("/" is refused); a dotted ifname cannot add components
    assert sysctl_path("net.ipv4.conf.IFNAME.x", "..a") == "/proc/sys/net/ipv4/conf/..a/x"


def test_two_keys_for_one_sysctl_are_refused() -> None:
    err = refused({"sysctl": {"net.core.somaxconn": "1", "net/core/somaxconn": "2"}})
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "same sysctl" in err.details


@pytest.mark.parametrize("value", [1, True, None, ["1"], "1\0"])
def test_sysctl_values_must_be_strings(value: Any) -> None:
    err = refused({"sysctl": {"net.core.somaxconn": value}})
    assert err.msg == "invalid sysctl.net.core.somaxconn"


def test_sysctl_must_be_an_object() -> None:
    assert refused({"sysctl": ["net.core.somaxconn=1"]}).msg == "invalid sysctl"


def test_args_cni_sysctl_merges_over_the_config() -> None:
    conf = parse(
        {
            "sysctl": {"net.core.somaxconn": "100", "net.ipv4.conf.IFNAME.arp_ignore": "1"},
            "args": {"cni": {"sysctl": {"net.core.somaxconn": "200"}}},
        }
    )
    assert {(s.path, s.value) for s in conf.sysctls} == {
        ("/proc/sys/net/core/somaxconn", "200"),
        ("/proc/sys/net/ipv4/conf/eth0/arp_ignore", "1"),
    }


# ---------------------------------------------------------------------------- link settings


def test_nothing_configured_is_empty() -> None:
    conf = parse({})
    assert conf.empty
    assert conf.data_dir == DEFAULT_DATA_DIR
    assert not LinkSettings()


def test_link_settings() -> None:
    conf = parse(
        {"mac": "0E:00:00:00:00:01", "mtu": 1400, "promisc": True, "allmulti": False, "txQLen": 7}
    )
    assert conf.link == LinkSettings(
        mac="0e:00:00:00:00:01", mtu=1400, promisc=True, allmulti=False, txqlen=7
    )
    assert not conf.empty


def test_mac_sources_later_wins() -> None:
    def mac(config: dict[str, Any], cni_args: dict[str, str] | None = None) -> str | None:
        return parse(config, cni_args=cni_args).link.mac

    base = {"mac": "0e:00:00:00:00:01"}
    runtime = {"runtimeConfig": {"mac": "0e:00:00:00:00:03"}}
    args = {"args": {"cni": {"mac": "0e:00:00:00:00:04"}}}
    env = {"MAC": "0e:00:00:00:00:02"}
    assert mac(base) == "0e:00:00:00:00:01"
    assert mac(base, env) == "0e:00:00:00:00:02"
    assert mac({**base, **runtime}, env) == "0e:00:00:00:00:03"
    assert mac({**base, **runtime, **args}, env) == "0e:00:00:00:00:04"


def test_args_cni_overrides_link_values() -> None:
    conf = parse(
        {
            "mtu": 1400,
            "promisc": True,
            "args": {"cni": {"mtu": 1300, "promisc": False, "allmulti": True, "txQLen": 5}},
        }
    )
    assert conf.link == LinkSettings(mtu=1300, promisc=False, allmulti=True, txqlen=5)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"mac": "01:00:00:00:00:01"}, "mac"),  # multicast
        ({"mac": "00:00:00:00:00:00"}, "mac"),
        ({"mac": "0e:00:00:00:00"}, "mac"),
        ({"mac": 12}, "mac"),
        ({"runtimeConfig": {"mac": "zz:00:00:00:00:01"}}, "runtimeConfig.mac"),
        ({"args": {"cni": {"mac": "x"}}}, "args.cni.mac"),
        ({"mtu": 67}, "mtu"),
        ({"mtu": 65536}, "mtu"),
        ({"mtu": "1500"}, "mtu"),
        ({"mtu": True}, "mtu"),
        ({"args": {"cni": {"mtu": 0}}}, "args.cni.mtu"),
        ({"txQLen": -1}, "txQLen"),
        ({"txQLen": 2**32}, "txQLen"),
        ({"promisc": "yes"}, "promisc"),
        ({"allmulti": 1}, "allmulti"),
        ({"args": {"cni": {"allmulti": "on"}}}, "args.cni.allmulti"),
        ({"dataDir": "relative/dir"}, "dataDir"),
    ],
)
def test_bad_values_are_refused_with_code_7_naming_the_field(
    config: dict[str, Any], field: str
) -> None:
    err = refused(config)
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert err.msg == f"invalid {field}"


def test_bad_cni_args_mac_is_refused() -> None:
    err = refused({}, cni_args={"MAC": "nope"})
    assert err.msg == "invalid CNI_ARGS MAC"


def test_unknown_keys_are_refused_with_code_2() -> None:
    err = refused({"sysctls": {}})
    assert err.code == ErrorCode.UNSUPPORTED_FIELD
    assert "sysctls" in err.msg


# ---------------------------------------------------------------------------- backup paths


def test_backup_path_is_per_network_and_attachment() -> None:
    assert backup_path("/run/x", "net", "c1", "eth0") == "/run/x/net/c1_eth0.json"


@pytest.mark.parametrize(
    ("network", "cid", "ifname"),
    [("..", "c1", "eth0"), ("net", "../c1", "eth0"), ("net", "c1", "a/b"), ("a/b", "c", "e")],
)
def test_backup_path_refuses_names_that_could_escape(network: str, cid: str, ifname: str) -> None:
    with pytest.raises(CNIError):
        backup_path("/run/x", network, cid, ifname)


def test_backup_path_hashes_a_name_too_long_for_the_filesystem() -> None:
    path = Path(backup_path("/run/x", "net", "c" * 255, "eth0"))
    assert path.parent == Path("/run/x/net")
    assert len(path.name) <= 255
    assert path.suffix == ".json"


# ---------------------------------------------------------------------------- pass-through

PREV = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/var/run/netns/c1"}],
}


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("no kernel call expected")

    monkeypatch.setattr(tuning, "open_ipr", refuse)
    monkeypatch.setattr(netns, "enter", refuse)


@pytest.mark.usefixtures("no_kernel")
@pytest.mark.parametrize("version", ["0.3.1", "1.0.0", "1.1.0"])
def test_empty_config_passes_the_result_through(version: str) -> None:
    result = tuning.cmd_add(args_for({"prevResult": PREV}, version=version))
    assert result.to_dict() == Result.from_dict(PREV).to_dict(version)


@pytest.mark.usefixtures("no_kernel")
def test_add_without_prev_result_is_refused() -> None:
    with pytest.raises(CNIError) as err:
        tuning.cmd_add(args_for({"mtu": 1400}))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "chained" in err.value.msg


@pytest.mark.usefixtures("no_kernel")
def test_refused_sysctl_fails_before_any_kernel_call() -> None:
    with pytest.raises(CNIError) as err:
        tuning.cmd_add(args_for({"prevResult": PREV, "sysctl": {"kernel.hostname": "x"}}))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_gc_keeps_valid_backups_and_removes_the_rest(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    directory.mkdir()
    for name in ("a_eth0.json", "b_eth0.json", ".c_eth0.json.tmp"):
        (directory / name).write_text("{}")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b_eth0.json").write_text("{}")
    doc = {
        "cniVersion": "1.1.0",
        "name": "net",
        "type": "tuning",
        "dataDir": str(tmp_path),
        "cni.dev/valid-attachments": [
            {"containerID": "a", "ifname": "eth0"},
            {"containerID": "../x", "ifname": "eth0"},
        ],
    }
    tuning.cmd_gc(CmdArgs(command="GC", config=PluginRequest.from_dict(doc)))
    assert sorted(p.name for p in directory.iterdir()) == ["a_eth0.json"]
    assert (tmp_path / "other" / "b_eth0.json").exists()  # another network's: not ours to judge
