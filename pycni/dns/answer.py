"""One query in, one decision out: a wire answer, "forward it", or nothing. dnspython does the
wire format; this module decides.

- Not a query at all (shorter than a header, or a response: answering those could loop): drop.
- Larger than ``MAX_QUERY`` or undecodable: FORMERR (the header's id is all that is echoed).
- Not a standard query: NOTIMP; not exactly one question: FORMERR.
- A name of the view's networks (case-insensitive, ``NAME`` or ``NAME.DOMAIN``): A, AAAA, ANY
  from its addresses (no data of the asked type: NOERROR with no answer); PTR of one of their
  addresses: the container's first name. Authoritative, TTL ``TTL``.
- Unknown under one of the networks' domains: NXDOMAIN (that domain is ours, not upstream's).
- Anything else: forward (the caller relays the upstream's answer; ``servfail`` if none comes).

Answers are cached per view keyed by the query's bytes after its id (the id is spliced back):
the same question from the same view gets the same bytes until the view's zones change.
Over UDP an answer is cut to 512 bytes, or the client's EDNS size up to 4096; one that does
not fit goes out empty with TC set, so the client asks again over TCP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pycni.dns.zone import View

__all__ = ["MAX_QUERY", "TTL", "Forward", "respond", "servfail"]

log = logging.getLogger("pycni.dns")

MAX_QUERY: Final = 4096  # a question and an OPT record fit many times over
TTL: Final = 60
_HEADER: Final = 12
_UDP_PLAIN: Final = 512
_UDP_MAX: Final = 4096
_CACHE_ENTRIES: Final = 4096


@dataclass(frozen=True, slots=True)
class Forward:
    """Not ours to answer: relay it upstream (``query`` builds the SERVFAIL if that fails)."""

    query: dns.message.Message


def respond(data: bytes, view: View, *, tcp: bool,
            cache: dict[bytes, bytes] | None = None) -> bytes | Forward | None:
    """The wire answer to ``data``, ``Forward``, or None (drop it)."""
    query = _decode(data)
    if not isinstance(query, dns.message.Message):
        return query
    if query.opcode() != dns.opcode.QUERY:
        return _error(query, dns.rcode.NOTIMP)
    if len(query.question) != 1:
        return _error(query, dns.rcode.FORMERR)
    try:
        wire = _local(query, view, tcp=tcp)
    except Exception:  # a query nobody foresaw must not stop the resolver: it answers SERVFAIL
        log.exception("cannot answer %s", query.question[0])
        return servfail(query)
    if wire is None:
        return Forward(query)
    if cache is not None:
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        cache[data[2:]] = wire[2:]
    return wire


def _decode(data: bytes) -> dns.message.Message | bytes | None:
    """The query; FORMERR's wire if it is oversized or undecodable; None if it is no query."""
    if len(data) < _HEADER:
        return None
    if len(data) > MAX_QUERY:
        return _formerr(data)
    try:
        query = dns.message.from_wire(data)
    except dns.message.ShortHeader:
        return None
    except Exception:  # any undecodable query: FORMERR, and the resolver carries on
        return _formerr(data)
    return None if query.flags & dns.flags.QR else query


def servfail(query: dns.message.Message) -> bytes:
    return _error(query, dns.rcode.SERVFAIL)


def _formerr(data: bytes) -> bytes:
    reply = dns.message.Message(id=int.from_bytes(data[:2], "big"))
    reply.flags = dns.flags.QR
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
    reply = dns.message.make_response(query, recursion_available=True, our_payload=_UDP_MAX)
    reply.set_rcode(rcode)
    return reply.to_wire()


def _local(query: dns.message.Message, view: View, *, tcp: bool) -> bytes | None:
    """The answer from the view's zones, or None when the name is not theirs."""
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN:
        return None
    name = question.name.to_text(omit_final_dot=True).lower()
    reply = dns.message.make_response(query, recursion_available=True, our_payload=_UDP_MAX)
    reply.flags |= dns.flags.AA
    rdtype = question.rdtype
    target = view.pointer(name) if rdtype == dns.rdatatype.PTR else None
    if target is not None:
        reply.answer.append(dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN,
                                                dns.rdatatype.PTR, f"{target}."))
        return _to_wire(reply, query, tcp=tcp)
    addresses = view.lookup(name)
    if addresses is None:
        if not view.owns(name):
            return None
        reply.set_rcode(dns.rcode.NXDOMAIN)
        return _to_wire(reply, query, tcp=tcp)
    for kind, ips in ((dns.rdatatype.A, addresses.v4), (dns.rdatatype.AAAA, addresses.v6)):
        if ips and rdtype in (kind, dns.rdatatype.ANY):
            reply.answer.append(dns.rrset.from_text_list(question.name, TTL,
                                                         dns.rdataclass.IN, kind, list(ips)))
    return _to_wire(reply, query, tcp=tcp)


def _to_wire(reply: dns.message.Message, query: dns.message.Message, *, tcp: bool) -> bytes:
    limit = 65535 if tcp else _UDP_PLAIN
    if not tcp and query.edns >= 0:
        limit = max(_UDP_PLAIN, min(query.payload, _UDP_MAX))
    try:
        return reply.to_wire(max_size=limit)
    except dns.exception.TooBig:
        reply.answer.clear()
        reply.flags |= dns.flags.TC
        return reply.to_wire()
