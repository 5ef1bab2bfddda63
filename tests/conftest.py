"""Shared fixtures: throwaway network namespaces that never touch the root namespace.

Every kernel test works inside namespaces made here, pinned under a private temporary
directory (not /run/netns), and removed in teardown whether or not the test failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.net import netns
from tests.support import AUTOSTART_OFF, host_left_as_found

MakeNetNS = Callable[..., str]

# A plugin executable or pycni-run that finds no server starts one (issue #18): nothing a test
# runs may, except the autostart tests, which turn it on in sandboxes of their own. Every
# environment built from os.environ (and tests.support's exec_plugin) carries this; the idle
# time is a backstop should something start anyway.
os.environ.update(AUTOSTART_OFF)


def _is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/netns and tests/e2e need root: mark them, skip them politely."""
    skip = pytest.mark.skip(reason="needs root (creates network namespaces)")
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "netns" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.root)
            if not _is_root():
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _remove_what_this_session_made_on_the_host() -> Iterator[None]:
    """Set up first, torn down last (after the session's server): ``host_left_as_found``."""
    with host_left_as_found():
        yield


def _bring_lo_up(path: str) -> None:
    from pyroute2 import IPRoute

    with netns.enter(path), IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


@pytest.fixture
def netns_dir() -> Iterator[Path]:
    """A private directory where this test pins its namespaces."""
    path = Path(tempfile.mkdtemp(prefix="pycni-ns-"))
    try:
        yield path
    finally:
        for entry in path.iterdir():
            netns.remove(str(entry))
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_netns(netns_dir: Path) -> MakeNetNS:
    """Factory: ``make_netns("outside")`` makes a fresh netns (lo up unless told); its path."""

    def make(name: str, *, lo_up: bool = True) -> str:
        path = netns.create(str(netns_dir / name))
        if lo_up:
            _bring_lo_up(path)
        return path

    return make


@pytest.fixture
def host_ns(make_netns: MakeNetNS) -> str:
    """The sandbox "host": plugins and runtimes run in here, never in the root netns."""
    return make_netns("host")


@pytest.fixture
def container_ns(make_netns: MakeNetNS) -> str:
    """A container's netns (what CNI_NETNS points at); lo down, as a runtime makes it."""
    return make_netns("container", lo_up=False)


@pytest.fixture(scope="session")
def cni_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin executables as `pycni install` writes them (pinned interpreter, -I -S)."""
    from pycni.install import install

    bin_dir = tmp_path_factory.mktemp("cni-bin")
    install(bin_dir=str(bin_dir), conf_dir=None)
    return bin_dir


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A private results cache (libcni layout) instead of /var/lib/cni."""
    path = tmp_path / "cache"
    path.mkdir()
    return path


@pytest.fixture
def sandbox(host_ns: str, make_netns: MakeNetNS, cni_bin: Path, tmp_path: Path) -> Any:
    """A sandbox host with a private conf dir, results cache and IPAM data dir."""
    from tests.e2e.bridge_support import Sandbox

    dirs = {name: tmp_path / name for name in ("conf", "cache", "ipam")}
    for path in dirs.values():
        path.mkdir()
    return Sandbox(
        host_ns=host_ns,
        conf_dir=dirs["conf"],
        cache_dir=dirs["cache"],
        data_dir=dirs["ipam"],
        bin_dir=cni_bin,
        make_netns=make_netns,
    )


# ---------------------------------------------------------------------------------------------
# pycni serve: plugin e2e tests run twice, in-process and through a private fork server.
# (Owned by the fork-server work, issue #4; keep other fixtures above this block.)

PLUGIN_MODES = ("inprocess", "server")


def _runs_plugin_executables(path: Path) -> bool:
    # pycni-run's tests run their plugins inside the runtime's own sandbox (its pid and mount
    # namespaces), out of the session server's reach: they run once, in-process.
    return "e2e" in path.parts and not path.name.startswith("test_runtime_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests marked runtime_sandbox run pycni-run in its own pid+mount namespaces, where its
    # plugins run in-process: once is all there is to run.
    if metafunc.definition.get_closest_marker("runtime_sandbox"):
        return
    if "plugin_mode" in metafunc.fixturenames and _runs_plugin_executables(
        metafunc.definition.path
    ):
        metafunc.parametrize("plugin_mode", PLUGIN_MODES, indirect=True)


@pytest.fixture(scope="session")
def pycni_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`pycni serve` on a private socket for the whole session; stopped by its PID."""
    import signal
    import subprocess
    import sys
    import time

    directory = tmp_path_factory.mktemp("pycni-server")
    sock, log = directory / "run" / "pycni.sock", directory / "server.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pycni.cli",
                "serve",
                "--socket",
                str(sock),
                "--log-level",
                "DEBUG",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pycni serve did not start: {log.read_text()}")
            time.sleep(0.02)
        yield sock
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=70)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(autouse=True)
def plugin_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """In tests that exec plugins: "inprocess" or "server" (how the executables run them);
    everywhere else: "" and nothing changes. Plugins see it through os.environ (the Invoker
    passes it on) and ``tests.support.exec_plugin`` (which forwards it)."""
    mode = str(getattr(request, "param", ""))
    if mode == "server" and _is_root():
        monkeypatch.setenv("PYCNI_SOCKET", str(request.getfixturevalue("pycni_server")))
        monkeypatch.delenv("PYCNI_NO_SERVER", raising=False)
    elif mode:
        monkeypatch.setenv("PYCNI_NO_SERVER", "1")
        monkeypatch.delenv("PYCNI_SOCKET", raising=False)
    return mode
