"""Names that resolve for pycni-run's containers: issue #16 with the runtime's user networks.

Each test runs in the runtime sandbox (mount, net and pid namespaces of its own, tmpfs /run):
`pycni-run network create` puts `pycni-dns` in the chain, the first ADD starts the resolver on
demand at /run/pycni/dns (the sandbox's), and the busybox tools inside the containers resolve
each other (`ping`, `nslookup`, through the container's /etc/resolv.conf). The sandbox's
/etc/resolv.conf (a bind mount in its mount namespace only) names 127.0.0.53, where a test may
run the stub upstream of ``dns_support`` in the sandbox host: nothing is sent anywhere else.
At teardown the containers are removed and the resolver is stopped by the PID it wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.e2e.dns_support import (
    EXTERNAL_ADDRESS,
    EXTERNAL_NAME,
    StubUpstream,
    stub_upstream,
    write_resolv_conf,
)
from tests.e2e.runtime_support import RuntimeSandbox, until

RUN_DIR = "/run/pycni/dns"  # the plugin's default, on the sandbox's tmpfs
RESOLVER = "nameserver 127.0.0.11"


def _stop_resolver(box: RuntimeSandbox) -> None:
    """SIGTERM to the PID in the resolver's pid file (a pid of the sandbox's namespace, so
    the signal is sent from in there); wait until its reaper has it."""
    ran = box.sh("cat", f"{RUN_DIR}/resolver.pid")
    if ran.code != 0:
        return
    pid = ran.stdout.strip()
    box.sh("kill", pid)
    until(f"the resolver (pid {pid}) exits", lambda: box.sh("kill", "-0", pid).code != 0)


@pytest.fixture
def dns_box(box: RuntimeSandbox) -> Iterator[RuntimeSandbox]:
    upstream = write_resolv_conf(box.workdir / "resolv.conf")
    mounted = box.sh("mount", "--bind", str(upstream), "/etc/resolv.conf")  # the sandbox's only
    assert mounted.code == 0, mounted.stderr
    try:
        yield box
    finally:
        for name in box.run("ps", "-a", "-q").stdout.split():
            box.run("rm", "-f", name)  # their DELs first: a DEL with records left restarts it
        _stop_resolver(box)


@pytest.fixture
def upstream(dns_box: RuntimeSandbox) -> Iterator[StubUpstream]:
    """The sandbox host's resolver on 0.0.0.0:53 (its netns through a pidfd of its PID 1)."""
    pidfd = os.pidfd_open(dns_box.init_pid)
    try:
        with stub_upstream(pidfd) as stub:
            yield stub
    finally:
        os.close(pidfd)


def _sleeper(box: RuntimeSandbox, name: str, *options: str) -> None:
    box.ok("run", "-d", "--name", name, *options, "busybox", "sleep", "600")


def _ips(box: RuntimeSandbox, name: str, network: str) -> list[str]:
    """The container's IPv4 and (on a dual-stack network) IPv6 address there."""
    settings = box.inspect(name)["NetworkSettings"]["Networks"][network]
    found = (settings.get("IPAddress"), settings.get("GlobalIPv6Address"))
    return [ip.split("/")[0] for ip in found if ip]


def _lookup(box: RuntimeSandbox, name: str, host: str, rdtype: str = "") -> list[str]:
    """The addresses busybox's nslookup in container ``name`` finds for ``host``, asking the
    nameserver of the container's resolv.conf."""
    argv = ["exec", name, "nslookup", *([f"-type={rdtype}"] if rdtype else []), host]
    out = box.run(*argv).stdout
    answers = out.split("Name:", 1)[1] if "Name:" in out else ""
    return sorted(line.split(":", 1)[1].strip() for line in answers.splitlines()
                  if line.startswith("Address"))


def _resolv_conf(box: RuntimeSandbox, name: str) -> list[str]:
    return box.ok("exec", name, "cat", "/etc/resolv.conf").splitlines()


def test_containers_resolve_each_other_by_name_and_alias_a_and_aaaa(dns_box: RuntimeSandbox
                                                                     ) -> None:
    """The issue's example: `exec web ping db` answered "bad address 'db'"."""
    box = dns_box
    box.ok("network", "create", "--ipv6", "appnet")
    _sleeper(box, "db", "--network", "appnet", "--network-alias", "store")
    _sleeper(box, "web", "--network", "name=appnet,alias=www,alias=front")
    assert _resolv_conf(box, "web") == ["nameserver 127.0.0.11", "search dns.pycni"]
    db_v4, db_v6 = _ips(box, "db", "appnet")
    web_v4, web_v6 = _ips(box, "web", "appnet")
    ping = box.run("exec", "web", "ping", "-c1", "-W2", "db")
    assert ping.code == 0, ping.stdout + ping.stderr
    assert _lookup(box, "web", "db", "A") == [db_v4]
    assert _lookup(box, "web", "store", "AAAA") == [db_v6]
    assert _lookup(box, "web", "STORE.dns.pycni", "A") == [db_v4]
    for alias in ("web", "www", "front"):
        assert _lookup(box, "db", alias) == sorted([web_v4, web_v6]), alias
    assert box.run("exec", "db", "ping", "-c1", "-W2", "www").code == 0
    (doc,) = json.loads(box.ok("network", "inspect", "appnet"))
    assert doc["DNSEnabled"] is True
    assert {c["Name"]: c["DNSNames"] for c in doc["Containers"]} == {
        "db": ["db", "store"], "web": ["web", "www", "front"]}


def test_a_container_on_another_network_does_not_resolve_them(dns_box: RuntimeSandbox) -> None:
    box = dns_box
    box.ok("network", "create", "appnet")
    box.ok("network", "create", "other")
    _sleeper(box, "db", "--network", "appnet", "--network-alias", "store")
    _sleeper(box, "lonely", "--network", "other")
    _sleeper(box, "web", "--network", "appnet")
    assert _lookup(box, "web", "db") == _ips(box, "db", "appnet")  # the names are there
    for name in ("db", "store", "db.dns.pycni"):
        assert _lookup(box, "lonely", name) == [], name
    ping = box.run("exec", "lonely", "ping", "-c1", "-W1", "db")
    assert ping.code != 0
    assert "bad address 'db'" in ping.stderr
    assert _lookup(box, "lonely", "lonely") == _ips(box, "lonely", "other")
    assert _lookup(box, "db", "lonely") == []


def test_a_name_goes_at_disconnect_and_rm_and_comes_at_connect(dns_box: RuntimeSandbox) -> None:
    """Through the runtime daemon, as users run it."""
    box = dns_box
    box.ok("network", "create", "appnet")
    box.ok("network", "create", "back")
    box.start_daemon()
    _sleeper(box, "web", "--network", "appnet")
    _sleeper(box, "db", "--network", "back", "--network", "appnet")
    on_appnet = _ips(box, "db", "appnet")
    assert _lookup(box, "web", "db") == on_appnet
    box.ok("network", "disconnect", "appnet", "db")
    assert _lookup(box, "web", "db") == []
    assert _lookup(box, "web", "cache") == []
    box.ok("network", "connect", "--alias", "cache", "appnet", "db")
    on_appnet = _ips(box, "db", "appnet")
    assert _lookup(box, "web", "db") == on_appnet
    assert _lookup(box, "web", "cache") == on_appnet
    box.ok("rm", "-f", "db")
    assert _lookup(box, "web", "db") == []
    assert _lookup(box, "web", "cache") == []
    assert box.sh("ls", f"{RUN_DIR}/records").stdout.split() != []  # web's own is left
    box.ok("rm", "-f", "web")
    assert box.sh("ls", f"{RUN_DIR}/records").stdout.split() == []


def test_external_names_resolve_through_the_sandbox_hosts_loopback_upstream(
    dns_box: RuntimeSandbox, upstream: StubUpstream,
) -> None:
    box = dns_box
    box.ok("network", "create", "appnet")
    _sleeper(box, "web", "--network", "appnet")
    assert _lookup(box, "web", EXTERNAL_NAME, "A") == [EXTERNAL_ADDRESS]
    assert EXTERNAL_NAME in upstream.questions
    assert _lookup(box, "web", "web") == _ips(box, "web", "appnet")  # local: never upstream
    assert "web" not in upstream.questions


def test_dns_flags_win_and_several_networks_get_the_resolver_once(dns_box: RuntimeSandbox
                                                                  ) -> None:
    box = dns_box
    box.ok("network", "create", "appnet")
    box.ok("network", "create", "back")
    # the first network (the default `pycni`) has no names; the next two give one resolver
    out = box.ok("run", "--rm", "--network", "bridge", "--network", "appnet", "--network",
                 "back", "busybox", "cat", "/etc/resolv.conf")
    assert out.splitlines() == [RESOLVER, "search dns.pycni"]
    out = box.ok("run", "--rm", "--network", "appnet", "--dns", "10.0.0.53", "--dns-search",
                 "corp.example", "--dns-option", "ndots:2", "busybox", "cat",
                 "/etc/resolv.conf")
    assert out.splitlines() == ["nameserver 10.0.0.53", "search corp.example", "options ndots:2"]
    # --dns wins in the container's file; its name still resolves for the others
    _sleeper(box, "web", "--network", "appnet", "--dns", "10.0.0.53")
    _sleeper(box, "cli", "--network", "appnet")
    assert RESOLVER not in _resolv_conf(box, "web")
    assert _lookup(box, "cli", "web") == _ips(box, "web", "appnet")


def test_without_dns_there_is_no_resolver(dns_box: RuntimeSandbox) -> None:
    box = dns_box
    box.ok("network", "create", "--disable-dns", "plain")
    _sleeper(box, "db", "--network", "plain")
    _sleeper(box, "web", "--network", "plain")
    _sleeper(box, "default")  # Docker's default bridge has no names either
    for name in ("web", "default"):
        assert RESOLVER not in _resolv_conf(box, name)
    assert _lookup(box, "web", "db") == []
    listening = box.ok("exec", "web", "netstat", "-lnu")
    assert ":53 " not in listening
    assert box.sh("test", "-e", f"{RUN_DIR}/control.sock").code != 0  # never started
    (doc,) = json.loads(box.ok("network", "inspect", "plain"))
    assert (doc["DNSEnabled"], [c["DNSNames"] for c in doc["Containers"]]) == (False, [[], []])
    rows = {r["Name"]: r["DNSEnabled"] for r in map(json.loads, box.ok(
        "network", "ls", "--format", "json").splitlines())}
    assert (rows["plain"], rows["pycni"]) == (False, False)
