"""The firewall model: tags are stable, short and safe; Masquerade validates and normalises."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model import TAG_LEN, AttachmentKey, Masquerade, network_tag, parse_label

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def masq(subnets: tuple[str, ...] = ("10.88.0.0/16",), sources: tuple[str, ...] = ("10.88.0.2",),
         network: str = "pycni") -> Masquerade:
    return Masquerade(key=AttachmentKey(network, "abc123", "eth0"), network_subnets=subnets,
                      sources=sources)


def test_tags_are_pinned() -> None:
    # Existing rules are found by these values: changing them orphans every running container.
    key = AttachmentKey("pycni", "abc123", "eth0")
    assert key.tag == "b22526b6f845658f"
    assert key.network_tag == network_tag("pycni") == "b0a0b6fe4bcc892e"
    assert key.label == "b0a0b6fe4bcc892e-b22526b6f845658f"


def test_tag_is_the_documented_hash() -> None:
    key = AttachmentKey("net", "cid", "eth1")
    raw = json.dumps(["attachment", "net", "cid", "eth1"], separators=(",", ":"))
    assert key.tag == hashlib.sha256(raw.encode()).hexdigest()[:TAG_LEN]


def test_tag_depends_on_every_field_and_is_unambiguous() -> None:
    tags = {
        AttachmentKey("a", "b", "c").tag,
        AttachmentKey("a", "b", "d").tag,
        AttachmentKey("a", "x", "c").tag,
        AttachmentKey("x", "b", "c").tag,
        AttachmentKey("a-b", "c", "").tag,
        AttachmentKey("a", "b-c", "").tag,
    }
    assert len(tags) == 6
    assert network_tag("a") != AttachmentKey("a", "", "").tag


@given(st.text(), st.text(), st.text())
def test_tags_are_always_short_hex(network: str, cid: str, ifname: str) -> None:
    key = AttachmentKey(network, cid, ifname)
    assert HEX16.match(key.tag)
    assert HEX16.match(key.network_tag)
    assert parse_label(key.label) == (key.network_tag, key.tag)


@pytest.mark.parametrize("label", [
    "", "pycni", "abc-def", "b0a0b6fe4bcc892e",
    "B0A0B6FE4BCC892E-b22526b6f845658f", "b0a0b6fe4bcc892e-b22526b6f845658f-x",
])
def test_parse_label_rejects_foreign_comments(label: str) -> None:
    assert parse_label(label) is None


def test_masquerade_normalises_per_version() -> None:
    m = masq(subnets=("fd00:88::5/64", "10.88.7.1/16", "10.0.0.0/8", "10.88.0.0/16"),
             sources=("10.88.0.2", "FD00:88::0002", "10.88.0.2"))
    assert m.subnets_of(4) == ("10.0.0.0/8", "10.88.0.0/16")
    assert m.subnets_of(6) == ("fd00:88::/64",)
    assert m.sources_of(4) == ("10.88.0.2",)
    assert m.sources_of(6) == ("fd00:88::2",)


def test_chain_tag_follows_network_and_subnets_not_order_or_sources() -> None:
    a = masq(subnets=("10.1.0.0/16", "fd00::/64"))
    same = masq(subnets=("fd00::/64", "10.1.0.5/16"), sources=("10.1.0.9",))
    assert a.chain_tag == same.chain_tag
    assert a.chain_tag != masq(subnets=("10.1.0.0/16",)).chain_tag
    assert a.chain_tag != masq(subnets=("10.1.0.0/16", "fd00::/64"), network="other").chain_tag
    assert HEX16.match(a.chain_tag)


@pytest.mark.parametrize(("subnets", "sources"), [
    (("10.88.0.0/16",), ("10.88.0.2/24",)),      # a source with a prefix
    (("10.88.0.0/16",), ("not-an-ip",)),
    (("10.88.0.0/33",), ("10.88.0.2",)),
    (("garbage",), ("10.88.0.2",)),
])
def test_masquerade_rejects_bad_input(subnets: tuple[str, ...], sources: tuple[str, ...]) -> None:
    with pytest.raises(CNIError) as info:
        masq(subnets=subnets, sources=sources)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_masquerade_wants_tuples() -> None:
    with pytest.raises(CNIError):
        Masquerade(key=AttachmentKey("n", "c", "i"), network_subnets=["10.0.0.0/8"],  # type: ignore[arg-type]
                   sources=("10.0.0.1",))


def test_dataclasses_are_frozen_and_hashable() -> None:
    m = masq()
    with pytest.raises(AttributeError):
        m.sources = ()  # type: ignore[misc]
    assert {m, masq()} == {m}
