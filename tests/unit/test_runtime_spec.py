"""pycni-run: option values and spec validation (no root, no kernel)."""

from __future__ import annotations

import os

import pytest
from pycni_run.errors import RunError
from pycni_run.spec import (
    ContainerSpec,
    Limits,
    NetMode,
    PortMapping,
    parse_cpus,
    parse_env,
    parse_memory,
    parse_net,
    parse_pids_limit,
    parse_port,
    validate_name,
    validate_spec,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("6m", 6 << 20),
        ("64M", 64 << 20),
        ("1g", 1 << 30),
        ("10000000", 10_000_000),
        ("8192k", 8 << 20),
        ("7340032b", 7 << 20),
    ],
)
def test_parse_memory(text: str, value: int) -> None:
    assert parse_memory(text) == value


@pytest.mark.parametrize(
    "text", ["5m", "1k", "", "lots", "-1m", "1.5g", "64mb", "8589934592g", "9" * 40]
)
def test_parse_memory_refuses(text: str) -> None:
    with pytest.raises(RunError) as err:
        parse_memory(text)
    assert err.value.code == 125


def test_parse_cpus_and_quota() -> None:
    assert parse_cpus("0.5") == 0.5
    assert Limits(cpus=1.5).cpu_quota_us == 150_000
    assert Limits().cpu_quota_us is None
    for bad in ("0", "-1", "x", str((os.cpu_count() or 1) + 1)):
        with pytest.raises(RunError):
            parse_cpus(bad)


def test_parse_pids_limit() -> None:
    assert parse_pids_limit("32") == 32
    assert parse_pids_limit("-1") is None
    assert parse_pids_limit("0") is None
    with pytest.raises(RunError):
        parse_pids_limit("many")
    with pytest.raises(RunError):
        parse_pids_limit("9" * 40)  # overflows the kernel's pids.max


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("bridge", NetMode("bridge")),
        ("default", NetMode("bridge")),
        ("none", NetMode("none")),
        ("host", NetMode("host")),
        ("container:web", NetMode("container", "web")),
    ],
)
def test_parse_net(text: str, mode: NetMode) -> None:
    assert parse_net(text) == mode


def test_net_modes_map_to_networks() -> None:
    assert [parse_net(m).network for m in ("bridge", "none", "host", "container:x")] == [
        "pycni",
        "none",
        "host",
        "container",
    ]
    assert parse_net("bridge").new_netns
    assert parse_net("none").new_netns
    assert not parse_net("host").new_netns
    assert not parse_net("container:x").new_netns
    assert str(parse_net("container:x")) == "container:x"


@pytest.mark.parametrize("text", ["macvlan", "container:", "container:bad/name", ""])
def test_parse_net_refuses(text: str) -> None:
    with pytest.raises(RunError):
        parse_net(text)


@pytest.mark.parametrize(
    ("text", "mapping"),
    [
        ("8080:80", PortMapping(host_port=8080, container_port=80)),
        ("53:53/udp", PortMapping(host_port=53, container_port=53, protocol="udp")),
        ("127.0.0.1:8080:80", PortMapping(host_port=8080, container_port=80, host_ip="127.0.0.1")),
        ("[::1]:8080:80/tcp", PortMapping(host_port=8080, container_port=80, host_ip="::1")),
    ],
)
def test_parse_port(text: str, mapping: PortMapping) -> None:
    assert parse_port(text) == mapping


def test_port_to_cni_capability() -> None:
    assert parse_port("127.0.0.1:8080:80/udp").to_cni() == {
        "hostPort": 8080,
        "containerPort": 80,
        "protocol": "udp",
        "hostIP": "127.0.0.1",
    }
    assert str(parse_port("8080:80")) == "8080->80/tcp"


@pytest.mark.parametrize(
    "text", ["80", "0:80", "8080:70000", "a:b", "8080:80/icmp", "x.y:1:2", "1:2:3:4"]
)
def test_parse_port_refuses(text: str) -> None:
    with pytest.raises(RunError):
        parse_port(text)


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=", "C"], {"C": "from-caller"}) == (
        ("A", "1"),
        ("B", ""),
        ("C", "from-caller"),
    )
    assert parse_env(["MISSING"], {}) == ()
    with pytest.raises(RunError):
        parse_env(["1BAD=x"], {})


@pytest.mark.parametrize("name", ["web", "a", "db-1.prod_x", "x" * 63])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a b", "x" * 64, "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(RunError):
        validate_name(name)


def _spec(**kw: object) -> ContainerSpec:
    base: dict[str, object] = {"name": "web", "id": "0" * 64, "command": ("true",)}
    base.update(kw)
    return ContainerSpec(**base)  # type: ignore[arg-type]


def test_validate_spec_accepts_the_defaults() -> None:
    validate_spec(_spec())
    validate_spec(_spec(ports=(parse_port("8080:80"),)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"command": ()}, "no command"),
        ({"workdir": "rel"}, "absolute"),
        ({"net": NetMode("container", "db"), "hostname": "x"}, "--hostname"),
        ({"net": NetMode("container", "web")}, "its own"),
        ({"net": NetMode("container", "db"), "ports": (parse_port("1:2"),)}, "-p"),
        ({"net": NetMode("host"), "ports": (parse_port("1:2"),)}, "-p"),
        ({"hostname": "a/b"}, "hostname"),
    ],
)
def test_validate_spec_refuses(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RunError, match=message) as err:
        validate_spec(_spec(**changes))
    assert err.value.code == 125
