"""The resolver's decisions on the wire: local names, isolation, forwarding, bad queries."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from pycni.dns.answer import MAX_QUERY, Forward, respond
from pycni.dns.records import Registration
from pycni.dns.zone import View, Zone


def _zone(network: str, *regs: Registration) -> Zone:
    zone = Zone(network)
    for reg in regs:
        zone.put(reg)
    return zone


WEB = Registration(network="app", container_id="c-web", ifname="eth0", names=("web", "www"),
                   ips=("10.5.0.2", "fd00::2"), domain="dns.podman")
DB = Registration(network="app", container_id="c-db", ifname="eth0", names=("db",),
                  ips=("10.5.0.3",), domain="dns.podman")
OTHER = Registration(network="other", container_id="c-x", ifname="eth0", names=("secret",),
                     ips=("10.6.0.2",))


@pytest.fixture
def app() -> View:
    return View(zones=(_zone("app", WEB, DB),))


def _ask(view: View, name: str, rdtype: str = "A", *, tcp: bool = False,
         cache: dict[bytes, bytes] | None = None) -> dns.message.Message:
    outcome = respond(dns.message.make_query(name, rdtype).to_wire(), view, tcp=tcp,
                      cache=cache)
    assert isinstance(outcome, bytes), outcome
    return dns.message.from_wire(outcome)


def _addresses(reply: dns.message.Message) -> list[str]:
    return sorted(item.to_text() for rrset in reply.answer for item in rrset)


@pytest.mark.parametrize("name", ["web", "WEB", "Web.", "www", "web.dns.podman",
                                  "WWW.DNS.PODMAN."])
def test_names_and_aliases_resolve_case_insensitively_with_and_without_the_domain(
    app: View, name: str
) -> None:
    reply = _ask(app, name)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert _addresses(reply) == ["10.5.0.2"]
    assert reply.question[0].name.to_text().rstrip(".") == name.rstrip(".")  # echoed as asked


def test_aaaa_and_any(app: View) -> None:
    assert _addresses(_ask(app, "web", "AAAA")) == ["fd00::2"]
    assert _addresses(_ask(app, "web", "ANY")) == ["10.5.0.2", "fd00::2"]
    nodata = _ask(app, "db", "AAAA")  # a name without an address of that family
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    assert _ask(app, "web", "MX").answer == []


def test_ptr_of_a_container_address_is_its_first_name(app: View) -> None:
    assert _addresses(_ask(app, "2.0.5.10.in-addr.arpa", "PTR")) == ["web.dns.podman."]
    pointer = dns.reversename.from_address("fd00::2").to_text()
    assert _addresses(_ask(app, pointer.upper(), "PTR")) == ["web.dns.podman."]


def test_a_shared_alias_answers_with_every_container(app: View) -> None:
    twin = Registration(network="app", container_id="c-web2", ifname="eth0", names=("www",),
                        ips=("10.5.0.9",), domain="dns.podman")
    view = View(zones=(_zone("app", WEB, DB, twin),))
    assert _addresses(_ask(view, "www")) == ["10.5.0.2", "10.5.0.9"]


def test_names_of_other_networks_are_not_answered_but_forwarded(app: View) -> None:
    query = dns.message.make_query("secret", "A")
    assert isinstance(respond(query.to_wire(), app, tcp=False), Forward)
    other = View(zones=(_zone("other", OTHER),))
    assert _addresses(_ask(other, "secret")) == ["10.6.0.2"]
    assert isinstance(respond(dns.message.make_query("web", "A").to_wire(), other, tcp=False),
                      Forward)


def test_unknown_name_under_the_domain_is_nxdomain_anything_else_is_forwarded(app: View) -> None:
    assert _ask(app, "gone.dns.podman").rcode() == dns.rcode.NXDOMAIN
    assert isinstance(respond(dns.message.make_query("example.org", "A").to_wire(), app,
                              tcp=False), Forward)
    unknown_ptr = dns.message.make_query("9.9.9.10.in-addr.arpa", "PTR")
    assert isinstance(respond(unknown_ptr.to_wire(), app, tcp=False), Forward)


def test_a_dropped_record_stops_resolving(app: View) -> None:
    app.zones[0].drop(DB.label)
    assert isinstance(respond(dns.message.make_query("db", "A").to_wire(), app, tcp=False),
                      Forward)


def test_cached_answers_are_the_same_bytes_under_the_askers_id(app: View) -> None:
    cache: dict[bytes, bytes] = {}
    query = dns.message.make_query("web", "A")
    first = respond(query.to_wire(), app, tcp=False, cache=cache)
    assert isinstance(first, bytes)
    assert cache == {query.to_wire()[2:]: first[2:]}


@pytest.mark.parametrize("data", [b"", b"\x12\x34", b"\x00" * 11])
def test_shorter_than_a_header_is_dropped(app: View, data: bytes) -> None:
    assert respond(data, app, tcp=False) is None


def test_a_response_is_never_answered(app: View) -> None:
    response = dns.message.make_response(dns.message.make_query("web", "A"))
    assert respond(response.to_wire(), app, tcp=False) is None


@pytest.mark.parametrize("data", [
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03we",  # a question cut short
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xc0\x0c" + b"\x00\x01\x00\x01",  # loop
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01junk",
    b"\xab\xcd" + b"\xff" * 40,
])
def test_undecodable_queries_get_formerr_with_their_id(app: View, data: bytes) -> None:
    outcome = respond(data, app, tcp=False)
    assert isinstance(outcome, bytes)
    reply = dns.message.from_wire(outcome)
    assert reply.id == 0xABCD
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.flags & dns.flags.QR


def test_oversized_query_gets_formerr(app: View) -> None:
    query = dns.message.make_query("web", "A")
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * MAX_QUERY)
    query.use_edns(0, options=[padding])
    data = query.to_wire(max_size=65535)
    assert len(data) > MAX_QUERY
    outcome = respond(data, app, tcp=False)
    assert isinstance(outcome, bytes)
    assert dns.message.from_wire(outcome).rcode() == dns.rcode.FORMERR


def test_two_questions_formerr_and_other_opcodes_notimp(app: View) -> None:
    query = dns.message.make_query("web", "A")
    query.question.append(dns.rrset.RRset(dns.name.from_text("db"), dns.rdataclass.IN,
                                          dns.rdatatype.A))
    outcome = respond(query.to_wire(), app, tcp=False)
    assert isinstance(outcome, bytes)
    assert dns.message.from_wire(outcome).rcode() == dns.rcode.FORMERR
    notify = dns.message.make_query("web", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    outcome = respond(notify.to_wire(), app, tcp=False)
    assert isinstance(outcome, bytes)
    assert dns.message.from_wire(outcome).rcode() == dns.rcode.NOTIMP


def test_an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() -> None:
    many = Registration(network="app", container_id="c-many", ifname="eth0", names=("many",),
                        ips=tuple(f"fd00::{i:x}" for i in range(1, 60)))
    view = View(zones=(_zone("app", many),))
    udp = _ask(view, "many", "AAAA")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert len(_addresses(_ask(view, "many", "AAAA", tcp=True))) == 59


def test_a_failure_while_answering_is_servfail_not_a_crash(
    app: View, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app, "lookup", broken)
    outcome = respond(dns.message.make_query("web", "A").to_wire(), app, tcp=False)
    assert isinstance(outcome, bytes)
    assert dns.message.from_wire(outcome).rcode() == dns.rcode.SERVFAIL
