"""Host-port reservation: conflicts, stale owners, release, GC records, and the /proc parsing
of listening sockets. Files only (under tmp_path); host sockets are faked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall import hostports, hostsockets
from pycni.firewall.hostports import HostPortConflict, Record, Registry, overlaps
from pycni.firewall.hostsockets import Listener, parse_proc_net, parse_sctp_eps
from pycni.firewall.model import AttachmentKey, PortMap, PortMapping, network_tag


def record(cid: str, *mappings: PortMapping, network: str = "net", netns: str = "",
           netns_id: str = "") -> Record:
    pm = PortMap(key=AttachmentKey(network, cid, "eth0"),
                 mappings=mappings or (PortMapping(None, 8080, 80),),
                 container_ipv4="10.99.0.5", container_ipv6="fd00::5",
                 subnets=("10.99.0.0/24", "fd00::/64"))
    return Record(portmap=pm, netns=netns, netns_id=netns_id, backend="nftables")


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(str(tmp_path), check_host_sockets=False)


def files(reg: Registry) -> list[str]:
    root = Path(reg.dir)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name != "lock")


@pytest.mark.parametrize(("a", "b", "hit"), [
    ("any", "any", True), ("any", "any4", True), ("any", "10.0.0.1", True),
    ("any", "fd00::1", True), ("any4", "any6", False), ("any4", "10.0.0.1", True),
    ("any4", "fd00::1", False), ("any6", "fd00::1", True), ("10.0.0.1", "10.0.0.1", True),
    ("10.0.0.1", "10.0.0.2", False), ("10.0.0.1", "fd00::1", False),
])
def test_overlaps(a: str, b: str, hit: bool) -> None:
    assert overlaps(a, b) is hit
    assert overlaps(b, a) is hit


def test_reserve_then_a_collision_names_the_port_and_owner(reg: Registry) -> None:
    assert reg.reserve(record("a")) == []
    with pytest.raises(HostPortConflict) as err:
        reg.reserve(record("b", PortMapping(None, 9000, 90), PortMapping("10.0.0.1", 8080, 80)))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "10.0.0.1:8080/tcp is already published by container a (network net, ifname " \
           "eth0)" in err.value.details
    assert reg.load(record("b").label) is None  # nothing of b was written
    assert not any("9000" in f for f in files(reg))


def test_other_protocols_and_addresses_are_free(reg: Registry) -> None:
    reg.reserve(record("a", PortMapping("10.0.0.1", 8080, 80)))
    reg.reserve(record("b", PortMapping("10.0.0.2", 8080, 80)))
    reg.reserve(record("c", PortMapping(None, 8080, 80, "udp")))
    reg.reserve(record("d", PortMapping("fd00::1", 8080, 80)))
    with pytest.raises(HostPortConflict):
        reg.reserve(record("e", PortMapping("0.0.0.0", 8080, 80)))


def test_a_retried_add_keeps_its_ports_and_drops_those_it_no_longer_maps(reg: Registry) -> None:
    reg.reserve(record("a", PortMapping(None, 8080, 80), PortMapping(None, 8081, 81)))
    reg.reserve(record("a", PortMapping(None, 8080, 80)))
    assert files(reg) == [f"attachments/{record('a').label}.json", "ports/tcp-8080/any"]
    reg.reserve(record("b", PortMapping(None, 8081, 81)))


def test_release_and_records(reg: Registry) -> None:
    reg.reserve(record("a"))
    reg.reserve(record("b", PortMapping(None, 9, 9)))
    reg.reserve(record("c", PortMapping(None, 7, 7), network="other"))
    assert [r.portmap.key.container_id for r in reg.records(network_tag("net"))] == \
        sorted(["a", "b"], key=lambda c: record(c).label)
    released = reg.release(record("a").label)
    assert released == record("a")
    assert reg.release(record("a").label) is None
    reg.reserve(record("d"))  # a's port is free again
    assert reg.holds(record("d")) == []
    assert reg.holds(record("a")) == ["host port 8080/tcp is not reserved for this attachment",
                                      "no host-port record for this attachment"]


def test_the_record_round_trips(reg: Registry) -> None:
    rec = record("a", PortMapping("fd00::1", 53, 5353, "udp"), PortMapping(None, 80, 8080, "sctp"),
                 netns="/run/netns/a", netns_id="4:123")
    reg.reserve(rec)
    assert reg.load(rec.label) == rec


def test_an_owner_whose_netns_is_gone_is_reclaimed(reg: Registry, tmp_path: Path) -> None:
    ns = tmp_path / "netns-a"
    ns.write_text("")
    old = record("a", netns=str(ns), netns_id=hostports.netns_identity(str(ns)))
    reg.reserve(old)
    with pytest.raises(HostPortConflict):
        reg.reserve(record("b"))  # a is alive
    ns.unlink()
    assert reg.reserve(record("b")) == [old]
    assert reg.load(old.label) is None
    assert reg.holds(record("b")) == []


def test_an_orphan_port_file_is_reclaimed(reg: Registry) -> None:
    reg.reserve(record("a"))
    os.unlink(os.path.join(reg.dir, "attachments", f"{record('a').label}.json"))
    assert reg.reserve(record("b")) == []
    assert reg.holds(record("b")) == []


def test_an_empty_port_file_of_a_killed_writer_is_released_by_del(reg: Registry) -> None:
    """A writer killed between creating a port file and writing it (pycni before the writes
    were atomic) left it empty: the attachment's DEL removes it, and its directory."""
    reg.reserve(record("a"))
    Path(reg.dir, "ports", "tcp-8080", "any").write_text("")
    assert reg.release(record("a").label) == record("a")
    assert files(reg) == []
    assert not Path(reg.dir, "ports", "tcp-8080").exists()


def test_port_files_are_written_whole_and_temp_files_are_nobodys(reg: Registry) -> None:
    reg.reserve(record("a"))
    port_dir = Path(reg.dir, "ports", "tcp-8080")
    assert (port_dir / "any").read_text() == record("a").label
    # What a writer killed between its temp file and the rename leaves: not a reservation.
    (port_dir / ".any.4242.tmp").write_text(record("a").label)
    reg.reserve(record("b", PortMapping(None, 8080, 80, "udp")))
    assert reg.holds(record("a")) == []
    assert reg.release(record("a").label) == record("a")
    assert not port_dir.exists()


def test_an_unreadable_record_is_an_io_error(reg: Registry) -> None:
    reg.reserve(record("a"))
    Path(reg.dir, "attachments", f"{record('a').label}.json").write_text("{")
    with pytest.raises(CNIError) as err:
        reg.load(record("a").label)
    assert err.value.code == ErrorCode.IO_FAILURE


def test_namespaces_get_separate_registries(tmp_path: Path) -> None:
    assert Registry(str(tmp_path)).dir.startswith(str(tmp_path / "ns-"))


# ------------------------------------------------------------------------ host sockets


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:0016 0200007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 333 1
"""
_ANY6 = "0" * 32
TCP6 = (
    "  sl  local_address remote_address st tx rx tr\n"
    f"   0: {_ANY6}:0050 {_ANY6}:0000 0A 0:0 0:0 0 0 0 444 1\n"
    f"   1: 0000000000000000FFFF00000100000A:1F91 {_ANY6}:0000 0A 0:0 0:0 0 0 0 555 1\n"
)
UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
  10: 00000000:14EB 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 666 2
  11: 0500000A:A410 0800000A:0035 01 00000000:00000000 00:00000000 00000000     0        0 777 2
"""
SCTP = """\
 ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS
ffff8f ffff8e 2   10  29   5000      0 888 10.0.0.1 fd00::1
"""


def test_proc_net_tables_are_decoded() -> None:
    assert parse_proc_net(TCP, "tcp") == [Listener("tcp", "0.0.0.0", 8080, 111),
                                          Listener("tcp", "127.0.0.1", 9090, 222)]
    assert parse_proc_net(TCP6, "tcp") == [Listener("tcp", "::", 80, 444),
                                           Listener("tcp", "10.0.0.1", 8081, 555)]
    assert parse_proc_net(UDP, "udp") == [Listener("udp", "0.0.0.0", 5355, 666)]
    assert parse_sctp_eps(SCTP) == [Listener("sctp", "10.0.0.1", 5000, 888),
                                    Listener("sctp", "fd00::1", 5000, 888)]
    assert Listener("tcp", "::", 80, 1).reservation == "any"
    assert Listener("tcp", "0.0.0.0", 80, 1).reservation == "any4"


@pytest.mark.parametrize(("mapping", "conflict"), [
    (PortMapping(None, 8080, 80), True),            # 0.0.0.0:8080 listener
    (PortMapping("fd00::1", 8080, 80), False),      # ... is IPv4 only
    (PortMapping("10.0.0.9", 9090, 80), False),     # 127.0.0.1:9090 listener: other address
    (PortMapping(None, 9090, 80), True),            # ... but 127.0.0.1:hostPort is published
    (PortMapping("fd00::1", 80, 80), True),         # [::]:80 is dual-stack
    (PortMapping(None, 8080, 80, "udp"), False),    # other protocol
    (PortMapping(None, 5355, 80, "udp"), True),     # bound UDP
    (PortMapping(None, 41999, 80, "udp"), False),   # a connected UDP client is not a server
])
def test_a_listening_host_socket_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapping: PortMapping, conflict: bool
) -> None:
    tables = {"tcp": TCP, "tcp6": TCP6, "udp": UDP, "udp6": ""}
    monkeypatch.setattr(hostsockets, "_read", lambda path: tables.get(path.rsplit("/", 1)[1], ""))
    monkeypatch.setattr(hostsockets, "socket_owner", lambda inode: f"pid 42 (inode {inode})")
    reg = Registry(str(tmp_path))
    if not conflict:
        reg.reserve(record("a", mapping))
        return
    with pytest.raises(HostPortConflict, match=r"a host process listens on .*pid 42"):
        reg.reserve(record("a", mapping))
    assert reg.load(record("a").label) is None
