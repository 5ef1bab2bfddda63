"""The probes themselves, in scapy. Imported only when a probe runs (scapy is slow to import).

Everything here runs inside the target's network namespace: a :class:`Prober` is created
there, and its ``L2Socket`` s are opened there, so they stay bound to it. Frames are built
whole (Ethernet addresses, IP source) from the kernel's route lookup (:mod:`netview`): scapy's
global route and interface caches decide nothing. Answers are matched by scapy's
``sr`` on that socket.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
logging.getLogger("scapy.loading").setLevel(logging.ERROR)

from scapy.arch.linux import L2Socket  # noqa: E402
from scapy.config import conf  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.supersocket import SuperSocket  # noqa: E402

from pycni.probe.netview import Hop  # noqa: E402
from pycni.probe.report import Finding  # noqa: E402

__all__ = ["Prober", "open_prober", "refresh_scapy_caches"]

BROADCAST = "ff:ff:ff:ff:ff:ff"
PAYLOAD = b"pycni-probe"
_ICMP_UNREACH = {
    0: "net unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    4: "fragmentation needed",
    9: "net prohibited",
    10: "host prohibited",
    13: "administratively prohibited",
}


def refresh_scapy_caches() -> None:
    """Re-read scapy's interface and route tables in the current netns (nothing here relies
    on them, but anything scapy looks up by itself then sees this namespace, not the host)."""
    conf.ifaces.reload()
    conf.route.resync()
    with contextlib.suppress(Exception):  # no IPv6 in the namespace is fine
        conf.route6.resync()


def _ms(query: Any, answer: Any) -> float:
    return round((float(answer.time) - float(query.sent_time)) * 1000, 3)


def _icmp_error(answer: Any) -> str:
    icmp = answer[ICMP]
    if int(icmp.type) == 3:
        text = _ICMP_UNREACH.get(int(icmp.code), f"unreachable code {int(icmp.code)}")
    elif int(icmp.type) == 11:
        text = "time exceeded"
    else:
        text = f"icmp type {int(icmp.type)} code {int(icmp.code)}"
    return f"ICMP {text} from {answer[IP].src}"


def _port() -> int:
    return 32768 + secrets.randbelow(28000)


class KernelRoutedSocket(SuperSocket):
    """For the namespace's own addresses: IP packets go out through the kernel's output path
    (IPPROTO_RAW, so NAT's OUTPUT hook applies, as for any local client), and answers are read
    after the input hooks (an AF_INET raw socket of ``proto``): the way a published port
    looks from the host itself. Opened in the current netns."""

    def __init__(self, proto: int) -> None:
        self._out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._in = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        self.outs, self.ins = self._out, self._in

    def send(self, x: Any) -> int:
        data = bytes(x)
        x.sent_time = time.time()
        return self._out.sendto(data, (str(x[IP].dst), 0))

    def recv_raw(self, x: int = 65535) -> tuple[Any, bytes, float]:
        return IP, self._in.recv(x), time.time()

    def close(self) -> None:
        self._out.close()
        self._in.close()
        self.closed = True


class Prober:
    """Sends probes from the current network namespace. Create it, and use it, inside
    ``netns.enter``; ``close`` it there too (or use :func:`open_prober`)."""

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self._sockets: dict[str | int, Any] = {}
        self._macs: dict[tuple[str, str], tuple[str | None, float | None]] = {}

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def _socket(self, hop: Hop, packet: Any) -> Any:
        """The L2 socket on the hop's interface; for our own addresses a kernel-routed one."""
        if hop.local:
            proto = socket.IPPROTO_TCP if TCP in packet else socket.IPPROTO_ICMP
            if proto not in self._sockets:
                self._sockets[proto] = KernelRoutedSocket(proto)
            return self._sockets[proto]
        if hop.iface not in self._sockets:
            self._sockets[hop.iface] = L2Socket(iface=hop.iface)
        return self._sockets[hop.iface]

    def _ask(self, hop: Hop, packet: Any) -> tuple[Any, Any] | None:
        ans, _ = self._socket(hop, packet).sr(
            packet, timeout=self.timeout, verbose=0, threaded=False, chainEX=True
        )
        return (ans[0][0], ans[0][1]) if ans else None

    # ---------------------------------------------------------------- layer 2

    def _who_has(self, hop: Hop, address: str) -> tuple[str | None, float | None]:
        key = (hop.iface, address)
        if key not in self._macs:
            frame = Ether(src=hop.mac, dst=BROADCAST) / ARP(
                op="who-has", hwsrc=hop.mac, psrc=hop.source, pdst=address
            )
            got = self._ask(hop, frame)
            self._macs[key] = (str(got[1][ARP].hwsrc), _ms(*got)) if got else (None, None)
        return self._macs[key]

    def _ip(self, hop: Hop, **fields: Any) -> Any | Finding:
        """Ether/IP to ``hop.address`` through its next hop (bare IP for our own addresses);
        a Finding when the next hop does not answer ARP."""
        if hop.local:
            return IP(src=hop.source, dst=hop.address, **fields)
        mac, _ = self._who_has(hop, hop.next_hop)
        if mac is None:
            return Finding(
                probe="",
                target=hop.address,
                status="no-reply",
                detail=f"no ARP reply from next hop {hop.next_hop} on {hop.iface}",
            )
        return Ether(src=hop.mac, dst=mac) / IP(src=hop.source, dst=hop.address, **fields)

    def arp(self, hop: Hop) -> Finding:
        if hop.local:
            return Finding(probe="arp", target=hop.address, status="skipped", detail="own address")
        mac, rtt = self._who_has(hop, hop.address)
        if mac is None:
            return Finding(
                probe="arp",
                target=hop.address,
                status="no-reply",
                detail=f"who-has {hop.address} on {hop.iface}: no answer in {self.timeout:g} s",
            )
        return Finding(
            probe="arp",
            target=hop.address,
            status="answered",
            detail=f"{hop.address} is-at {mac} ({rtt} ms)",
            mac=mac,
            rtt_ms=rtt,
            responder=hop.address,
        )

    # ---------------------------------------------------------------- layer 3/4

    def icmp(self, hop: Hop) -> Finding:
        base = self._ip(hop)
        if isinstance(base, Finding):
            return Finding(probe="icmp", target=hop.address, status=base.status, detail=base.detail)
        got = self._ask(hop, base / ICMP(id=_port(), seq=1) / Raw(PAYLOAD))
        if got is None:
            return Finding(probe="icmp", target=hop.address, status="no-reply",
                           detail=f"no echo reply in {self.timeout:g} s")
        query, answer = got
        if int(answer[ICMP].type) == 0:
            rtt = _ms(query, answer)
            return Finding(probe="icmp", target=hop.address, status="reachable",
                           detail=f"echo reply in {rtt} ms", rtt_ms=rtt, responder=answer[IP].src)
        return Finding(probe="icmp", target=hop.address, status="unreachable",
                       detail=_icmp_error(answer), responder=answer[IP].src)

    def tcp(self, hop: Hop, port: int) -> Finding:
        target = f"{hop.address}:{port}/tcp"
        base = self._ip(hop)
        if isinstance(base, Finding):
            return Finding(probe="tcp", target=target, status=base.status, detail=base.detail)
        sport, seq = _port(), secrets.randbelow(2**32)
        got = self._ask(hop, base / TCP(sport=sport, dport=port, flags="S", seq=seq))
        if got is None:
            return Finding(probe="tcp", target=target, status="filtered",
                           detail=f"no answer to SYN in {self.timeout:g} s")
        query, answer = got
        src = str(answer[IP].src)
        if TCP not in answer:
            return Finding(probe="tcp", target=target, status="filtered",
                           detail=_icmp_error(answer), responder=src)
        flags = str(answer[TCP].flags)
        rtt = _ms(query, answer)
        if "S" in flags and "A" in flags:
            rst = base / TCP(sport=sport, dport=port, flags="R", seq=seq + 1)
            self._socket(hop, rst).send(rst)
            return Finding(probe="tcp", target=target, status="open",
                           detail=f"SYN-ACK from {src} in {rtt} ms", rtt_ms=rtt, responder=src)
        return Finding(probe="tcp", target=target, status="closed",
                       detail=f"RST ({flags}) from {src} in {rtt} ms", rtt_ms=rtt, responder=src)

    def udp(self, hop: Hop, port: int) -> Finding:
        target = f"{hop.address}:{port}/udp"
        base = self._ip(hop)
        if isinstance(base, Finding):
            return Finding(probe="udp", target=target, status=base.status, detail=base.detail)
        got = self._ask(hop, base / UDP(sport=_port(), dport=port) / Raw(PAYLOAD))
        if got is None:
            return Finding(probe="udp", target=target, status="open|filtered",
                           detail=f"no answer in {self.timeout:g} s")
        query, answer = got
        src = str(answer[IP].src)
        if UDP in answer and ICMP not in answer:
            rtt = _ms(query, answer)
            return Finding(probe="udp", target=target, status="open",
                           detail=f"UDP reply from {src} in {rtt} ms", rtt_ms=rtt, responder=src)
        closed = int(answer[ICMP].type) == 3 and int(answer[ICMP].code) == 3
        return Finding(probe="udp", target=target, status="closed" if closed else "filtered",
                       detail=_icmp_error(answer), responder=src)

    def pmtu(self, hop: Hop, *, over: bool) -> Finding:
        size = hop.mtu + (1 if over else 0)
        if hop.local:
            return Finding(probe="pmtu", target=hop.address, status="skipped",
                           detail="own address", size=size)
        base = self._ip(hop, flags="DF")
        if isinstance(base, Finding):
            return Finding(probe="pmtu", target=hop.address, status=base.status,
                           detail=base.detail, size=size)
        frame = base / ICMP(id=_port(), seq=1) / Raw(b"\0" * (size - 28))
        what = f"{size} bytes DF"
        try:
            got = self._ask(hop, frame)
        except OSError as err:
            if err.errno != errno.EMSGSIZE:
                raise
            return Finding(probe="pmtu", target=hop.address, status="refused", size=size,
                           detail=f"{what}: refused locally (EMSGSIZE, {hop.iface} mtu {hop.mtu})")
        if got is None:
            return Finding(probe="pmtu", target=hop.address, status="no-reply", size=size,
                           detail=f"{what}: no answer in {self.timeout:g} s")
        return _pmtu_answer(hop, got[1], size=size, what=what)


def _pmtu_answer(hop: Hop, answer: Any, *, size: int, what: str) -> Finding:
    icmp, src = answer[ICMP], str(answer[IP].src)
    if int(icmp.type) == 0:
        return Finding(probe="pmtu", target=hop.address, status="passes", size=size,
                       detail=f"{what}: echo reply", responder=src)
    if int(icmp.type) == 3 and int(icmp.code) == 4:
        mtu = int(icmp.nexthopmtu)
        return Finding(probe="pmtu", target=hop.address, status="frag-needed", size=size,
                       mtu=mtu, responder=src,
                       detail=f"{what}: fragmentation needed, mtu {mtu} at {src}")
    return Finding(probe="pmtu", target=hop.address, status="unreachable", size=size,
                   detail=f"{what}: {_icmp_error(answer)}", responder=src)


@contextlib.contextmanager
def open_prober(*, timeout: float) -> Iterator[Prober]:
    """A prober for the current namespace; its sockets are closed on exit."""
    refresh_scapy_caches()
    prober = Prober(timeout=timeout)
    try:
        yield prober
    finally:
        prober.close()
