"""`ps` rows, `inspect` documents and `-f` templates, from state alone."""

from __future__ import annotations

import pytest
from pycni_run import network, rootfs, views
from pycni_run.errors import RunError
from pycni_run.state import ContainerState, NetAttachment

RESULT = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "pycni0"},
        {"name": "eth0", "sandbox": "/run/netns/web"},
        {"name": "lo", "sandbox": "/run/netns/web"},
    ],
    "ips": [
        {"address": "10.99.0.1/16", "interface": 0},
        {"address": "10.99.0.5/16", "interface": 1, "gateway": "10.99.0.1"},
        {"address": "127.0.0.1/8", "interface": 2},
    ],
    "dns": {"nameservers": ["10.99.0.1"], "search": ["example"]},
}


def _exited() -> ContainerState:
    return ContainerState(
        name="web",
        id="b" * 64,
        image="busybox",
        command=["httpd", "-f"],
        status="exited",
        exit_code=3,
        networks=[NetAttachment(network="pycni", ifname="eth0", publishes=True, result=RESULT)],
        ports=[{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    )


def test_result_ips_are_the_containers_non_loopback_addresses() -> None:
    assert network.result_ips(RESULT) == ["10.99.0.5"]
    assert network.result_ips(None) == []
    assert network.result_nameservers([RESULT]) == (["10.99.0.1"], ["example"])


def test_every_networks_resolver_once_in_network_order() -> None:
    """Two networks with name resolution give 127.0.0.11 once and both search domains; a
    network without DNS in the result adds nothing."""
    front = {"dns": {"nameservers": ["127.0.0.11"], "search": ["front.test"]}}
    back = {"dns": {"nameservers": ["127.0.0.11", "10.0.0.53"], "search": ["back.test"]}}
    assert network.result_nameservers([None, front, {}, back]) == (
        ["127.0.0.11", "10.0.0.53"], ["front.test", "back.test"])


def test_ps_rows() -> None:
    rows = views.ps_rows([_exited()], all_=True)
    assert rows[1][:4] == ["web", "b" * 12, "-", "exited (3)"]
    assert rows[1][6] == "8080->80/tcp"
    assert views.ps_rows([_exited()], all_=False) == rows[:1]
    assert views.render_table(rows).splitlines()[0].startswith("NAME")


def test_inspect_and_templates() -> None:
    doc = views.inspect_doc(_exited())
    assert doc["State"] == {
        "Status": "exited",
        "Running": False,
        "Pid": 0,
        "ExitCode": 3,
        "StartedAt": "",
        "FinishedAt": "",
        "Error": "",
    }
    assert doc["NetworkSettings"]["IPAddress"] == "10.99.0.5"
    assert views.format_template(doc, "{{.State.ExitCode}} {{ .Name }}") == "3 web"
    with pytest.raises(RunError):
        views.format_template(doc, "{{.Nope}}")


def test_etc_files() -> None:
    assert "10.99.0.5\tweb" in rootfs.etc_hosts("web", ["10.99.0.5"])
    assert "127.0.1.1\tweb" in rootfs.etc_hosts("web", [])
    assert (
        rootfs.resolv_conf(["10.99.0.1"], ["example"]) == "nameserver 10.99.0.1\nsearch example\n"
    )


def test_resolv_conf_drops_loopback_resolvers(tmp_path: object) -> None:
    from pathlib import Path

    host = Path(str(tmp_path)) / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch lan\n")
    assert rootfs.resolv_conf([], host_file=str(host)) == "nameserver 192.0.2.1\nsearch lan\n"
    host.write_text("nameserver 127.0.0.1\n")
    assert "8.8.8.8" in rootfs.resolv_conf([], host_file=str(host))


def _result(ifname: str, cidr: str, gateway: str, mac: str) -> dict[str, object]:
    return {"cniVersion": "1.0.0",
            "interfaces": [{"name": "br"}, {"name": "veth"},
                           {"name": ifname, "mac": mac, "sandbox": "/run/netns/app"}],
            "ips": [{"address": cidr, "gateway": gateway, "interface": 2}]}


def _on_two_networks() -> ContainerState:
    front = _result("eth0", "10.100.7.5/24", "10.100.7.1", "02:00:00:00:00:05")
    back = _result("eth1", "10.100.8.9/24", "10.100.8.1", "02:00:00:00:00:09")
    return ContainerState(
        name="app", id="c" * 64, image="busybox", command=["sh"], status="running",
        networks=[NetAttachment(network="front", ifname="eth0", result=front, aliases=("www",)),
                  NetAttachment(network="back", ifname="eth1", default_route=False,
                                result=back)],
    )


def test_ps_and_inspect_show_every_network() -> None:
    st = _on_two_networks()
    row = views.ps_rows([st], all_=True)[1]
    assert row[4] == "front,back"
    settings = views.inspect_doc(st)["NetworkSettings"]
    assert (settings["Network"], settings["IPAddress"], settings["Gateway"]) == (
        "front", "10.100.7.5", "10.100.7.1")
    assert settings["IPAddresses"] == ["10.100.7.5", "10.100.8.9"]
    assert settings["Networks"]["back"] | {"CNIResult": None} == {
        "Interface": "eth1", "IPAddress": "10.100.8.9", "IPPrefixLen": 24,
        "Gateway": "10.100.8.1", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "IPv6Gateway": "", "MacAddress": "02:00:00:00:00:09", "Aliases": [],
        "DefaultRoute": False, "CNIResult": None}
    assert settings["Networks"]["front"]["Aliases"] == ["www"]


def test_state_keeps_every_attachment_and_reads_a_single_network_state() -> None:
    st = _on_two_networks()
    doc = st.to_dict()
    assert ContainerState.from_dict(doc).networks == st.networks
    assert (doc["network"], doc["cni_result"]) == ("front", st.networks[0].result)  # probe
    legacy = {k: v for k, v in doc.items() if k != "networks"}
    (only,) = ContainerState.from_dict(legacy).networks
    assert (only.network, only.ifname, only.result) == ("front", "eth0", st.networks[0].result)


def test_hosts_and_resolv_conf_take_the_dns_options(tmp_path: object) -> None:
    from pathlib import Path

    extra = [("db", "10.9.9.9"), ("gw", "10.100.7.1")]
    assert rootfs.etc_hosts("app", ["10.100.7.5"], extra).splitlines()[-2:] == [
        "10.9.9.9\tdb", "10.100.7.1\tgw"]
    host = Path(str(tmp_path)) / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\nsearch lan\noptions edns0\n")
    assert rootfs.resolv_conf([], ["corp.example"], ["ndots:2"], host_file=str(host)) == (
        "nameserver 192.0.2.1\nsearch corp.example\noptions ndots:2\n")
    assert rootfs.resolv_conf(["10.0.0.53"], ["."], host_file=str(host)) == (
        "nameserver 10.0.0.53\n")


def test_templates_reach_networks_named_with_dashes() -> None:
    """`inspect -f '{{.NetworkSettings.Networks.alpine-net.IPAddress}}'` (network names
    take '-'; Docker needs `index` for that, a plain path does here)."""
    st = _on_two_networks()
    st.networks[1] = NetAttachment(network="alpine-net", ifname="eth1",
                                   result=st.networks[1].result)
    doc = views.inspect_doc(st)
    assert views.format_template(doc, "{{.NetworkSettings.Networks.alpine-net.IPAddress}}") \
        == "10.100.8.9"
