"""`loopback` and `none` through their installed executables and through `pycni`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from pycni.cni.version import SUPPORTED
from pycni.net import netns
from pycni.plugins._lo import LO_INDEX
from tests.support import CONF_DIR, exec_plugin, run_cli


def _lo_up(path: str) -> bool:
    with netns.enter(path), IPRoute() as ipr:
        (link,) = ipr.get_links(ipr.link_lookup(ifname="lo")[0])
        return bool(link["flags"] & 1)


def test_lo_is_ifindex_1_in_every_new_namespace(container_ns: str) -> None:
    """What ``pycni.plugins._lo`` relies on to skip looking lo up by name (the kernel's
    LOOPBACK_IFINDEX): a kernel that numbered it otherwise fails here first."""
    with netns.enter(container_ns), IPRoute() as ipr:
        assert ipr.link_lookup(ifname="lo") == [LO_INDEX]


def _env(container_ns: str, cni_bin: Path, **extra: str) -> dict[str, str]:
    return {
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": container_ns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(cni_bin),
        **extra,
    }


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("plugin", ["loopback", "none"])
def test_add_brings_lo_up_and_reports_it(
    plugin: str, version: str, host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    assert not _lo_up(container_ns)
    config = {"cniVersion": version, "name": "lonet", "type": plugin}
    run = exec_plugin(
        cni_bin / plugin,
        command="ADD",
        config=config,
        env=_env(container_ns, cni_bin),
        run_in=host_ns,
    )
    assert run.code == 0, run.stdout + run.stderr
    (result,) = run.documents()
    assert result["cniVersion"] == version
    assert result["interfaces"] == [
        {"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": container_ns}
    ]
    assert [ip["address"] for ip in result["ips"]] == ["127.0.0.1/8", "::1/128"]
    assert ("version" in result["ips"][0]) == version.startswith("0.")
    assert _lo_up(container_ns)
    if version >= "0.4.0":
        check = exec_plugin(
            cni_bin / plugin,
            command="CHECK",
            config={**config, "prevResult": result},
            env=_env(container_ns, cni_bin),
            run_in=host_ns,
        )
        assert (check.code, check.stdout) == (0, "")


def test_loopback_del_sets_lo_down_and_check_then_fails(
    host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    config = {"cniVersion": "1.1.0", "name": "lonet", "type": "loopback"}
    env = _env(container_ns, cni_bin)
    assert (
        exec_plugin(
            cni_bin / "loopback", command="ADD", config=config, env=env, run_in=host_ns
        ).code
        == 0
    )
    deleted = exec_plugin(
        cni_bin / "loopback", command="DEL", config=config, env=env, run_in=host_ns
    )
    assert (deleted.code, deleted.stdout) == (0, "")
    assert not _lo_up(container_ns)
    check = exec_plugin(
        cni_bin / "loopback", command="CHECK", config=config, env=env, run_in=host_ns
    )
    assert check.code == 1
    assert check.json()["code"] == 999
    assert "lo is not up" in check.json()["msg"]


def test_loopback_passes_prev_result_through(
    host_ns: str, container_ns: str, cni_bin: Path
) -> None:
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": container_ns}],
        "ips": [{"address": "10.9.0.2/24", "interface": 0}],
    }
    config = {"cniVersion": "1.0.0", "name": "lonet", "type": "loopback", "prevResult": prev}
    run = exec_plugin(
        cni_bin / "loopback",
        command="ADD",
        config=config,
        env=_env(container_ns, cni_bin),
        run_in=host_ns,
    )
    assert run.code == 0, run.stdout
    assert run.json() == prev


@pytest.mark.parametrize("plugin", ["loopback", "none"])
def test_del_succeeds_when_netns_is_gone(
    plugin: str, host_ns: str, make_netns: object, cni_bin: Path, tmp_path: Path
) -> None:
    gone = str(tmp_path / "gone-ns")
    config = {"cniVersion": "1.1.0", "name": "lonet", "type": plugin}
    for netns_value in (gone, ""):
        run = exec_plugin(
            cni_bin / plugin,
            command="DEL",
            config=config,
            env=_env(netns_value, cni_bin),
            run_in=host_ns,
        )
        assert (run.code, run.stdout) == (0, ""), run.stdout + run.stderr
    assert not os.path.exists(gone)  # DEL never conjures a namespace


@pytest.mark.parametrize("plugin", ["loopback", "none"])
def test_add_into_missing_netns_is_code_3(
    plugin: str, host_ns: str, cni_bin: Path, tmp_path: Path
) -> None:
    config = {"cniVersion": "1.1.0", "name": "lonet", "type": plugin}
    run = exec_plugin(
        cni_bin / plugin,
        command="ADD",
        config=config,
        env=_env(str(tmp_path / "missing"), cni_bin),
        run_in=host_ns,
    )
    assert run.code == 1
    (err,) = run.documents()
    assert err["code"] == 3
    assert err["cniVersion"] == "1.1.0"


def test_plugin_refuses_its_own_netns(host_ns: str, cni_bin: Path) -> None:
    config = {"cniVersion": "1.1.0", "name": "lonet", "type": "none"}
    run = exec_plugin(
        cni_bin / "none", command="ADD", config=config, env=_env(host_ns, cni_bin), run_in=host_ns
    )
    assert run.code == 1
    assert run.json()["code"] == 8


def _cli_args(verb: str, network: str, cni_bin: Path, cache_dir: Path, *rest: str) -> list[str]:
    return [
        verb,
        network,
        *rest,
        "--conf-dir",
        str(CONF_DIR),
        "--cni-path",
        str(cni_bin),
        "--cache-dir",
        str(cache_dir),
    ]


def test_cli_add_check_del_leaves_no_cache_entry(
    host_ns: str, container_ns: str, cni_bin: Path, cache_dir: Path
) -> None:
    add = run_cli(
        _cli_args("add", "none", cni_bin, cache_dir, container_ns, "--container-id", "c1"),
        run_in=host_ns,
    )
    assert add.code == 0, add.stdout + add.stderr
    assert add.json()["interfaces"][0]["sandbox"] == container_ns
    entry = cache_dir / "results" / "none-c1-eth0"
    assert entry.exists()
    check = run_cli(
        _cli_args("check", "none", cni_bin, cache_dir, container_ns, "--container-id", "c1"),
        run_in=host_ns,
    )
    assert check.code == 0, check.stdout + check.stderr
    delete = run_cli(
        _cli_args("del", "none", cni_bin, cache_dir, container_ns, "--container-id", "c1"),
        run_in=host_ns,
    )
    assert delete.code == 0, delete.stdout + delete.stderr
    assert list((cache_dir / "results").iterdir()) == []
    again = run_cli(
        _cli_args("del", "none", cni_bin, cache_dir, container_ns, "--container-id", "c1"),
        run_in=host_ns,
    )
    assert again.code == 0  # DEL is repeatable


def test_cli_check_without_add_fails_with_code_3(
    host_ns: str, container_ns: str, cni_bin: Path, cache_dir: Path
) -> None:
    run = run_cli(_cli_args("check", "none", cni_bin, cache_dir, container_ns), run_in=host_ns)
    assert run.code == 1
    assert run.json()["code"] == 3


def test_cli_gc_removes_attachments_not_in_valid_list(
    host_ns: str, make_netns: object, cni_bin: Path, cache_dir: Path
) -> None:
    assert callable(make_netns)
    keep, drop = make_netns("keep", lo_up=False), make_netns("drop", lo_up=False)
    for cid, path in (("keep", keep), ("drop", drop)):
        run = run_cli(
            _cli_args("add", "none", cni_bin, cache_dir, path, "--container-id", cid),
            run_in=host_ns,
        )
        assert run.code == 0, run.stdout + run.stderr
    gc = run_cli(
        _cli_args("gc", "none", cni_bin, cache_dir, "--valid", "keep:eth0"), run_in=host_ns
    )
    assert gc.code == 0, gc.stdout + gc.stderr
    assert sorted(p.name for p in (cache_dir / "results").iterdir()) == ["none-keep-eth0"]


def test_cli_status_and_unknown_network(host_ns: str, cni_bin: Path, cache_dir: Path) -> None:
    assert run_cli(_cli_args("status", "none", cni_bin, cache_dir), run_in=host_ns).code == 0
    missing = run_cli(_cli_args("status", "nosuchnet", cni_bin, cache_dir), run_in=host_ns)
    assert missing.code == 1
    assert missing.json()["code"] == 7
