"""The cgroup facade on fake hierarchies in a temp dir: layout, v1/v2 limit files, detection."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pycni_run import cgroupfs, cgroups
from pycni_run.cgroups import _V1, _V2, Cgroup, _layout, detect_version
from pycni_run.errors import RunError
from pycni_run.spec import Limits


def test_layout_relative_parent_goes_under_the_callers_cgroup() -> None:
    path, made = _layout("/cg/memory", "/process_api/x", "pycni", "web")
    assert path == "/cg/memory/process_api/x/pycni/web"
    assert made == ("/cg/memory/process_api/x/pycni",)


def test_layout_absolute_parent_starts_at_the_root() -> None:
    path, made = _layout("/cg/pids", "/process_api/x", "/pycni/prod", "web")
    assert path == "/cg/pids/pycni/prod/web"
    assert made == ("/cg/pids/pycni/prod", "/cg/pids/pycni")  # innermost first


def test_detect_version(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    )
    assert detect_version("/sys/fs/cgroup", str(mounts)) == 1  # hybrid is v1
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    assert detect_version("/sys/fs/cgroup", str(mounts)) == 2


def _files(root: Path, *names: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_text("")


def test_v1_limit_files(tmp_path: Path) -> None:
    paths = {c: tmp_path / c / "web" for c in ("memory", "cpu", "pids")}
    _files(paths["memory"], "memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
    _files(paths["cpu"], "cpu.cfs_period_us", "cpu.cfs_quota_us")
    _files(paths["pids"], "pids.max")
    cg = Cgroup(version=1, paths={c: str(p) for c, p in paths.items()})
    _V1().apply(cg, Limits(memory=64 << 20, cpus=0.5, pids=32))
    assert (paths["memory"] / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (paths["memory"] / "memory.memsw.limit_in_bytes").read_text() == str(64 << 20)
    assert (paths["cpu"] / "cpu.cfs_quota_us").read_text() == "50000"
    assert (paths["cpu"] / "cpu.cfs_period_us").read_text() == "100000"
    assert (paths["pids"] / "pids.max").read_text() == "32"
    assert cgroups.read_limits(cg) == {
        "memory": str(64 << 20),
        "cpu_quota_us": "50000",
        "cpu_period_us": "100000",
        "pids": "32",
    }


def test_v2_limit_files(tmp_path: Path) -> None:
    path = tmp_path / "pycni" / "web"
    _files(path, "memory.max", "memory.swap.max", "cpu.max", "pids.max")
    cg = Cgroup(version=2, paths={"unified": str(path)})
    _V2().apply(cg, Limits(memory=32 << 20, cpus=1.5, pids=10))
    assert (path / "memory.max").read_text() == str(32 << 20)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "cpu.max").read_text() == "150000 100000"
    assert (path / "pids.max").read_text() == "10"
    assert cgroups.read_limits(cg)["cpu"] == "150000 100000"


def test_v2_places_relative_parents_under_the_root() -> None:
    cg = _V2().place("/sys/fs/cgroup", "pycni", "web")
    assert cg.paths == {"unified": "/sys/fs/cgroup/pycni/web"}
    assert cg.parents == ("/sys/fs/cgroup/pycni",)


def test_unset_limits_write_nothing(tmp_path: Path) -> None:
    cg = Cgroup(version=1, paths={c: str(tmp_path / c) for c in ("memory", "cpu", "pids")})
    _V1().apply(cg, Limits())  # no files exist: any write would fail
    assert not any(tmp_path.iterdir())


def test_write_errors_surface_as_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="cannot write"):
        cgroupfs.write_file(str(tmp_path / "missing" / "pids.max"), "5")


def test_state_round_trip() -> None:
    cg = Cgroup(version=1, paths={"pids": "/x"}, parents=("/p",))
    assert Cgroup.from_dict(cg.to_dict()) == cg
    assert os.path.basename(cg.paths["pids"]) == "x"


@pytest.mark.parametrize("errno_value", [2, 19])  # ENOENT, ENODEV
def test_procs_of_a_cgroup_being_removed_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_value: int
) -> None:
    """A detached container's monitor may remove the cgroup while `rm -f` reads it: its files
    answer ENODEV (going) or ENOENT (gone), both meaning no process is left there."""
    cg = Cgroup(version=1, paths={"pids": str(tmp_path / "pids")}, parents=())

    def gone(path: str) -> str:
        raise OSError(errno_value, os.strerror(errno_value), path)

    monkeypatch.setattr(cgroupfs, "read_file", gone)
    assert cgroups.procs(cg) == []
    cgroups.kill_all(cg)  # returns at once: nothing to kill


def test_procs_reports_other_read_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = Cgroup(version=1, paths={"pids": str(tmp_path / "pids")}, parents=())

    def denied(path: str) -> str:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(cgroupfs, "read_file", denied)
    with pytest.raises(PermissionError):
        cgroups.procs(cg)


# ---------------------------------------------------------------------- adopt (standby inits)


def _standby_tree(root: Path, parent: str, name: str) -> Cgroup:
    """A fake v1 standby cgroup ``parent/name`` in every controller, with its limit files."""
    paths = {}
    for ctrl in cgroups.V1_CONTROLLERS:
        path = root / ctrl / parent.strip("/") / name
        _files(path, "memory.limit_in_bytes", "cpu.cfs_period_us", "cpu.cfs_quota_us",
               "pids.max", "cgroup.procs")
        paths[ctrl] = str(path)
    return Cgroup(version=1, paths=paths)


def test_adopt_renames_a_sibling_and_writes_the_limits(tmp_path: Path) -> None:
    held = _standby_tree(tmp_path, "pycni", ".standby-7")
    cg = cgroups.adopt(held, "web", Limits(memory=64 << 20, pids=32), parent="/pycni",
                       root=str(tmp_path))
    assert cg is not None
    assert cg.paths == {c: str(tmp_path / c / "pycni" / "web") for c in cgroups.V1_CONTROLLERS}
    assert cg.parents == tuple(str(tmp_path / c / "pycni") for c in cgroups.V1_CONTROLLERS)
    assert not any(os.path.exists(p) for p in held.paths.values())
    assert (tmp_path / "memory/pycni/web/memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (tmp_path / "pids/pycni/web/pids.max").read_text() == "32"


def test_adopt_elsewhere_changes_nothing(tmp_path: Path) -> None:
    held = _standby_tree(tmp_path, "other", ".standby-7")
    assert cgroups.adopt(held, "web", Limits(), parent="/pycni", root=str(tmp_path)) is None
    assert all(os.path.isdir(p) for p in held.paths.values())


def test_adopt_undoes_its_renames_when_one_fails(tmp_path: Path) -> None:
    held = _standby_tree(tmp_path, "pycni", ".standby-7")
    _files(tmp_path / "pids" / "pycni" / "web", "stale")  # a non-empty "web" already there
    with pytest.raises(RunError, match="cannot create cgroup web"):
        cgroups.adopt(held, "web", Limits(), parent="/pycni", root=str(tmp_path))
    assert all(os.path.isdir(p) for p in held.paths.values())
    assert not (tmp_path / "memory" / "pycni" / "web").exists()


def test_adopt_undoes_its_renames_when_a_limit_fails(tmp_path: Path) -> None:
    held = _standby_tree(tmp_path, "pycni", ".standby-7")
    (Path(held.paths["pids"]) / "pids.max").unlink()
    with pytest.raises(RunError, match=r"pids\.max"):
        cgroups.adopt(held, "web", Limits(pids=5), parent="/pycni", root=str(tmp_path))
    assert all(os.path.isdir(p) for p in held.paths.values())


def test_a_parent_with_other_cgroups_in_it_is_left_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cgroup v1 answers EBUSY, not ENOTEMPTY, to the rmdir of a cgroup that has child
    cgroups (a parent shared with another container, or with the runtime daemon's parked
    standby): ``remove`` leaves such a parent at once instead of retrying it for half a
    second in every hierarchy (2 s a run while a daemon ran)."""
    parent = tmp_path / "pids" / "pycni"
    ours, standby = parent / "web", parent / ".standby-7"
    for directory in (ours, standby):
        directory.mkdir(parents=True)
    tries: list[str] = []
    real_rmdir = os.rmdir

    def v1_rmdir(path: str) -> None:
        tries.append(str(path))
        with os.scandir(path) as entries:
            if any(entry.is_dir() for entry in entries):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        real_rmdir(path)

    monkeypatch.setattr(os, "rmdir", v1_rmdir)
    cgroups.remove(Cgroup(version=1, paths={"pids": str(ours)}, parents=(str(parent),)))
    assert not ours.exists()
    assert standby.exists()
    assert tries.count(str(parent)) == 1
