"""TARGET resolution (container state, netns names, paths + the results cache) and what is
read from a CNI result: no namespaces needed, the files stand in for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import cache
from pycni.probe import ProbeError, resolve_target
from pycni.probe.target import published_destinations, result_addresses, result_gateway

RESULT: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "pycni0", "mac": "02:00:00:00:00:01"},
        {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/web"},
        {"name": "lo", "sandbox": "/run/netns/web"},
    ],
    "ips": [
        {"interface": 0, "address": "10.99.0.1/16"},
        {"interface": 1, "address": "10.99.0.5/16", "gateway": "10.99.0.1"},
        {"interface": 2, "address": "127.0.0.1/8"},
        {"interface": 1, "address": "fd00::5/64", "gateway": "fd00::1"},
    ],
}


def _state(state_dir: Path, name: str, **doc: Any) -> None:
    directory = state_dir / "containers" / name
    directory.mkdir(parents=True)
    (directory / "state.json").write_text(json.dumps({"name": name, **doc}))


def test_a_container_name_reads_the_runtime_state(tmp_path: Path) -> None:
    pin = tmp_path / "web.ns"
    pin.touch()
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    _state(tmp_path, "web", netns_path=str(pin), cni_result=RESULT, ports=ports, network="pycni")
    target = resolve_target("web", state_dir=str(tmp_path), netns_dir=str(tmp_path / "none"))
    assert (target.kind, target.netns_path, target.network) == ("container", str(pin), "pycni")
    assert target.result == RESULT
    assert target.ports == tuple(ports)


def test_container_mode_inherits_the_owners_published_ports(tmp_path: Path) -> None:
    ports = [{"hostPort": 8080, "containerPort": 80}]
    _state(tmp_path, "web", netns_path="/run/netns/web", ports=ports)
    _state(tmp_path, "side", netns_path="/run/netns/side", net_mode="container:web")
    target = resolve_target("side", state_dir=str(tmp_path))
    assert target.ports == tuple(ports)
    assert target.netns_path == "/run/netns/side"


def test_a_stopped_container_has_no_namespace(tmp_path: Path) -> None:
    _state(tmp_path, "gone", status="exited", pid={"pid": 0, "start": 0})
    with pytest.raises(ProbeError, match="is it running"):
        resolve_target("gone", state_dir=str(tmp_path))


def test_a_netns_name_and_a_path_find_their_cached_attachment(tmp_path: Path) -> None:
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    pinned = netns_dir / "blue"
    pinned.touch()
    alias = tmp_path / "alias"
    alias.hardlink_to(pinned)  # another name for the same "namespace" (same inode)
    cache_dir = str(tmp_path / "cache")
    maps = [{"hostPort": 9000, "containerPort": 90, "protocol": "udp"}]
    for network, netns_path, result, cap in (
        ("aaa-shared", str(alias), {"cniVersion": "1.1.0"}, {}),
        ("pycni", str(pinned), RESULT, {"portMappings": maps}),
    ):
        cache.write(
            cache_dir,
            cache.CachedAttachment(
                network=network,
                container_id="c1",
                ifname="eth0",
                netns=netns_path,
                result=result,
                capability_args=cap,
            ),
        )
    by_name = resolve_target(
        "blue", state_dir=str(tmp_path / "state"), netns_dir=str(netns_dir), cache_dir=cache_dir
    )
    assert (by_name.kind, by_name.netns_path, by_name.network) == ("netns", str(pinned), "pycni")
    assert by_name.ports == tuple(maps)
    by_alias = resolve_target(str(alias), cache_dir=cache_dir)
    assert (by_alias.kind, by_alias.network) == ("path", "aaa-shared")  # its own entry first
    assert by_alias.ports == tuple(maps)  # but the namespace's published ports are shared
    bare = resolve_target(str(alias), cache_dir=str(tmp_path / "empty"))
    assert (bare.result, bare.ports) == (None, ())


def test_unknown_targets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="no container or network namespace named 'x'"):
        resolve_target("x", state_dir=str(tmp_path), netns_dir=str(tmp_path))
    with pytest.raises(ProbeError, match="no such network namespace"):
        resolve_target(str(tmp_path / "missing"))
    with pytest.raises(ProbeError, match="empty"):
        resolve_target("")


def test_result_addresses_and_gateways_are_the_containers_own() -> None:
    assert result_addresses(RESULT) == ["10.99.0.5/16", "fd00::5/64"]
    assert result_gateway(RESULT) == "10.99.0.1"
    assert result_gateway(RESULT, 6) == "fd00::1"
    assert result_gateway(None) is None
    assert result_gateway({"ips": [{"address": "10.0.0.2/24"}]}) is None


def test_published_ports_are_probed_through_the_host() -> None:
    ports: list[dict[str, Any]] = [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5300, "containerPort": 53, "protocol": "udp", "hostIP": "10.200.0.1"},
        {"hostPort": 8081, "containerPort": 81, "hostIP": "0.0.0.0"},
        {"hostPort": 8082, "containerPort": 82, "hostIP": "127.0.0.1"},  # not reachable
        {"hostPort": 8083, "containerPort": 83, "protocol": "sctp"},
        {"hostPort": "x"},
        {"hostPort": 8084, "containerPort": 84, "hostIP": "bogus"},
    ]
    got = [(d.label(), d.origin) for d in published_destinations(ports, "10.99.0.1")]
    assert got == [
        ("10.99.0.1:8080/tcp", "published 8080->80/tcp"),
        ("10.200.0.1:5300/udp", "published 5300->53/udp"),
        ("10.99.0.1:8081/tcp", "published 8081->81/tcp"),
    ]
    assert [d.label() for d in published_destinations(ports, None)] == ["10.200.0.1:5300/udp"]
