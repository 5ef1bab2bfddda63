"""pycni.net.nlattrs: a netlink message cut to the wanted attributes decodes, with pyroute2's
own class, to exactly those attributes and values (odd lengths padded, nested ones cut too)."""

from __future__ import annotations

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from pycni.net.nlattrs import attribute_types, trimmed

_HEADER_AND_IFINFMSG = 32


def _encoded() -> bytes:
    msg = ifinfmsg()
    msg["index"], msg["flags"] = 7, 1
    msg["attrs"] = [
        ["IFLA_IFNAME", "odd"],  # 4 bytes with its NUL: the next one starts padded
        ["IFLA_TXQLEN", 1000],
        ["IFLA_ADDRESS", "02:00:00:00:00:0b"],  # 6 bytes: padded
        ["IFLA_MTU", 1400],
        ["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "veth"]]}],
        ["IFLA_MASTER", 3],
    ]
    msg.encode()
    return bytes(msg.data)


def test_only_the_wanted_attributes_are_left_with_their_values() -> None:
    wanted = attribute_types(ifinfmsg, {"IFLA_IFNAME": (), "IFLA_ADDRESS": (), "IFLA_MASTER": (),
                                        "IFLA_LINKINFO": ("IFLA_INFO_KIND",)})
    cut = ifinfmsg(trimmed(_encoded(), _HEADER_AND_IFINFMSG, wanted))
    cut.decode()
    assert [name for name, _ in cut["attrs"]] == [
        "IFLA_IFNAME", "IFLA_ADDRESS", "IFLA_LINKINFO", "IFLA_MASTER"]
    assert (cut["index"], cut["flags"]) == (7, 1)
    assert cut.get_attr("IFLA_IFNAME") == "odd"
    assert cut.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:0b"
    assert cut.get_attr("IFLA_MASTER") == 3
    assert cut.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
    assert cut["header"]["length"] == len(trimmed(_encoded(), _HEADER_AND_IFINFMSG, wanted))


def test_nothing_wanted_leaves_the_fixed_part_and_a_truncated_tail_is_dropped() -> None:
    data = _encoded()
    empty = trimmed(data, _HEADER_AND_IFINFMSG, {})
    assert len(empty) == _HEADER_AND_IFINFMSG
    wanted = attribute_types(ifinfmsg, {"IFLA_MASTER": ()})
    cut = trimmed(data[:-3], _HEADER_AND_IFINFMSG, wanted)  # the last attribute cut short
    assert len(cut) == _HEADER_AND_IFINFMSG


def test_attribute_types_read_both_forms_of_a_pyroute2_attribute_table() -> None:
    """``(name, format)`` at the type's position, or ``(type, name, format)``; a nested
    attribute's inner names come from the class its format names."""

    class Inner:
        nla_map = ((1, "IN_KIND", "asciiz"), (2, "IN_DATA", "hex"))

    class Explicit:
        nla_map = ((5, "A_MTU", "uint32"), (9, "A_INFO", "inner"))
        inner = Inner

    assert attribute_types(Explicit, {"A_MTU": (), "A_INFO": ("IN_KIND",)}) == {
        5: None, 9: frozenset({1})}
    assert attribute_types(ifinfmsg, {"IFLA_IFNAME": (), "IFLA_LINKINFO": ("IFLA_INFO_KIND",)}) == {
        3: None, 18: frozenset({1})}
