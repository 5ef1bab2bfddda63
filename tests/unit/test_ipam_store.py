"""The on-disk store: byte-exact reference layout, modes, the index, the lock."""

from __future__ import annotations

import json
import os
import stat
from ipaddress import ip_address
from pathlib import Path

import pytest

from pycni.cni.errors import CNIError
from pycni.ipam import hostlocal
from pycni.ipam.config import HostLocalConfig, parse_ipam_config
from pycni.ipam.store import (
    attachment_key,
    open_store,
    owned_by,
    owner_content,
    parse_owner,
)

NET = "testnet"


def _config(tmp_path: Path, *range_sets: list[dict[str, str]]) -> HostLocalConfig:
    ranges = list(range_sets) or [[{"subnet": "10.1.0.0/24"}]]
    return parse_ipam_config({"ranges": ranges, "dataDir": str(tmp_path / "ipam")})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_on_disk_layout_is_byte_exact(tmp_path: Path) -> None:
    conf = _config(tmp_path, [{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}])
    hostlocal.allocate(conf, network=NET, container_id="abc123", ifname="eth0")
    net = tmp_path / "ipam" / NET
    assert sorted(p.name for p in net.iterdir()) == [
        "10.1.0.2",
        "2001:db8::2",
        "by-attachment",
        "last_reserved_ip.0",
        "last_reserved_ip.1",
        "lock",
    ]
    for name in ("10.1.0.2", "2001:db8::2"):
        assert (net / name).read_bytes() == b"abc123\r\neth0"
        assert _mode(net / name) == 0o600
    assert (net / "last_reserved_ip.0").read_bytes() == b"10.1.0.2"
    assert (net / "last_reserved_ip.1").read_bytes() == b"2001:db8::2"
    assert _mode(net) == _mode(tmp_path / "ipam") == 0o700
    index = net / "by-attachment" / attachment_key("abc123", "eth0")
    assert json.loads(index.read_bytes()) == {
        "containerID": "abc123",
        "ifname": "eth0",
        "ips": ["10.1.0.2", "2001:db8::2"],
    }
    assert _mode(index) == 0o600
    assert len(index.name) == 32
    assert (net / "by-attachment" / ".complete").exists()
    assert not list(net.rglob(".*.tmp"))  # atomic writes leave no temp file


def test_reserve_is_exclusive(tmp_path: Path) -> None:
    with open_store(str(tmp_path), NET) as store:
        ip = ip_address("10.1.0.9")
        assert store.reserve(ip, container_id="a", ifname="eth0")
        assert not store.reserve(ip, container_id="b", ifname="eth0")
        assert store.owner_of(ip) == "a\r\neth0"
        assert store.is_reserved(ip)
        store.remove_ip(ip)
        store.remove_ip(ip)  # already gone is fine
        assert store.owner_of(ip) is None


def test_lock_wait_is_bounded(tmp_path: Path) -> None:
    # flock conflicts between two open file descriptions even inside one process.
    with (
        open_store(str(tmp_path), NET),
        pytest.raises(CNIError) as info,
        open_store(str(tmp_path), NET, timeout=0.05),
    ):
        pass
    assert info.value.code == 11


def test_lock_is_the_reference_lock_file(tmp_path: Path) -> None:
    import fcntl

    with open_store(str(tmp_path), NET):
        fd = os.open(tmp_path / NET / "lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_bad_network_name_touches_nothing(tmp_path: Path) -> None:
    with pytest.raises(CNIError) as info, open_store(str(tmp_path / "d"), "../escape"):
        pass
    assert info.value.code == 7
    assert not (tmp_path / "d").exists()


def test_unusable_data_dir_is_io_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CNIError) as info, open_store(str(tmp_path / "file"), NET):
        pass
    assert info.value.code == 5


def test_fresh_directory_is_indexed_go_directory_is_not(tmp_path: Path) -> None:
    with open_store(str(tmp_path), "fresh") as store:
        assert store.indexed
    go = tmp_path / "go"
    go.mkdir()
    (go / "10.1.0.5").write_bytes(b"cid\r\neth0")
    with open_store(str(tmp_path), "go") as store:
        assert not store.indexed
        assert store.attachment_ips("cid", "eth0") == [ip_address("10.1.0.5")]


def test_index_roundtrip_and_empty_removes(tmp_path: Path) -> None:
    with open_store(str(tmp_path), NET) as store:
        ips = [ip_address("10.1.0.2"), ip_address("fd00::2")]
        for ip in ips:
            store.reserve(ip, container_id="c", ifname="eth0")
        store.write_index("c", "eth0", ips)
        assert store.attachment_ips("c", "eth0") == ips
        store.write_index("c", "eth0", [])
        assert list(store.index_entries()) == []


def test_garbled_index_falls_back_to_scan(tmp_path: Path) -> None:
    with open_store(str(tmp_path), NET) as store:
        ip = ip_address("10.1.0.7")
        store.reserve(ip, container_id="c", ifname="eth0")
        key = attachment_key("c", "eth0")
        (tmp_path / NET / "by-attachment" / key).write_text("{not json")
        assert store.attachment_ips("c", "eth0") == [ip]
        assert list(store.index_entries()) == [(key, None)]


def test_index_of_another_attachment_is_not_trusted(tmp_path: Path) -> None:
    # A file under our key naming someone else (a collision, or tampering): scan instead.
    with open_store(str(tmp_path), NET) as store:
        store.reserve(ip_address("10.1.0.7"), container_id="other", ifname="eth0")
        store.write_index("other", "eth0", [ip_address("10.1.0.7")])
        (tmp_path / NET / "by-attachment" / attachment_key("c", "eth0")).write_bytes(
            (tmp_path / NET / "by-attachment" / attachment_key("other", "eth0")).read_bytes()
        )
        assert store.attachment_ips("c", "eth0") == []


def test_empty_file_listed_in_index_is_ours(tmp_path: Path) -> None:
    # An ADD that died between O_EXCL create and write leaves an empty file it had indexed.
    with open_store(str(tmp_path), NET) as store:
        (tmp_path / NET / "10.1.0.3").write_bytes(b"")
        store.write_index("c", "eth0", [ip_address("10.1.0.3")])
        assert store.attachment_ips("c", "eth0") == [ip_address("10.1.0.3")]
        assert store.attachment_ips("d", "eth0") == []


def test_remove_temp_files(tmp_path: Path) -> None:
    with open_store(str(tmp_path), NET) as store:
        store.write_index("c", "eth0", [ip_address("10.1.0.3")])
        junk = [
            tmp_path / NET / ".last_reserved_ip.0.99.tmp",
            tmp_path / NET / "by-attachment" / ".x.1.tmp",
        ]
        for path in junk:
            path.write_text("half")
        store.remove_temp_files()
        assert not any(p.exists() for p in junk)
        assert (tmp_path / NET / "by-attachment" / ".complete").exists()


def test_last_reserved_garbled_or_missing(tmp_path: Path) -> None:
    with open_store(str(tmp_path), NET) as store:
        assert store.last_reserved(0) is None
        (tmp_path / NET / "last_reserved_ip.0").write_text("garbage")
        assert store.last_reserved(0) is None
        (tmp_path / NET / "last_reserved_ip.0").write_text("10.1.0.9\n")  # tolerate a newline
        assert store.last_reserved(0) == ip_address("10.1.0.9")


def test_owner_content_helpers() -> None:
    assert owner_content(" cid ", "eth0") == "cid\r\neth0"
    assert parse_owner("cid\r\neth0") == ("cid", "eth0")
    assert parse_owner("cid\n") == ("cid", None)
    assert parse_owner("  ") is None
    assert owned_by("cid\r\neth0", "cid", "eth0")
    assert owned_by("cid", "cid", "eth0")  # legacy content matches any ifname
    assert not owned_by("cid\r\neth1", "cid", "eth0")
    assert not owned_by("cid2", "cid", "eth0")


def test_last_reserved_is_overwritten_in_place_and_exactly(tmp_path: Path) -> None:
    """The hint is rewritten in its own file (a rename over it cost ext4 an immediate
    write-out on every ADD), and a shorter address leaves no tail of the longer one."""
    with open_store(str(tmp_path), NET) as store:
        store.set_last_reserved(0, ip_address("10.1.0.100"))
        hint = tmp_path / NET / "last_reserved_ip.0"
        inode = hint.stat().st_ino
        store.set_last_reserved(0, ip_address("10.1.0.9"))
        assert hint.read_bytes() == b"10.1.0.9"
        assert hint.stat().st_ino == inode
        assert _mode(hint) == 0o600
        assert store.last_reserved(0) == ip_address("10.1.0.9")
