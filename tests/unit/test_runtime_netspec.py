"""pycni-run's network options: --network (repeatable, long form), --ip and friends on the
first network, -p ranges, --dns* and --add-host; all refused cleanly when wrong."""

from __future__ import annotations

import pytest
from pycni_run import cli
from pycni_run.errors import RunError
from pycni_run.netspec import parse_connect, parse_dns_options, parse_networks
from pycni_run.spec import ContainerSpec, NetMode, NetworkRequest, PortMapping, parse_publish


def _spec(*argv: str) -> ContainerSpec:
    return cli.build_spec(*cli.parse_run_args([*argv, "busybox", "true"]))


def test_networks_in_order_with_the_first_ones_options() -> None:
    spec = _spec("--network", "front", "--net", "back", "--ip", "10.1.0.5", "--ip6",
                 "fd00::5", "--mac-address", "02:AA:00:00:00:01", "--network-alias", "www")
    assert spec.net == NetMode("bridge")
    assert spec.requested_networks == (
        NetworkRequest(name="front", ips=("10.1.0.5", "fd00::5"), mac="02:aa:00:00:00:01",
                       aliases=("www",)),
        NetworkRequest(name="back"),
    )


def test_long_form_sets_per_network_options() -> None:
    mode, nets = parse_networks(
        ["bridge", "name=back,ip=10.2.0.9,alias=db,alias=store,mac-address=02:00:00:00:00:09"])
    assert mode == NetMode("bridge")
    assert nets == (NetworkRequest(name="pycni"),
                    NetworkRequest(name="back", ips=("10.2.0.9",), mac="02:00:00:00:00:09",
                                   aliases=("db", "store")))


def test_modes_are_unchanged_and_default_is_the_pycni_network() -> None:
    assert _spec().requested_networks == (NetworkRequest(name="pycni"),)
    assert _spec("--net=bridge").requested_networks == (NetworkRequest(name="pycni"),)
    for mode in ("none", "host"):
        spec = _spec(f"--net={mode}")
        assert (spec.net, spec.requested_networks) == (NetMode(mode),
                                                       (NetworkRequest(name=mode),))
    spec = _spec("--net=container:web")
    assert spec.requested_networks == (NetworkRequest(name="container"),)


@pytest.mark.parametrize(("argv", "message"), [
    (["--net=host", "--net=front"], "cannot be combined"),
    (["--net=none", "--ip", "10.1.0.5"], "need a CNI network"),
    (["--net=front", "--net=front"], "more than once"),
    (["--net=bridge", "--net=default"], "more than once"),
    (["--net=front", "--ip", "fd00::1"], "not an IPv4"),
    (["--net=front", "--ip6", "10.0.0.1"], "not an IPv6"),
    (["--net=name=front,ip=10.1.0.4", "--ip", "10.1.0.5"], "conflicting options: --ip"),
    (["--net=name=front,ip=10.1.0.4,ip=10.1.0.5"], "given twice"),
    (["--net=name=front,driver-opt=x=y"], "not supported"),
    (["--net=name=front,speed=fast"], "use name=NET"),
    (["--net=ip=10.1.0.4"], "name=NET is missing"),
    (["--net=name=host,ip=10.1.0.4"], "need a CNI network"),
    (["--net=bad/name"], "invalid --network"),
    (["--mac-address", "03:00:00:00:00:01"], "multicast"),
    (["--mac-address", "02:00:00"], "six hex pairs"),
    (["--network-alias", "a b"], "invalid network alias"),
])
def test_network_options_refused(argv: list[str], message: str) -> None:
    with pytest.raises(RunError, match=message) as err:
        _spec(*argv)
    assert err.value.code == 125


def test_port_ranges_pair_up() -> None:
    assert parse_publish("127.0.0.1:8000-8002:80-82/udp") == tuple(
        PortMapping(host_port=8000 + i, container_port=80 + i, protocol="udp",
                    host_ip="127.0.0.1") for i in range(3))
    assert len(_spec("-p", "9000-9009:9000-9009", "-p", "8080:80").ports) == 11


@pytest.mark.parametrize(("text", "message"), [
    ("8000-8010:80", "any free port of the range"),
    ("8000-8002:80-81", "equal length"),
    ("8000:80-81", "equal length"),
    ("8002-8000:80-82", "below the start"),
    ("8000-:80", "host port"),
])
def test_port_ranges_refused(text: str, message: str) -> None:
    with pytest.raises(RunError, match=message):
        parse_publish(text)


def test_one_host_port_published_twice_is_refused() -> None:
    with pytest.raises(RunError, match="twice"):
        _spec("-p", "8000-8001:80-81", "-p", "8001:90")


def test_dns_options_and_extra_hosts() -> None:
    spec = _spec("--dns", "10.0.0.53", "--dns-search", "corp.example", "--dns-option",
                 "ndots:2", "--add-host", "db:10.9.9.9", "--add-host", "gw:host-gateway",
                 "--add-host", "six:::1")
    assert spec.dns.servers == ("10.0.0.53",)
    assert (spec.dns.search, spec.dns.options) == (("corp.example",), ("ndots:2",))
    assert spec.dns.extra_hosts == (("db", "10.9.9.9"), ("gw", "host-gateway"), ("six", "::1"))


@pytest.mark.parametrize(("argv", "message"), [
    (["--dns", "resolver"], "invalid --dns"),
    (["--dns-search", "a b"], "invalid --dns-search"),
    (["--add-host", "db"], "NAME:IP"),
    (["--add-host", "db:nowhere"], "not an IP address"),
    (["--net=container:web", "--add-host", "db:10.0.0.1"], "container:NAME"),
    (["--net=host", "--dns", "10.0.0.53"], "--net=host"),
    (["--net=none", "--add-host", "gw:host-gateway"], "needs a network with a gateway"),
])
def test_dns_options_refused(argv: list[str], message: str) -> None:
    with pytest.raises(RunError, match=message):
        _spec(*argv)


def test_connect_requests() -> None:
    assert parse_connect("back", ip="10.2.0.9", aliases=["db"]) == NetworkRequest(
        name="back", ips=("10.2.0.9",), aliases=("db",))
    assert parse_connect("bridge") == NetworkRequest(name="pycni")
    for bad in ("host", "container:web", "name=back,ip=10.2.0.9"):
        with pytest.raises(RunError):
            parse_connect(bad)
    assert parse_dns_options().extra_hosts == ()
