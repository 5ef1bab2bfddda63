"""The host-local operations: allocate / release / find / gc / status on a tmp data dir."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from pycni.cni.errors import CNIError
from pycni.ipam import hostlocal
from pycni.ipam.allocator import Allocation
from pycni.ipam.config import HostLocalConfig, parse_ipam_config
from pycni.ipam.requested import requested_ips
from pycni.ipam.store import Store, attachment_key

NET = "testnet"


def _config(tmp_path: Path, *range_sets: list[dict[str, str]]) -> HostLocalConfig:
    ranges = list(range_sets) or [[{"subnet": "10.1.0.0/29"}]]  # .2 - .6: five addresses
    return parse_ipam_config({"ranges": ranges, "dataDir": str(tmp_path)})


def _add(conf: HostLocalConfig, cid: str, ifname: str = "eth0", **kw: Any) -> list[str]:
    allocs = hostlocal.allocate(conf, network=NET, container_id=cid, ifname=ifname, **kw)
    return [a.address for a in allocs]


def _del(conf: HostLocalConfig, cid: str, ifname: str = "eth0") -> None:
    hostlocal.release(conf, network=NET, container_id=cid, ifname=ifname)


def _files(tmp_path: Path) -> dict[str, bytes]:
    """Reservation files only (names that are addresses) with their content."""
    out = {}
    for path in (tmp_path / NET).iterdir():
        try:
            ip_address(path.name)
        except ValueError:
            continue
        out[path.name] = path.read_bytes()
    return out


def _go_state(tmp_path: Path, files: dict[str, bytes], last: str | None = None) -> None:
    """A network directory as the reference Go plugin leaves it: no index, no marker."""
    net = tmp_path / NET
    net.mkdir(parents=True)
    (net / "lock").write_bytes(b"")
    for name, content in files.items():
        (net / name).write_bytes(content)
    if last is not None:
        (net / "last_reserved_ip.0").write_text(last)


# -- allocate -----------------------------------------------------------------------------


def test_allocation_result(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}])
    allocs = hostlocal.allocate(conf, network=NET, container_id="c1", ifname="eth0")
    assert allocs == [
        Allocation(address="10.1.0.2/24", gateway="10.1.0.1", range_set_index=0),
        Allocation(address="fd00::2/64", gateway="fd00::1", range_set_index=1),
    ]


def test_round_robin_does_not_reuse_a_freed_address_at_once(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    assert _add(conf, "a") == ["10.1.0.2/29"]
    assert _add(conf, "b") == ["10.1.0.3/29"]
    _del(conf, "a")
    assert _add(conf, "c") == ["10.1.0.4/29"]  # not .2 again
    assert _add(conf, "d") == ["10.1.0.5/29"]
    assert _add(conf, "e") == ["10.1.0.6/29"]
    assert _add(conf, "f") == ["10.1.0.2/29"]  # wrapped, skipping the taken and the gateway


def test_resumes_from_go_written_last_reserved(tmp_path: Path) -> None:
    _go_state(tmp_path, {"10.1.0.4": b"old\r\neth0"}, last="10.1.0.4")
    conf = _config(tmp_path)
    assert _add(conf, "new") == ["10.1.0.5/29"]
    assert _add(conf, "new2") == ["10.1.0.6/29"]
    assert _add(conf, "new3") == ["10.1.0.2/29"]


def test_exhaustion_leaves_nothing_reserved(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/30"}])
    _add(conf, "first")  # takes 10.2.0.2, the only address of set 1
    before = _files(tmp_path)
    with pytest.raises(CNIError) as info:
        _add(conf, "second")
    assert info.value.code == 999
    assert "no IP addresses available in range set: 10.2.0.1-10.2.0.2" in info.value.msg
    assert _files(tmp_path) == before  # set 0 was not reserved either
    assert hostlocal.find(conf, network=NET, container_id="second", ifname="eth0") == []
    assert not (tmp_path / NET / "by-attachment" / attachment_key("second", "eth0")).exists()


def test_failed_write_rolls_back_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}])
    _add(conf, "keep")

    def fail(self: Store, index: int, ip: object) -> None:
        raise CNIError(5, "disk full")

    monkeypatch.setattr(Store, "set_last_reserved", fail)
    with pytest.raises(CNIError, match="disk full"):
        _add(conf, "doomed")
    monkeypatch.undo()
    assert sorted(_files(tmp_path)) == ["10.1.0.2", "fd00::2"]
    assert hostlocal.find(conf, network=NET, container_id="doomed", ifname="eth0") == []
    assert not (tmp_path / NET / "by-attachment" / attachment_key("doomed", "eth0")).exists()
    assert _add(conf, "next") == ["10.1.0.3/24", "fd00::3/64"]


def test_duplicate_allocation_refused(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    _add(conf, "c1")
    with pytest.raises(CNIError) as info:
        _add(conf, "c1")
    assert info.value.code == 7  # an ADD without its DEL: retrying cannot help
    assert info.value.msg == (
        "10.1.0.2 has been allocated to c1, duplicate allocation is not allowed"
    )
    assert _add(conf, "c1", "eth1") == ["10.1.0.3/29"]  # another interface is another attachment


def test_duplicate_detected_in_go_written_state(tmp_path: Path) -> None:
    _go_state(tmp_path, {"10.1.0.3": b"c1\r\neth0"})
    with pytest.raises(CNIError, match="duplicate allocation"):
        _add(_config(tmp_path), "c1")


def test_allocation_skips_go_reservations(tmp_path: Path) -> None:
    _go_state(tmp_path, {"10.1.0.2": b"x\r\neth0", "10.1.0.3": b"y"})
    assert _add(_config(tmp_path), "c1") == ["10.1.0.4/29"]


# -- requested addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        {"cni_args": "IgnoreUnknown=1;IP=10.1.0.5"},
        {"args": {"cni": {"ips": ["10.1.0.5/29"]}}},
        {"runtime_config": {"ips": ["10.1.0.5"]}},
    ],
)
def test_requested_ip_from_each_source(tmp_path: Path, source: dict[str, Any]) -> None:
    conf = _config(tmp_path)
    assert _add(conf, "c1", requested=requested_ips(**source)) == ["10.1.0.5/29"]
    assert _add(conf, "c2") == ["10.1.0.6/29"]  # the hint follows the requested address


def test_requested_ip_in_one_set_dynamic_in_other(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}])
    got = _add(conf, "c1", requested=[ip_address("fd00::99")])
    assert got == ["10.1.0.2/24", "fd00::99/64"]


def test_requested_ip_taken(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    _add(conf, "c1", requested=[ip_address("10.1.0.4")])
    with pytest.raises(CNIError) as info:
        _add(conf, "c2", requested=[ip_address("10.1.0.4")])
    assert info.value.code == 999
    assert "requested IP address 10.1.0.4 is not available in range set 10.1.0.1-10.1.0.6" in str(
        info.value
    )
    assert sorted(_files(tmp_path)) == ["10.1.0.4"]


@pytest.mark.parametrize(
    ("ip", "reason"),
    [("10.1.0.1", "is the gateway"), ("10.9.0.1", "is not inside any range set")],
)
def test_requested_ip_refused_without_touching_state(tmp_path: Path, ip: str, reason: str) -> None:
    conf = _config(tmp_path)
    with pytest.raises(CNIError) as info:
        _add(conf, "c1", requested=[ip_address(ip)])
    assert info.value.code == 7
    assert reason in info.value.msg
    assert not (tmp_path / NET).exists()


# -- release / find -----------------------------------------------------------------------


def test_release_is_idempotent(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}])
    _add(conf, "c1")
    _add(conf, "c2")
    _del(conf, "c1")
    _del(conf, "c1")
    _del(conf, "never-added")
    assert sorted(_files(tmp_path)) == ["10.1.0.3", "fd00::3"]
    keys = {p.name for p in (tmp_path / NET / "by-attachment").iterdir()}
    assert keys == {".complete", attachment_key("c2", "eth0")}


def test_release_on_unused_network_creates_nothing(tmp_path: Path) -> None:
    conf = _config(tmp_path / "absent")
    _del(conf, "c1")
    assert hostlocal.find(conf, network=NET, container_id="c1", ifname="eth0") == []
    assert hostlocal.gc(conf, network=NET, valid=[]) == []
    assert not (tmp_path / "absent").exists()


def test_release_and_find_write_nothing_in_an_unindexed_directory(tmp_path: Path) -> None:
    """DEL must work on a full disk: a directory not yet indexed (the Go plugin's, or one
    whose marker was lost) with nothing of ours in it is not marked on the way (that is a
    new file: a block and an inode)."""
    _go_state(tmp_path, {})
    before = sorted(p.name for p in (tmp_path / NET).rglob("*"))
    _del(_config(tmp_path), "c1")
    assert hostlocal.find(_config(tmp_path), network=NET, container_id="c1", ifname="eth0") == []
    assert sorted(p.name for p in (tmp_path / NET).rglob("*")) == before


def test_release_uses_the_index_not_a_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _config(tmp_path)
    for cid in ("a", "b", "c"):
        _add(conf, cid)

    def no_scan(self: Store) -> None:
        raise AssertionError("scanned the directory")

    monkeypatch.setattr(Store, "scan", no_scan)
    monkeypatch.setattr(Store, "reserved_ips", no_scan)
    _del(conf, "b")
    _del(conf, "b")
    assert hostlocal.find(conf, network=NET, container_id="c", ifname="eth0") == ["10.1.0.4"]
    assert _add(conf, "d") == ["10.1.0.5/29"]  # the duplicate check does not scan either
    monkeypatch.undo()
    assert sorted(_files(tmp_path)) == ["10.1.0.2", "10.1.0.4", "10.1.0.5"]


def test_release_leaves_a_reassigned_address_alone(tmp_path: Path) -> None:
    # The index still lists .2, but the file now belongs to someone else (e.g. the Go
    # plugin released and reallocated it): only content that matches is removed.
    conf = _config(tmp_path)
    _add(conf, "a")
    (tmp_path / NET / "10.1.0.2").write_bytes(b"other\r\neth0")
    _del(conf, "a")
    assert _files(tmp_path) == {"10.1.0.2": b"other\r\neth0"}


def test_fallback_scan_releases_go_written_files(tmp_path: Path) -> None:
    _go_state(
        tmp_path,
        {
            "10.1.0.2": b"cid\r\neth0",  # current Go format
            "10.1.0.3": b"cid",  # legacy: container id only
            "10.1.0.4": b"cid\r\neth1",  # same container, other interface
            "10.1.0.5": b"other\r\neth0",
        },
    )
    conf = _config(tmp_path)
    assert sorted(hostlocal.find(conf, network=NET, container_id="cid", ifname="eth0")) == [
        "10.1.0.2",
        "10.1.0.3",
    ]
    _del(conf, "cid")
    assert _files(tmp_path) == {"10.1.0.4": b"cid\r\neth1", "10.1.0.5": b"other\r\neth0"}


def test_find_for_check(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}])
    _add(conf, "c1")
    assert hostlocal.find(conf, network=NET, container_id="c1", ifname="eth0") == [
        "10.1.0.2",
        "fd00::2",
    ]
    assert hostlocal.find(conf, network=NET, container_id="c1", ifname="eth1") == []


# -- gc -----------------------------------------------------------------------------------


def test_gc_removes_what_is_not_valid(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}])
    for cid in ("keep", "drop1", "drop2"):
        _add(conf, cid)
    assert hostlocal.gc(conf, network=NET, valid=[("keep", "eth0"), ("gone", "eth0")]) == []
    assert sorted(_files(tmp_path)) == ["10.1.0.2", "fd00::2"]
    keys = {p.name for p in (tmp_path / NET / "by-attachment").iterdir()}
    assert keys == {".complete", attachment_key("keep", "eth0")}
    assert hostlocal.find(conf, network=NET, container_id="keep", ifname="eth0") == [
        "10.1.0.2",
        "fd00::2",
    ]


def test_gc_same_container_other_ifname_is_not_valid(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    _add(conf, "c", "eth0")
    _add(conf, "c", "eth1")
    assert hostlocal.gc(conf, network=NET, valid=[("c", "eth1")]) == []
    assert _files(tmp_path) == {"10.1.0.3": b"c\r\neth1"}


def test_gc_on_go_state_indexes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _go_state(
        tmp_path,
        {
            "10.1.0.2": b"live\r\neth0",
            "10.1.0.3": b"dead\r\neth0",
            "10.1.0.4": b"",  # an ADD that died mid-write
            "10.1.0.5": b"deadlegacy",
        },
    )
    (tmp_path / NET / ".last_reserved_ip.0.77.tmp").write_text("half")
    conf = _config(tmp_path)
    assert hostlocal.gc(conf, network=NET, valid=[("live", "eth0")]) == []
    assert _files(tmp_path) == {"10.1.0.2": b"live\r\neth0"}
    assert not (tmp_path / NET / ".last_reserved_ip.0.77.tmp").exists()
    assert (tmp_path / NET / "by-attachment" / ".complete").exists()

    def no_scan(self: Store) -> None:
        raise AssertionError("scanned the directory")

    monkeypatch.setattr(Store, "scan", no_scan)
    _del(conf, "live")  # now served by the index GC wrote
    monkeypatch.undo()
    assert _files(tmp_path) == {}


def test_gc_keeps_live_legacy_files_and_the_scan(tmp_path: Path) -> None:
    _go_state(tmp_path, {"10.1.0.2": b"live", "10.1.0.3": b"dead"})
    conf = _config(tmp_path)
    assert hostlocal.gc(conf, network=NET, valid=[("live", "eth0")]) == []
    assert _files(tmp_path) == {"10.1.0.2": b"live"}
    # A legacy file has no ifname so it cannot be indexed: the directory stays scanned.
    assert not (tmp_path / NET / "by-attachment" / ".complete").exists()
    _del(conf, "live")
    assert _files(tmp_path) == {}


def test_gc_drops_stale_and_garbled_index_entries(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    _add(conf, "a")
    idx = tmp_path / NET / "by-attachment"
    (idx / ("0" * 32)).write_text("{garbled")
    (idx / attachment_key("a", "eth0")).write_text(
        '{"containerID": "a", "ifname": "eth0", "ips": ["10.1.0.2", "10.1.0.6"]}'
    )
    assert hostlocal.gc(conf, network=NET, valid=[("a", "eth0")]) == []
    assert {p.name for p in idx.iterdir()} == {".complete", attachment_key("a", "eth0")}
    assert '"10.1.0.6"' not in (idx / attachment_key("a", "eth0")).read_text()


def test_gc_reports_errors_and_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _config(tmp_path)
    for cid in ("a", "b"):
        _add(conf, cid)
    real = Store.remove_ip

    def flaky(self: Store, ip: Any) -> None:
        if str(ip) == "10.1.0.2":
            raise CNIError(5, "cannot release 10.1.0.2", "EIO")
        real(self, ip)

    monkeypatch.setattr(Store, "remove_ip", flaky)
    errors = hostlocal.gc(conf, network=NET, valid=[])
    assert errors == ["cannot release 10.1.0.2: EIO"]
    assert sorted(_files(tmp_path)) == ["10.1.0.2"]  # .3 was still removed


# -- status -------------------------------------------------------------------------------


def test_status_ready_then_exhausted(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/30"}])
    assert hostlocal.status(conf, network=NET) is None
    _add(conf, "c1")
    problem = hostlocal.status(conf, network=NET)
    assert problem == "no IP addresses available in range set 1: 10.2.0.1-10.2.0.2"


def test_status_unusable_data_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    conf = _config(tmp_path / "file")
    problem = hostlocal.status(conf, network=NET)
    assert problem is not None
    assert "cannot" in problem
