"""Container names resolve on a network with `pycni-dns` in its chain, and nowhere else.

Each test has a sandbox host netns (the "host"), bridge -> pycni-dns -> loopback conflists run
through ``pycni.cni.invoke`` exec'ing the installed executables (in-process or through
`pycni serve`, per ``plugin_mode``), a stub upstream on 0.0.0.0:53 in the sandbox host, and a
resolver started on demand with a private run dir (never /run/pycni), stopped by its PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest

from pycni.cni.conf import find_conflist
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.types import Result
from pycni.net import netns
from tests.e2e.autostart_support import gone_within
from tests.e2e.bridge_support import Sandbox
from tests.e2e.dns_support import (
    EXTERNAL_ADDRESS,
    EXTERNAL_NAME,
    StubUpstream,
    addresses,
    dns_conflist,
    nslookup,
    nslookup_addresses,
    query,
    records,
    resolver_pid,
    sockets_on_port_53,
    stop_resolver,
    stub_upstream,
    write_resolv_conf,
)

APP = "appnet"
OTHER = "othernet"


@dataclass
class Net:
    """Two networks with name resolution in one sandbox host, and the upstream stub."""

    box: Sandbox
    run_dir: Path
    upstream: StubUpstream

    def add(self, cid: str, name: str, *aliases: str, network: str = APP) -> Result:
        return self.box.add(cid, network=network, **_names(network, name, aliases))

    def check(self, cid: str, name: str, *aliases: str, network: str = APP) -> None:
        """CHECK with the arguments of ADD, as a runtime passes them."""
        conf = find_conflist(str(self.box.conf_dir), network)
        rt = self.box.runtime_conf(cid, **_names(network, name, aliases))
        with netns.enter(self.box.host_ns):
            self.box.invoker().check(conf, rt)

    def delete(self, cid: str, network: str = APP) -> None:
        self.box.delete(cid, network=network)

    def ns(self, cid: str) -> str:
        return self.box.containers[cid]

    def invoker_call(self, verb: str, network: str = APP, **kw: Any) -> None:
        conf = find_conflist(str(self.box.conf_dir), network)
        with netns.enter(self.box.host_ns):
            getattr(self.box.invoker(), verb)(conf, **kw)


@pytest.fixture
def net(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Net]:
    # Exec the executables as a runtime would (not the invoker's forked shortcut), so that
    # plugin_mode decides between in-process and `pycni serve`.
    monkeypatch.setenv("PYCNI_DELEGATE_EXEC", "1")
    run_dir = tmp_path / "dns"
    resolv_conf = write_resolv_conf(tmp_path / "resolv.conf")
    sandbox.write_conf(dns_conflist(
        name=APP, bridge="dnsapp0", data_dir=sandbox.data_dir, run_dir=run_dir,
        resolv_conf=resolv_conf,
        ranges=[[{"subnet": "10.89.1.0/24"}], [{"subnet": "fd89:1::/64"}]]), "10-app.conflist")
    sandbox.write_conf(dns_conflist(
        name=OTHER, bridge="dnsoth0", data_dir=sandbox.data_dir, run_dir=run_dir,
        resolv_conf=resolv_conf, ranges=[[{"subnet": "10.89.2.0/24"}]]), "20-other.conflist")
    with stub_upstream(sandbox.host_ns) as upstream:
        try:
            yield Net(sandbox, run_dir, upstream)
        finally:
            stop_resolver(run_dir)


def _names(network: str, name: str, aliases: tuple[str, ...]) -> dict[str, Any]:
    """How podman passes a container's names: K8S_POD_NAME and the aliases capability."""
    return {"cni_args": (("IgnoreUnknown", "1"), ("K8S_POD_NAME", name)),
            "capability_args": {"aliases": {network: list(aliases)}}}


def _ip(result: Result, family: int = 4) -> str:
    return next(ip.ip for ip in result.ips if ip.family == family)


def test_containers_resolve_each_other_by_name_and_alias_a_and_aaaa(net: Net) -> None:
    web = net.add("c-web", "web", "www")
    db = net.add("c-db", "db", "primary-db")
    assert web.dns.nameservers == ("127.0.0.11",)
    assert web.dns.search == ("app.test",)
    web_v4, web_v6 = _ip(web), _ip(web, 6)
    # busybox's nslookup, run inside the db container's netns, asks 127.0.0.11 there
    assert nslookup_addresses(net.ns("c-db"), "web", "A") == [web_v4]
    assert nslookup_addresses(net.ns("c-db"), "WWW.app.test", "AAAA") == [web_v6]
    assert nslookup_addresses(net.ns("c-web"), "primary-db") == sorted([_ip(db), _ip(db, 6)])
    ptr = nslookup(net.ns("c-db"), web_v4)
    assert "web.app.test" in ptr.stdout, ptr
    assert net.upstream.questions == []  # none of that went upstream


def test_a_container_on_another_network_does_not_resolve_them(net: Net) -> None:
    net.add("c-web", "web", "www")
    other = net.add("c-x", "lonely", network=OTHER)
    for name in ("web", "www", "web.app.test"):
        reply = query(net.ns("c-x"), name)
        assert reply is not None
        assert reply.rcode() == dns.rcode.NXDOMAIN, name
    assert addresses(query(net.ns("c-x"), "lonely")) == [_ip(other)]
    assert query(net.ns("c-web"), "lonely").rcode() == dns.rcode.NXDOMAIN  # type: ignore[union-attr]


def test_a_name_disappears_at_del_and_appears_at_add(net: Net) -> None:
    net.add("c-web", "web")
    db = net.add("c-db", "db")
    assert addresses(query(net.ns("c-web"), "db")) == [_ip(db)]
    net.delete("c-db")
    assert query(net.ns("c-web"), "db").rcode() == dns.rcode.NXDOMAIN  # type: ignore[union-attr]
    assert len(records(net.run_dir)) == 1
    again = net.add("c-db", "db")
    assert addresses(query(net.ns("c-web"), "db")) == [_ip(again)]


def test_external_names_are_answered_through_the_loopback_upstream(net: Net) -> None:
    net.add("c-web", "web")
    for tcp in (False, True):
        reply = query(net.ns("c-web"), EXTERNAL_NAME, tcp=tcp)
        assert addresses(reply) == [EXTERNAL_ADDRESS]
    unknown = query(net.ns("c-web"), "nowhere.test")
    assert unknown is not None
    assert unknown.rcode() == dns.rcode.NXDOMAIN
    assert net.upstream.questions == [EXTERNAL_NAME, EXTERNAL_NAME, "nowhere.test"]


def test_a_host_process_on_port_53_is_undisturbed(net: Net) -> None:
    web = net.add("c-web", "web")
    # nothing of the resolver's is bound in the host; the stub keeps its wildcard port
    assert sockets_on_port_53(net.box.host_ns) == ["0.0.0.0:53/tcp", "0.0.0.0:53/udp"]
    assert sockets_on_port_53(net.ns("c-web")) == ["127.0.0.11:53/tcp", "127.0.0.11:53/udp"]
    gateway = web.ips[0].gateway or ""
    # the host's own clients, and a container asking the host's address, reach the stub
    for where, server in ((net.box.host_ns, "127.0.0.1"), (net.box.host_ns, gateway),
                          (net.ns("c-web"), gateway)):
        reply = query(where, "web", server=server)
        assert reply is not None
        assert reply.rcode() == dns.rcode.NXDOMAIN  # the stub's answer, not pycni's
    assert net.upstream.questions == ["web"] * 3


def test_a_killed_resolver_comes_back_at_the_next_plugin_call_with_every_name(net: Net) -> None:
    web = net.add("c-web", "web", "www")
    net.add("c-db", "db")
    before = resolver_pid(net.run_dir)
    os.kill(before, 9)
    assert gone_within(before, 10)
    assert query(net.ns("c-db"), "web", timeout=1) is None  # nobody answers now
    net.check("c-db", "db")  # any call of the plugin, on any network, restarts it
    assert resolver_pid(net.run_dir) != before
    assert addresses(query(net.ns("c-db"), "www")) == [_ip(web)]
    assert addresses(query(net.ns("c-web"), "www", "AAAA")) == [_ip(web, 6)]


def test_malformed_and_oversized_queries_get_formerr_or_are_dropped(net: Net) -> None:
    web = net.add("c-web", "web")
    path = net.ns("c-web")
    with netns.enter(path):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.create_connection(("127.0.0.11", 53), timeout=5)
    with udp, tcp:
        udp.settimeout(2)
        udp.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03we", ("127.0.0.11", 53))
        reply = dns.message.from_wire(udp.recv(4096))
        assert (reply.id, reply.rcode()) == (0x1234, dns.rcode.FORMERR)
        udp.sendto(b"\x56\x78\x01\x00" + b"\x00" * 8 + b"x" * 9000, ("127.0.0.11", 53))
        reply = dns.message.from_wire(udp.recv(4096))
        assert (reply.id, reply.rcode()) == (0x5678, dns.rcode.FORMERR)
        udp.sendto(b"\x01", ("127.0.0.11", 53))  # not even a header: dropped
        with pytest.raises(TimeoutError):
            udp.recv(4096)
        tcp.sendall(b"\xff\xff" + b"\x00" * 100)  # announces 65535 bytes: the connection goes
        tcp.settimeout(5)
        assert tcp.recv(100) == b""
    assert addresses(query(path, "web")) == [_ip(web)]
    assert addresses(query(path, "web", tcp=True)) == [_ip(web)]


def test_check_gc_status_and_del_leave_nothing(net: Net) -> None:
    net.add("c-web", "web")
    net.add("c-db", "db")
    net.check("c-web", "web")
    net.invoker_call("status")
    net.invoker_call("gc", valid=[("c-web", "eth0")])
    assert [r["names"] for r in records(net.run_dir)] == [["web"]]
    assert query(net.ns("c-web"), "db").rcode() == dns.rcode.NXDOMAIN  # type: ignore[union-attr]
    assert sockets_on_port_53(net.ns("c-db")) == []  # its sockets closed with the record
    net.delete("c-web")
    assert records(net.run_dir) == []
    assert sockets_on_port_53(net.ns("c-web")) == []


def test_check_fails_when_the_record_is_gone(net: Net) -> None:
    net.add("c-web", "web")
    for path in (net.run_dir / "records").iterdir():
        path.unlink()
    with pytest.raises(CNIError, match="not registered"):
        net.check("c-web", "web")


def test_status_reports_a_resolver_that_cannot_start(net: Net, tmp_path: Path) -> None:
    bad = tmp_path / "open-dir"
    bad.mkdir(mode=0o755)
    bad.chmod(0o755)  # a run dir others may enter: refused, nothing started there
    conf = find_conflist(str(net.box.conf_dir), APP)
    broken = dataclasses.replace(conf, plugins=tuple(
        {**p, "runDir": str(bad)} if p["type"] == "pycni-dns" else p for p in conf.plugins))
    with netns.enter(net.box.host_ns), pytest.raises(CNIError) as err:
        net.box.invoker().status(broken)
    assert err.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE
    assert "accessible to others" in str(err.value)
    assert list(bad.iterdir()) == []


def test_the_resolver_lets_go_of_a_dead_containers_namespace(net: Net) -> None:
    net.add("c-web", "web")
    net.add("c-db", "db")
    pid = resolver_pid(net.run_dir)
    before = _sockets_of(pid)
    netns.remove(net.box.containers.pop("c-web"))  # it died without DEL, its pin is gone
    deadline = time.monotonic() + 30  # the resolver sweeps every few seconds
    while time.monotonic() < deadline and _sockets_of(pid) > before - 2:
        time.sleep(0.1)
    assert _sockets_of(pid) == before - 2  # its two sockets there, which held it alive
    assert "is gone: closing its sockets" in (net.run_dir / "resolver.log").read_text()
    assert addresses(query(net.ns("c-db"), "db")) != []  # the others are still served


def _sockets_of(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def test_parallel_first_adds_start_one_resolver_and_every_name_resolves(net: Net) -> None:
    names = [f"app{i}" for i in range(6)]
    for name in names:  # namespaces made first: only the ADDs race
        net.box.runtime_conf(f"c-{name}")
    with ThreadPoolExecutor(len(names)) as pool:
        results = dict(zip(names, pool.map(lambda n: net.add(f"c-{n}", n), names), strict=True))
    resolvers = [pid for pid in os.listdir("/proc") if pid.isdigit()
                 and str(net.run_dir) in _cmdline(int(pid))]
    assert resolvers == [str(resolver_pid(net.run_dir))]
    for name, result in results.items():
        assert addresses(query(net.ns("c-app0"), name)) == [_ip(result)]
        assert addresses(query(net.ns("c-app5"), name, "AAAA")) == [_ip(result, 6)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
