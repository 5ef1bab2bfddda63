"""Container state files: atomic save/load, name claims, liveness by pid + pidfs inode."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from pycni_run import state
from pycni_run.config import RuntimeConfig, load_config
from pycni_run.errors import RunError
from pycni_run.state import ContainerState, ProcRef


def _state(name: str = "web") -> ContainerState:
    return ContainerState(name=name, id="a" * 64, image="busybox", command=["sh"])


def test_claim_save_load_round_trip(tmp_path: Path) -> None:
    directory = state.claim(str(tmp_path), "web")
    st = _state()
    st.pid = state.proc_ref(os.getpid())
    st.cgroup = {"version": 1, "paths": {"pids": "/x"}}
    state.save(str(tmp_path), st)
    assert os.listdir(directory) == ["state.json"]  # no temp file left behind
    loaded = state.load(str(tmp_path), "web")
    assert loaded == st
    assert loaded.pid.alive()


def test_a_name_is_claimed_once(tmp_path: Path) -> None:
    state.claim(str(tmp_path), "web")
    with pytest.raises(RunError, match="already in use"):
        state.claim(str(tmp_path), "web")
    state.release(str(tmp_path), "web")
    state.claim(str(tmp_path), "web")


def test_load_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such container"):
        state.load(str(tmp_path), "nosuch")
    state.claim(str(tmp_path), "bad")
    (tmp_path / "bad" / "state.json").write_text("{not json")
    with pytest.raises(RunError, match="unreadable"):
        state.load(str(tmp_path), "bad")
    assert state.list_states(str(tmp_path)) == []


def test_a_recycled_pid_is_not_alive() -> None:
    me = state.proc_ref(os.getpid())
    assert me.alive()
    assert not ProcRef(me.pid, me.ino + 1).alive()  # this pid, but another process's inode
    assert not ProcRef(me.pid, 0).alive()  # a state from before inodes were recorded
    assert not ProcRef(0, 0).alive()
    assert not ProcRef(me.pid, me.ino + 1).signal(0)


def test_signals_reach_the_process_and_stop_at_its_exit() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        ref = state.proc_ref(proc.pid)
        assert ref.alive()
        assert not ref.wait_gone(0.01)
        assert ref.signal(signal.SIGKILL)
        assert ref.wait_gone(10)  # exited: a zombie counts as gone
        assert not ref.alive()
    finally:
        proc.kill()
        proc.wait()
    assert not ref.signal(signal.SIGTERM)  # reaped: its pid may be anyone's now


def test_live_status_notices_a_dead_runtime(tmp_path: Path) -> None:
    st = _state()
    st.status = "running"
    st.pid = ProcRef(os.getpid(), 1)  # wrong pidfs inode: that process is gone
    assert st.live_status() == "dead"
    st.monitor = state.proc_ref(os.getpid())
    assert st.live_status() == "running"  # its monitor will record the exit


def test_locked_needs_the_container(tmp_path: Path) -> None:
    with pytest.raises(RunError), state.locked(str(tmp_path), "nosuch"):
        pass
    state.claim(str(tmp_path), "web")
    with state.locked(str(tmp_path), "web"):
        pass


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "pycni.yaml"
    path.write_text("runtime:\n  state_dir: /s\n  cni_path: [/a, /b]\n  stop_timeout: 3\n")
    cfg = load_config(path)
    assert (cfg.state_dir, cfg.cni_path, cfg.stop_timeout) == ("/s", ("/a", "/b"), 3.0)
    assert cfg.containers_dir == "/s/containers"
    cfg = cfg.with_overrides({"cni_path": "/x:/y", "conf_dir": "/c", "netns_dir": None})
    assert (cfg.cni_path, cfg.conf_dir, cfg.netns_dir) == (("/x", "/y"), "/c", "/run/netns")
    path.write_text("runtime:\n  nosuch: 1\n")
    with pytest.raises(RunError, match="unknown runtime setting"):
        load_config(path)


def test_repo_config_matches_the_defaults() -> None:
    """What lets `pycni network ls` skip parsing it (``config_file.is_repo_defaults``)."""
    from pycni.config_file import is_repo_defaults
    from pycni.network.config import load_settings

    repo = Path(__file__).resolve().parents[2] / "conf" / "pycni.yaml"
    assert is_repo_defaults(repo)
    assert load_config(repo) == RuntimeConfig()
    from_file, built_in = load_settings(repo), load_settings(None)
    for key in ("conf_dir", "cni_path", "cache_dir", "state_dir", "ipam_data_dir",
                "firewall_backend", "dns_domain", "dns_run_dir"):
        assert getattr(from_file, key) == getattr(built_in, key), key
    assert from_file.pools() == built_in.pools()
