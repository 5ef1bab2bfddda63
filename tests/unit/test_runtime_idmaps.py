"""pycni-run: --userns, --uidmap/--gidmap, subordinate id files and the free-range search
(no root, no kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycni_run import cli, idmaps, state, userns
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError
from pycni_run.idmaps import IdMap, Mappings, UsernsOptions
from pycni_run.state import ContainerState


def test_parse_userns_modes() -> None:
    assert idmaps.parse_userns("host") == UsernsOptions()
    assert idmaps.parse_userns("") == UsernsOptions()
    assert idmaps.parse_userns("auto") == UsernsOptions(mode="auto", size=65536)
    assert idmaps.parse_userns("auto:size=1000") == UsernsOptions(mode="auto", size=1000)
    both = idmaps.parse_userns("host", ["0:100000:1000", "1000:300000:10"])
    assert both.mode == "maps"
    assert both.uid_map == both.gid_map == (IdMap(0, 100000, 1000), IdMap(1000, 300000, 10))
    gids = idmaps.parse_userns("host", ["0:100000:10"], ["0:200000:10"])
    assert (gids.uid_map, gids.gid_map) == ((IdMap(0, 100000, 10),), (IdMap(0, 200000, 10),))
    assert idmaps.parse_userns("", [], ["0:200000:10"]).uid_map == (IdMap(0, 200000, 10),)


@pytest.mark.parametrize(
    ("mode", "uidmap", "message"),
    [
        ("keep-id", [], "invalid --userns"),
        ("auto:size=0", [], "only option of auto"),
        ("auto:size=x", [], "only option of auto"),
        ("auto:uidmapping=0:1:1", [], "only option of auto"),
        ("host:x", [], "invalid --userns"),
        ("auto", ["0:100000:10"], "conflicting options"),
        ("host", ["0:100000"], "CONTAINER:HOST:SIZE"),
        ("host", ["0:100000:0"], "CONTAINER:HOST:SIZE"),
        ("host", ["-1:100000:10"], "CONTAINER:HOST:SIZE"),
        ("host", ["0:4294967290:10"], "CONTAINER:HOST:SIZE"),
        ("host", ["0:100000:10", "5:200000:10"], "overlap on the container side"),
        ("host", ["0:100000:10", "10:100009:10"], "overlap on the host side"),
        ("host", ["1:100000:10"], "nothing maps the container's root"),
        ("host", [f"{i}:{100000 + i}:1" for i in range(341)], "at most 340"),
    ],
)
def test_parse_userns_refuses(mode: str, uidmap: list[str], message: str) -> None:
    with pytest.raises(RunError, match=message) as err:
        idmaps.parse_userns(mode, uidmap)
    assert err.value.code == 125


def test_adjacent_maps_do_not_overlap() -> None:
    maps = idmaps.parse_idmap(["0:100000:10", "10:100010:10"], "--uidmap")
    assert len(maps) == 2


def test_run_options_build_the_spec() -> None:
    spec = cli.build_spec(*cli.parse_run_args(["--userns=auto:size=4096", "busybox", "id"]))
    assert spec.userns == UsernsOptions(mode="auto", size=4096)
    spec = cli.build_spec(*cli.parse_run_args(["--uidmap", "0:100000:10", "--gidmap",
                                               "0:100000:10", "busybox"]))
    assert spec.userns.mode == "maps"
    assert cli.build_spec(*cli.parse_run_args(["busybox"])).userns == UsernsOptions()
    with pytest.raises(RunError, match="network namespace of its own"):
        cli.build_spec(*cli.parse_run_args(["--userns=auto", "--net=host", "busybox"]))


def test_read_subids_takes_the_users_lines(tmp_path: Path) -> None:
    path = tmp_path / "subuid"
    path.write_text("# comment\nalice:100000:65536\ncontainers:300000:1000\n"
                    "containers:200000:65536\ncontainers:bad:1\ncontainers:1:0\nroot:0:1\n")
    assert idmaps.read_subids(str(path), "containers") == [(200000, 65536), (300000, 1000)]
    assert idmaps.read_subids(str(path), "nobody-here") == []
    assert idmaps.read_subids(str(tmp_path / "missing"), "containers") == []
    (tmp_path / "byuid").write_text("0:500000:10\n")
    assert idmaps.read_subids(str(tmp_path / "byuid"), "root") == [(500000, 10)]  # root's uid


def test_within_joins_adjacent_ranges() -> None:
    ranges = [(100000, 1000), (101000, 1000), (200000, 10)]
    assert idmaps.within([IdMap(0, 100500, 1000)], ranges) is None
    assert idmaps.within([IdMap(0, 200000, 10), IdMap(10, 100000, 2000)], ranges) is None
    outside = IdMap(0, 101500, 1000)
    assert idmaps.within([IdMap(0, 200000, 10), outside], ranges) == outside
    assert idmaps.within([IdMap(0, 99999, 2)], ranges) == IdMap(0, 99999, 2)


@pytest.mark.parametrize(
    ("ranges", "used", "size", "start"),
    [
        ([(100000, 262144)], [], 65536, 100000),
        ([(100000, 262144)], [(100000, 165536)], 65536, 165536),
        ([(100000, 262144)], [(165536, 231072)], 65536, 100000),  # a gap first
        ([(100000, 262144)], [(100000, 165536), (166536, 232072)], 1000, 165536),
        ([(100000, 262144)], [(100000, 165536), (166536, 232072)], 65536, 232072),
        ([(100000, 65536), (500000, 65536)], [(100000, 100001)], 65536, 500000),
        ([(100000, 65536)], [(0, 100001)], 65535, 100001),
        ([(100000, 65536)], [(120000, 120001)], 65536, None),
        ([(100000, 1000)], [], 1001, None),
        ([(100000, 262144)], [(50000, 60000), (400000, 500000)], 65536, 100000),
    ],
)
def test_first_free(
    ranges: list[tuple[int, int]], used: list[tuple[int, int]], size: int, start: int | None
) -> None:
    assert idmaps.first_free(ranges, used, size) == start


def test_mappings_round_trip_and_kernel_text() -> None:
    mappings = Mappings(mode="maps", uid_map=(IdMap(0, 100000, 1000), IdMap(1000, 300000, 1)),
                        gid_map=(IdMap(0, 200000, 10),))
    doc = mappings.to_doc()
    assert doc == {"Mode": "maps", "UidMap": ["0:100000:1000", "1000:300000:1"],
                   "GidMap": ["0:200000:10"]}
    assert Mappings.from_doc(doc) == mappings
    assert Mappings.from_doc({}) is None
    assert mappings.root == (100000, 200000)
    assert idmaps.kernel_text(mappings.uid_map) == "0 100000 1000\n1000 300000 1\n"


def _config(tmp_path: Path, subuid: str, subgid: str | None = None) -> RuntimeConfig:
    (tmp_path / "subuid").write_text(subuid)
    (tmp_path / "subgid").write_text(subuid if subgid is None else subgid)
    return RuntimeConfig(state_dir=str(tmp_path / "state"), subuid_file=str(tmp_path / "subuid"),
                         subgid_file=str(tmp_path / "subgid"))


def test_check_keeps_maps_within_the_subordinate_ids(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "containers:100000:65536\n", "containers:300000:65536\n")
    assert userns.check(cfg, UsernsOptions()) is None
    request = userns.check(cfg, idmaps.parse_userns("auto"))
    assert request is not None
    assert (request.uid_ranges, request.gid_ranges) == (((100000, 65536),), ((300000, 65536),))
    fine = idmaps.parse_userns("host", ["0:100000:10"], ["0:300000:10"])
    assert userns.check(cfg, fine) is not None
    with pytest.raises(RunError, match=r"invalid --gidmap 0:100000:10: host ids 100000-100009"):
        userns.check(cfg, idmaps.parse_userns("host", ["0:100000:10"]))
    with pytest.raises(RunError, match="gives containers none"):
        userns.check(_config(tmp_path, "alice:1:10\n"), idmaps.parse_userns("auto"))


def _claimed(cfg: RuntimeConfig, name: str) -> ContainerState:
    state.claim(cfg.containers_dir, name)
    return ContainerState(name=name, id=name * 8, image="busybox", command=["true"])


def test_reserve_takes_free_ranges_recorded_in_the_states(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "containers:100000:131072\n")
    request = userns.check(cfg, idmaps.parse_userns("auto"))
    first, second = _claimed(cfg, "a"), _claimed(cfg, "b")
    got_a = userns.reserve(cfg, first, request)
    got_b = userns.reserve(cfg, second, request)
    assert got_a is not None
    assert got_b is not None
    assert (got_a.root, got_b.root) == ((100000, 100000), (165536, 165536))
    assert state.load(cfg.containers_dir, "b").userns == got_b.to_doc()  # saved at once
    with pytest.raises(RunError, match="no free range of 65536 ids"):
        userns.reserve(cfg, _claimed(cfg, "c"), request)
    state.release(cfg.containers_dir, "a")  # rm
    again = userns.reserve(cfg, _claimed(cfg, "d"), request)
    assert again is not None
    assert again.root == (100000, 100000)
    explicit = userns.check(cfg, idmaps.parse_userns("host", ["0:100000:10"]))
    mapped = userns.reserve(cfg, _claimed(cfg, "e"), explicit)  # the user's choice: no search
    assert mapped is not None
    assert mapped.root == (100000, 100000)
    assert userns.reserve(cfg, _claimed(cfg, "f"), None) is None
