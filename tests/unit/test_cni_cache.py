"""The results cache: libcni's bytes, atomic writes, forgiving reads, per-network listing."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import cache
from pycni.cni.cache import CachedAttachment
from pycni.cni.errors import CNIError, ErrorCode

CONFIG = b'{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}'
RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}


def entry(
    network: str = "net", container_id: str = "ctr1", ifname: str = "eth0", **kw: Any
) -> CachedAttachment:
    defaults: dict[str, Any] = {
        "netns": "/run/netns/ctr1",
        "cni_args": (("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")),
        "capability_args": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        },
        "config": CONFIG,
        "result": RESULT,
    }
    return CachedAttachment(
        network=network, container_id=container_id, ifname=ifname, **(defaults | kw)
    )


def results_dir(cache_dir: Path) -> Path:
    return cache_dir / "results"


def test_entry_path_is_libcnis(tmp_path: Path) -> None:
    assert cache.entry_path(str(tmp_path), "net", "ctr1", "eth0") == str(
        tmp_path / "results" / "net-ctr1-eth0"
    )
    assert cache.DEFAULT_CACHE_DIR == "/var/lib/cni"


def test_file_content_is_libcni_format(tmp_path: Path) -> None:
    path = cache.write(str(tmp_path), entry())
    assert path == str(tmp_path / "results" / "net-ctr1-eth0")
    doc = json.loads(Path(path).read_bytes())
    assert doc == {
        "kind": "cniCacheV1",
        "containerId": "ctr1",
        "config": base64.b64encode(CONFIG).decode(),
        "ifName": "eth0",
        "networkName": "net",
        "netns": "/run/netns/ctr1",
        "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]],
        "capabilityArgs": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        },
        "result": RESULT,
    }
    # Go marshals []byte as standard, padded base64.
    assert base64.b64decode(doc["config"], validate=True) == CONFIG


def test_config_bytes_survive_exactly(tmp_path: Path) -> None:
    odd = b'{"name": "net",\n  "plugins": [ ] }\n\x00\xff'  # not even JSON: stored verbatim
    path = cache.write(str(tmp_path), entry(config=odd))
    read = cache.read(path)
    assert read is not None
    assert read.config == odd


def test_pending_entry_has_no_result_key(tmp_path: Path) -> None:
    path = cache.write(str(tmp_path), entry(result=None))
    assert "result" not in json.loads(Path(path).read_bytes())
    read = cache.read(path)
    assert read is not None
    assert read.result is None


def test_modes(tmp_path: Path) -> None:
    path = cache.write(str(tmp_path / "cni"), entry())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(results_dir(tmp_path / "cni")).st_mode) == 0o700


def test_round_trip(tmp_path: Path) -> None:
    original = entry()
    read = cache.read(cache.write(str(tmp_path), original))
    assert read == original
    assert CachedAttachment.from_dict(original.to_dict()) == original


def test_reads_an_entry_written_by_libcni(tmp_path: Path) -> None:
    """Go's omitempty drops netns, cniArgs and capabilityArgs when empty."""
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / "mynet-abc123-eth0"
    path.write_text(
        json.dumps(
            {
                "kind": "cniCacheV1",
                "containerId": "abc123",
                "config": base64.b64encode(CONFIG).decode(),
                "ifName": "eth0",
                "networkName": "mynet",
                "result": RESULT,
            }
        )
    )
    read = cache.read(str(path))
    assert read == CachedAttachment(
        network="mynet", container_id="abc123", ifname="eth0", config=CONFIG, result=RESULT
    )


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    for n in range(3):
        cache.write(str(tmp_path), entry(netns=f"/run/netns/{n}"))
    cache.write(str(tmp_path), entry(container_id="ctr2"))
    assert sorted(os.listdir(results_dir(tmp_path))) == ["net-ctr1-eth0", "net-ctr2-eth0"]
    read = cache.read(cache.entry_path(str(tmp_path), "net", "ctr1", "eth0"))
    assert read is not None
    assert read.netns == "/run/netns/2"  # the last write wins, whole


def test_failed_write_keeps_the_old_entry_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cache.write(str(tmp_path), entry(netns="/run/netns/old"))

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(CNIError, match="No space") as err:
        cache.write(str(tmp_path), entry(netns="/run/netns/new"))
    assert err.value.code == ErrorCode.IO_FAILURE
    assert os.listdir(results_dir(tmp_path)) == ["net-ctr1-eth0"]
    read = cache.read(path)
    assert read is not None
    assert read.netns == "/run/netns/old"


def test_unserialisable_entry_leaves_no_temp(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        cache.write(str(tmp_path), entry(capability_args={"x": object()}))
    assert os.listdir(results_dir(tmp_path)) == []


GOOD = entry().to_dict()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b"null",
        json.dumps(GOOD | {"kind": "cniCacheV2"}).encode(),
        json.dumps({k: v for k, v in GOOD.items() if k != "kind"}).encode(),
        json.dumps({k: v for k, v in GOOD.items() if k != "networkName"}).encode(),
        json.dumps({k: v for k, v in GOOD.items() if k != "containerId"}).encode(),
        json.dumps({k: v for k, v in GOOD.items() if k != "ifName"}).encode(),
        json.dumps(GOOD | {"config": "not base64!"}).encode(),
        json.dumps(GOOD | {"config": 5}).encode(),
        json.dumps(GOOD | {"cniArgs": [["only-key"]]}).encode(),
        json.dumps(GOOD | {"cniArgs": 7}).encode(),
        json.dumps(GOOD | {"capabilityArgs": [1, 2]}).encode(),
    ],
)
def test_corrupt_or_empty_entry_reads_as_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "net-ctr1-eth0"
    path.write_bytes(content)
    assert cache.read(str(path)) is None


def test_missing_entry_reads_as_none(tmp_path: Path) -> None:
    assert cache.read(str(tmp_path / "nope")) is None
    assert cache.read(str(tmp_path)) is None  # a directory


@pytest.mark.parametrize("result", [[], "ok", 5])
def test_non_object_result_is_dropped_not_fatal(tmp_path: Path, result: Any) -> None:
    path = tmp_path / "e"
    path.write_text(json.dumps(GOOD | {"result": result}))
    read = cache.read(str(path))
    assert read is not None
    assert read.result is None


def test_delete_is_idempotent(tmp_path: Path) -> None:
    cache.write(str(tmp_path), entry())
    cache.delete(str(tmp_path), "net", "ctr1", "eth0")
    cache.delete(str(tmp_path), "net", "ctr1", "eth0")
    cache.delete(str(tmp_path / "never"), "net", "ctr1", "eth0")
    assert os.listdir(results_dir(tmp_path)) == []


def test_list_network_attribution(tmp_path: Path) -> None:
    d = str(tmp_path)
    mine = [cache.write(d, entry("a", "c1", "eth0")), cache.write(d, entry("a", "c2-x", "net1"))]
    cache.write(d, entry("a-b", "c1", "eth0"))  # file name starts with "a-" but is not a's
    cache.write(d, entry("b", "c1", "eth0"))
    cache.write(d, entry("ab", "c1", "eth0"))
    listed = cache.list_network(d, "a")
    assert [p for p, _ in listed] == sorted(mine)
    assert [(e.network, e.container_id, e.ifname) for _, e in listed if e is not None] == [
        ("a", "c1", "eth0"),
        ("a", "c2-x", "net1"),
    ]
    assert [(e.network, e.container_id) for _, e in cache.list_network(d, "a-b") if e] == [
        ("a-b", "c1")
    ]


def test_list_network_reports_corrupt_entries_as_none(tmp_path: Path) -> None:
    d = str(tmp_path)
    cache.write(d, entry("a", "c1", "eth0"))
    (results_dir(tmp_path) / "a-broken-eth0").write_bytes(b"{")
    (results_dir(tmp_path) / "b-broken-eth0").write_bytes(b"")
    listed = dict(cache.list_network(d, "a"))
    assert listed[str(results_dir(tmp_path) / "a-broken-eth0")] is None
    assert str(results_dir(tmp_path) / "b-broken-eth0") not in listed
    assert len(listed) == 2


def test_list_network_skips_temp_files(tmp_path: Path) -> None:
    d = str(tmp_path)
    cache.write(d, entry("a", "c1", "eth0"))
    (results_dir(tmp_path) / ".tmp-abcdef").write_bytes(b"{")
    assert len(cache.list_network(d, "a")) == 1


def test_list_network_without_a_cache(tmp_path: Path) -> None:
    assert cache.list_network(str(tmp_path / "none"), "a") == []
