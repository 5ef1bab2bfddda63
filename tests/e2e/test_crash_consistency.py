"""Crash consistency: SIGKILL at every step of ADD and DEL, then DEL and GC leave nothing.

The failpoints are read from the plugin sources themselves (every ``failpoint("...")`` call in
bridge, host-local, portmap and bandwidth), so a new step with a failpoint is tested without
editing this file. For each one: a bystander attachment is made; the crashing verb runs with
``PYCNI_FAILPOINTS=<point>=kill`` and must fail (the plugin process, or the fork server's
worker, died by SIGKILL); the runtime then runs DEL and GC (the bystander in the valid list)
through ``Invoker``, as a runtime restarting after the crash would. Afterwards no IP, IPAM
index entry, veth, ifb, nft element or per-attachment chain, cache entry or host-port
reservation of the crashed attachment is left, the bystander still passes CHECK, and a new
ADD for the same container works. Runs in-process and through the fork server (plugin_mode).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from pycni import failpoints
from pycni.cni.conf import NetworkConfigList, find_conflist
from pycni.cni.errors import CNIError
from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.net import netns
from pycni.plugins.runner import FORKED
from tests.e2e.bridge_support import Sandbox, link_names
from tests.e2e.crash_support import NETWORK, capability_args, full_conflist, leaks

_ROOT = Path(__file__).resolve().parents[2]
_SOURCES = (
    "pycni/plugins/bridge.py",
    "pycni/plugins/bridge_del.py",
    "pycni/ipam/hostlocal.py",
    "pycni/plugins/portmap.py",
    "pycni/plugins/bandwidth.py",
)


def _declared_failpoints() -> list[str]:
    found: list[str] = []
    for source in _SOURCES:
        found += re.findall(r'failpoint\("([^"]+)"\)', (_ROOT / source).read_text())
    return sorted(set(found))


FAILPOINTS = _declared_failpoints()
CRASHED, BYSTANDER = "crashed", "bystander"


def test_every_plugin_has_add_and_del_failpoints() -> None:
    for prefix in ("bridge", "hostlocal", "portmap", "bandwidth"):
        for verb in ("add", "del"):
            assert any(p.startswith(f"{prefix}.{verb}.") for p in FAILPOINTS), (prefix, verb)


def test_failpoint_names_parse() -> None:
    assert failpoints.parse("a.b=kill, c ;d=sleep") == frozenset({"a.b", "c"})
    assert failpoints.parse("") == frozenset()


class _Runtime:
    """A runtime restarting after the crash: Invoker, with the plugins' stderr collected."""

    def __init__(self, sandbox: Sandbox, hostports: Path) -> None:
        self.sandbox, self.hostports = sandbox, hostports
        self.log: list[str] = []
        self.invoker = Invoker(
            path=(str(sandbox.bin_dir),),
            cache_dir=str(sandbox.cache_dir),
            timeout=60,
            log=self.log.append,
            runner=FORKED,
        )

    @property
    def conflist(self) -> NetworkConfigList:
        return find_conflist(str(self.sandbox.conf_dir), NETWORK)

    def rt(self, cid: str, port: int) -> RuntimeConf:
        return self.sandbox.runtime_conf(cid, capability_args=capability_args(port))

    def add(self, cid: str, port: int, *, rollback: bool = True) -> None:
        with netns.enter(self.sandbox.host_ns):
            self.invoker.add(self.conflist, self.rt(cid, port), rollback=rollback)

    def delete(self, cid: str, port: int) -> None:
        with netns.enter(self.sandbox.host_ns):
            self.invoker.delete(self.conflist, self.rt(cid, port))

    def check(self, cid: str, port: int) -> None:
        with netns.enter(self.sandbox.host_ns):
            self.invoker.check(self.conflist, self.rt(cid, port))

    def gc(self, *alive: str) -> None:
        with netns.enter(self.sandbox.host_ns):
            self.invoker.gc(self.conflist, [(cid, "eth0") for cid in alive])


@pytest.fixture
def hostports(tmp_path: Path) -> Path:
    path = tmp_path / "hostports"
    path.mkdir()
    return path


@pytest.fixture
def runtime(sandbox: Sandbox, hostports: Path) -> _Runtime:
    sandbox.write_conf(full_conflist(sandbox, hostports))
    return _Runtime(sandbox, hostports)


def _crash(runtime: _Runtime, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """Run the verb of ``point`` with the failpoint armed; it must die there."""
    # ADD without rollback: the runtime died too, so only the "in progress" cache entry
    # tells anyone this attachment was ever started.
    verb = functools.partial(runtime.add, CRASHED, 8081, rollback=False)
    if ".del." in point:
        verb = functools.partial(runtime.delete, CRASHED, 8081)
    monkeypatch.setenv(failpoints.ENV, f"{point}=kill")
    try:
        with pytest.raises(CNIError):
            verb()
    finally:
        monkeypatch.delenv(failpoints.ENV)
    assert any(f"failpoint {point}: SIGKILL" in line for line in runtime.log), runtime.log


@pytest.mark.parametrize("point", FAILPOINTS)
def test_sigkill_then_del_and_gc_leave_nothing(
    runtime: _Runtime, monkeypatch: pytest.MonkeyPatch, plugin_mode: str, point: str
) -> None:
    sandbox, hostports = runtime.sandbox, runtime.hostports
    runtime.add(BYSTANDER, 8080)
    if ".del." in point:
        runtime.add(CRASHED, 8081)
    _crash(runtime, monkeypatch, point)

    runtime.delete(CRASHED, 8081)
    runtime.gc(BYSTANDER)
    assert leaks(sandbox, hostports, alive=[BYSTANDER]) == []
    assert "eth0" not in link_names(sandbox.containers[CRASHED])
    runtime.check(BYSTANDER, 8080)

    runtime.add(CRASHED, 8081)  # the same container again, same ports
    runtime.check(CRASHED, 8081)
    assert leaks(sandbox, hostports, alive=[BYSTANDER, CRASHED]) == []
    runtime.delete(CRASHED, 8081)
    runtime.delete(BYSTANDER, 8080)
    assert leaks(sandbox, hostports) == []


@pytest.mark.parametrize("point", [p for p in FAILPOINTS if ".add." in p][:3])
def test_gc_alone_cleans_a_crashed_add(
    runtime: _Runtime, monkeypatch: pytest.MonkeyPatch, plugin_mode: str, point: str
) -> None:
    """The runtime forgot the container too: the "ADD in progress" cache entry is enough."""
    sandbox, hostports = runtime.sandbox, runtime.hostports
    _crash(runtime, monkeypatch, point)
    runtime.gc()
    assert leaks(sandbox, hostports) == []
