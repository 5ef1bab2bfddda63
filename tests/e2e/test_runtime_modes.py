"""pycni-run's four network modes, as seen from inside the container and from the sandbox host."""

from __future__ import annotations

import ipaddress
import json

from tests.e2e.runtime_support import (
    RuntimeSandbox,
)


def _links(output: str) -> dict[str, list[str]]:
    """busybox `ip -o addr` -> {ifname: [cidr, ...]} (interfaces without addresses included)."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        name = words[1].rstrip(":").split("@")[0]
        found.setdefault(name, [])
        if words[2] in ("inet", "inet6"):
            found[name].append(words[3])
    return found


def test_bridge_gets_eth0_with_an_ip_from_the_pycni_network(box: RuntimeSandbox) -> None:
    out = box.ok("run", "--rm", "busybox", "sh", "-c", "ip -o link; ip -o addr")
    links = _links(out)
    assert set(links) == {"lo", "eth0"}
    v4 = [c for c in links["eth0"] if ":" not in c]
    assert len(v4) == 1
    assert ipaddress.ip_interface(v4[0]) in ipaddress.ip_network("10.99.0.0/16")
    assert "eth0@if" in out  # a veth


def test_bridge_default_route_via_the_gateway(box: RuntimeSandbox) -> None:
    out = box.ok("run", "--rm", "busybox", "ip", "route")
    assert "default via 10.99.0.1 dev eth0" in out


def test_none_has_only_loopback_up(box: RuntimeSandbox) -> None:
    out = box.ok("run", "--rm", "--net=none", "busybox", "sh", "-c", "ip -o link; ip -o addr")
    links = _links(out)
    assert set(links) == {"lo"}
    assert "127.0.0.1/8" in links["lo"]
    assert "UP" in out.splitlines()[0]


def test_host_sees_the_sandbox_hosts_interfaces(box: RuntimeSandbox) -> None:
    made = box.sh("ip", "link", "add", "pycnitest0", "type", "veth", "peer", "name", "pycnitest1")
    assert made.code == 0, made.stderr
    host = {link["ifname"] for link in box.ip_json("link")}
    out = box.ok("run", "--rm", "--net=host", "busybox", "ip", "-o", "link")
    assert set(_links(out)) == host
    assert "pycnitest0" in host


def test_host_mode_records_the_host_interfaces_in_the_cni_result(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "h", "--net=host", "busybox", "sleep", "60")
    result = box.inspect("h")["NetworkSettings"]["CNIResult"]
    assert {i["name"] for i in result["interfaces"]} == {
        link["ifname"] for link in box.ip_json("link")
    }
    assert box.inspect("h")["Namespaces"]["net"]["shared_with_host"] is True
    box.ok("rm", "-f", "h")


def test_container_mode_shares_the_peers_netns(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "peer", "busybox", "sleep", "60")
    peer = box.inspect("peer")
    out = box.ok(
        "run",
        "--rm",
        "--net=container:peer",
        "busybox",
        "sh",
        "-c",
        "ip -o addr; readlink /proc/self/ns/net",
    )
    assert peer["NetworkSettings"]["IPAddress"] + "/16" in _links(out)["eth0"]
    assert peer["Namespaces"]["net"]["link"] in out
    box.ok("rm", "-f", "peer")


def test_container_mode_refuses_ports_and_hostname(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "peer", "busybox", "sleep", "60")
    assert (
        box.run("run", "--rm", "--net=container:peer", "-p", "80:80", "busybox", "true").code == 125
    )
    assert (
        box.run("run", "--rm", "--net=container:peer", "--hostname", "x", "busybox", "true").code
        == 125
    )
    assert box.run("run", "--rm", "--net=container:nosuch", "busybox", "true").code == 125
    box.ok("rm", "-f", "peer")


def test_publish_goes_through_portmap_and_needs_a_netns_of_its_own(box: RuntimeSandbox) -> None:
    assert box.run("run", "--rm", "--net=host", "-p", "8080:80", "busybox", "true").code == 125
    serve = "mkdir /w && echo published > /w/index.html && exec httpd -f -p 80 -h /w"
    box.ok("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", serve)
    assert box.inspect("web")["NetworkSettings"]["Ports"]
    assert box.fetch("http://127.0.0.1:8080/").strip() == "published"
    box.ok("rm", "-f", "web")
    # A network without a portMappings plugin cannot publish: refused before anything starts.
    conf_file = box.conf_dir / "10-pycni.conflist"
    conf = json.loads(conf_file.read_text())
    conf["plugins"] = [p for p in conf["plugins"] if p["type"] != "portmap"]
    conf_file.write_text(json.dumps(conf))
    ran = box.run("run", "--rm", "-p", "8080:80", "busybox", "true")
    assert ran.code == 125
    assert "portMappings" in ran.stderr
    assert box.sh("ip", "netns", "list").stdout.strip() == ""


def test_netns_is_pinned_and_ip_netns_exec_works(box: RuntimeSandbox) -> None:
    box.ok("run", "-d", "--name", "web", "busybox", "sleep", "60")
    ip = box.inspect("web")["NetworkSettings"]["IPAddress"]
    assert box.inspect("web")["NetworkSettings"]["SandboxKey"] == "/run/netns/web"
    assert "web" in box.sh("ip", "netns", "list").stdout
    assert box.ok("netns", "link", "web").strip() == "/run/netns/web"
    assert box.ok("netns", "link", "web", "seed").strip() == "/run/netns/seed"
    shown = box.sh("ip", "netns", "exec", "seed", "ip", "-j", "addr", "show", "eth0")
    assert ip in shown.stdout
    pid = box.ok("inspect", "-f", "{{.State.Pid}}", "web").strip()
    same = box.sh("ip", "netns", "exec", "seed", "readlink", "/proc/self/ns/net")
    assert same.stdout == box.sh("readlink", f"/proc/{pid}/ns/net").stdout
    box.ok("netns", "unlink", "seed")
    assert "seed" not in box.sh("ip", "netns", "list").stdout
    assert box.run("netns", "unlink", "web").code == 125  # the container's own pin
    box.ok("rm", "-f", "web")
    assert box.sh("ip", "netns", "list").stdout.strip() == ""
