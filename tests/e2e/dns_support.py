"""Name-resolution tests' kit: a stub upstream in the sandbox host, queries from containers.

The stub stands for the host's resolver: a small dnspython server bound to 0.0.0.0:53 (UDP and
TCP) in the sandbox host netns, so it is both the loopback upstream (127.0.0.53, like
systemd-resolved) and "a host process on port 53" that pycni's resolver must leave alone. It
knows one name, ``external.test`` (192.0.2.10, a documentation address nothing is sent to), and
says NXDOMAIN to everything else; it records every question it gets.

Queries from a container are made by sockets opened inside its netns (dnspython) or by
busybox's nslookup run there; the resolver is stopped by the PID it wrote in its run dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rrset

from pycni.dns.control import PID_FILE
from pycni.net import netns
from tests.e2e.autostart_support import gone_within

EXTERNAL_NAME = "external.test"
EXTERNAL_ADDRESS = "192.0.2.10"
UPSTREAM = "127.0.0.53"
IP_PKTINFO = 8  # <linux/in.h>; Python 3.11's socket module lacks the name


@dataclass
class StubUpstream:
    """The sandbox host's resolver; ``questions`` is what it was asked, in order."""

    udp: socket.socket
    tcp: socket.socket
    questions: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text(omit_final_dot=True).lower()
        self.questions.append(name)
        reply = dns.message.make_response(query)
        if name == EXTERNAL_NAME:
            reply.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A",
                                                    EXTERNAL_ADDRESS))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply.to_wire()

    def serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.udp, selectors.EVENT_READ)
            sel.register(self.tcp, selectors.EVENT_READ)
            while not self.stop.is_set():
                for key, _ in sel.select(0.1):
                    if key.fileobj is self.udp:
                        self._serve_udp()
                    else:
                        self._serve_tcp()

    def _serve_udp(self) -> None:
        """Answer from the address asked (IP_PKTINFO), as dnsmasq or unbound do on a wildcard
        socket: a client's connected socket (glibc's, pycni's) drops answers from any other."""
        data, ancdata, _, peer = self.udp.recvmsg(65535, socket.CMSG_SPACE(12))
        self.udp.sendmsg([self.answer(data)], ancdata, 0, peer)

    def _serve_tcp(self) -> None:
        conn, _ = self.tcp.accept()
        with conn:
            conn.settimeout(5)
            size = int.from_bytes(conn.recv(2), "big")
            data = b""
            while len(data) < size:
                data += conn.recv(size - len(data))
            reply = self.answer(data)
            conn.sendall(len(reply).to_bytes(2, "big") + reply)


@contextlib.contextmanager
def stub_upstream(host_ns: netns.NetNSRef) -> Iterator[StubUpstream]:
    """The stub in ``host_ns`` (a path, or a descriptor: a pidfd of the sandbox's PID 1)."""
    with netns.enter(host_ns):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with udp, tcp:
        udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        udp.bind(("0.0.0.0", 53))  # the sandbox host's wildcard, on purpose
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("0.0.0.0", 53))
        tcp.listen(8)
        stub = StubUpstream(udp, tcp)
        stub.answer(dns.message.make_query("warm.up", "A").to_wire())  # dnspython's lazy imports
        stub.questions.clear()
        thread = threading.Thread(target=stub.serve, daemon=True)
        thread.start()
        try:
            yield stub
        finally:
            stub.stop.set()
            thread.join(5)


def write_resolv_conf(path: Path) -> Path:
    path.write_text(f"# the sandbox host's resolver\nnameserver {UPSTREAM}\noptions timeout:1\n")
    return path


def dns_conflist(*, name: str, bridge: str, ranges: list[list[dict[str, Any]]], data_dir: Path,
                 run_dir: Path, resolv_conf: Path, plugin: str = "pycni-dns",
                 domain: str = "app.test") -> dict[str, Any]:
    """bridge -> pycni-dns -> loopback, as `pycni network create` will write it."""
    return {
        "cniVersion": "1.1.0", "name": name,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": ranges, "dataDir": str(data_dir)}},
            {"type": plugin, "domainName": domain, "runDir": str(run_dir),
             "resolvConf": str(resolv_conf), "capabilities": {"aliases": True}},
            {"type": "loopback"},
        ],
    }


def query(path: str, name: str, rdtype: str = "A", *, tcp: bool = False,
          server: str = "127.0.0.11", timeout: float = 3.0) -> dns.message.Message | None:
    """Ask from inside netns ``path`` (the socket is opened there); None if nothing answers."""
    message = dns.message.make_query(name, rdtype)
    with netns.enter(path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    with sock:
        try:
            if tcp:
                sock.settimeout(timeout)
                sock.connect((server, 53))
            sock.setblocking(False)  # what dnspython wants of a socket it is given
            if tcp:
                return dns.query.tcp(message, server, timeout=timeout, sock=sock)
            return dns.query.udp(message, server, timeout=timeout, sock=sock)
        except (OSError, dns.exception.Timeout):
            return None


def addresses(reply: dns.message.Message | None) -> list[str]:
    assert reply is not None, "no answer"
    return sorted(item.to_text() for rrset in reply.answer for item in rrset)


def nslookup(path: str, name: str, rdtype: str = "") -> subprocess.CompletedProcess[str]:
    """busybox nslookup inside netns ``path``, asking the resolver's address."""
    argv = ["nsenter", f"--net={path}", "busybox", "nslookup"]
    argv += [f"-type={rdtype}"] if rdtype else []
    return subprocess.run([*argv, name, "127.0.0.11"], capture_output=True, text=True,
                          timeout=30, check=False)


def nslookup_addresses(path: str, name: str, rdtype: str = "") -> list[str]:
    out = nslookup(path, name, rdtype)
    return sorted(line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                  if line.startswith("Address:") and "#" not in line and "127.0.0.11" not in line)


def resolver_pid(run_dir: Path) -> int:
    return int((run_dir / PID_FILE).read_text())


def stop_resolver(run_dir: Path) -> None:
    """SIGTERM by its PID, SIGKILL if it lingers; wait until it is gone."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = resolver_pid(run_dir)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            if gone_within(pid, 10):
                return


def sockets_on_port_53(path: str) -> list[str]:
    """``address:port/proto`` of every socket bound to port 53 in netns ``path``."""
    out = subprocess.run(["nsenter", f"--net={path}", "ss", "-Hlnut"], capture_output=True,
                         text=True, timeout=10, check=True)
    found = []
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4].endswith(":53"):
            found.append(f"{fields[4]}/{fields[0]}")
    return sorted(found)


def records(run_dir: Path) -> list[dict[str, Any]]:
    directory = run_dir / "records"
    if not directory.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
