"""Hostile names: ``..``, ``/``, NUL and overlong values are refused before anything is touched.

Network name, container id, ifname, every plugin's dataDir and the runtime's cache dir. Each
is pushed through the real entry point (``skel.run`` with injected I/O, ``Invoker``) with an
audit hook recording writes, file-system mutations, kernel sockets and subprocesses: a refusal
must come with none of them. Paths built from validated names never leave their directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni.cni import cache, skel
from pycni.cni.conf import NetworkConfigList, parse_conflist
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.ipam.store import network_dir
from pycni.plugins.tuning import backup_path
from tests.unit.fuzz_support import Case, Recorder, assert_one_spec_error, base_config, base_env

HOSTILE = [
    "..",
    ".",
    "../../etc",
    "a/../../b",
    "/abs",
    "a/b",
    "a\0b",
    "\0",
    "x" * 256,
    "x" * 5000,
    "a\nb",
    "-rf",
]
# "eth%d": the kernel would take it as a template and name the link eth0, eth1...
HOSTILE_IFNAMES = ["..", ".", "a/b", "../x", "a\0b", "x" * 16, "a b", "a:b", "", "eth%d"]
HOSTILE_DATA_DIRS = [
    "relative/dir",
    "../escape",
    "/tmp/a/../../etc",
    "/tmp/..",
    "/tmp/a\0b",
    "/" + "x" * 5000,
    "/tmp/\ud800",  # a lone surrogate: JSON can carry it, no file name can
]
# Every plugin with a dataDir of its own (host-local's is under "ipam").
# (bridge hands its "ipam" section to host-local unread: host-local's refusal is the one.)
DATA_DIR_PLUGINS = ["host-local", "portmap", "tuning"]


def _refused(case: Case, codes: set[int]) -> None:
    outcome, touched = Recorder.get().run(case)
    assert_one_spec_error(case, outcome)
    assert json.loads(outcome.stdout)["code"] in codes, outcome
    assert touched == [], (case, touched)


@pytest.fixture(scope="module", autouse=True)
def _preloaded() -> None:
    import importlib

    from pycni.plugins import PLUGINS

    for info in PLUGINS.values():
        importlib.import_module(info.module)


@pytest.mark.parametrize("plugin", ["bridge", "host-local", "portmap", "tuning", "loopback"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_container_id(tmp_path: Path, plugin: str, value: str) -> None:
    env = {**base_env("ADD"), "CNI_CONTAINERID": value}
    doc = base_config(plugin, str(tmp_path))
    _refused(Case(plugin, env, json.dumps(doc).encode()), {ErrorCode.INVALID_ENVIRONMENT})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plugin", ["bridge", "host-local", "tuning"])
@pytest.mark.parametrize("value", HOSTILE_IFNAMES)
@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_hostile_ifname(tmp_path: Path, plugin: str, value: str, verb: str) -> None:
    env = {**base_env(verb), "CNI_IFNAME": value}
    doc = base_config(plugin, str(tmp_path))
    _refused(Case(plugin, env, json.dumps(doc).encode()), {ErrorCode.INVALID_ENVIRONMENT})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plugin", ["bridge", "host-local", "portmap", "tuning", "bandwidth"])
@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("verb", ["ADD", "DEL", "GC"])
def test_hostile_network_name(tmp_path: Path, plugin: str, value: str, verb: str) -> None:
    doc = {**base_config(plugin, str(tmp_path)), "name": value}
    _refused(
        Case(plugin, base_env(verb), json.dumps(doc).encode()), {ErrorCode.INVALID_NETWORK_CONFIG}
    )
    assert list(tmp_path.iterdir()) == []


def _with_data_dir(plugin: str, data_dir: str) -> dict[str, Any]:
    doc = base_config(plugin, "/unused")
    if "ipam" in doc:
        doc["ipam"]["dataDir"] = data_dir
    else:
        doc["dataDir"] = data_dir
    return doc


@pytest.mark.parametrize("plugin", DATA_DIR_PLUGINS)
@pytest.mark.parametrize("value", HOSTILE_DATA_DIRS)
@pytest.mark.parametrize("verb", ["ADD", "CHECK", "DEL", "GC", "STATUS"])
def test_hostile_data_dir(plugin: str, value: str, verb: str) -> None:
    """Refused by every verb that reads its state, except DEL, which must never abort the
    runtime's DEL chain: it may go on by attachment key, but touches nothing at that path."""
    case = Case(plugin, base_env(verb), json.dumps(_with_data_dir(plugin, value)).encode())
    outcome, touched = Recorder.get().run(case)
    assert not any(value in event for event in touched), (case, touched)
    if verb in ("ADD", "CHECK", "GC"):
        assert touched == [], (case, touched)
    if verb in ("ADD", "CHECK", "GC") or outcome.status:
        assert_one_spec_error(case, outcome)


def test_a_lone_surrogate_in_data_dir_is_code_7() -> None:
    case = Case("host-local", base_env("ADD"),
                json.dumps(_with_data_dir("host-local", "/tmp/\ud800")).encode())
    outcome, touched = Recorder.get().run(case)
    assert_one_spec_error(case, outcome)
    doc = json.loads(outcome.stdout)
    assert doc["code"] == ErrorCode.INVALID_NETWORK_CONFIG
    assert "lone surrogate" in doc["details"]
    assert touched == []


@pytest.mark.parametrize("bridge", ["br%d", "%s", "pycni%"])
def test_a_percent_in_the_bridge_name_is_code_7(bridge: str) -> None:
    """The kernel would take it as a name template: one new bridge per attempt, each one
    under a name the plugin never asked for and never finds again."""
    doc = {**base_config("bridge", "/unused"), "bridge": bridge}
    _refused(Case("bridge", base_env("ADD"), json.dumps(doc).encode()),
             {ErrorCode.INVALID_NETWORK_CONFIG})


# ---------------------------------------------------------------------------- runtime side


def _conflist(name: str = "net") -> NetworkConfigList:
    raw = {"cniVersion": "1.1.0", "name": name, "plugins": [{"type": "loopback"}]}
    return parse_conflist(json.dumps(raw).encode())


@pytest.mark.parametrize("value", HOSTILE)
def test_invoker_refuses_hostile_container_id(tmp_path: Path, value: str) -> None:
    invoker = Invoker(path=(str(tmp_path / "bin"),), cache_dir=str(tmp_path / "cache"))
    rt = RuntimeConf(container_id=value, netns="/nonexistent", ifname="eth0")
    for verb in (invoker.add, invoker.delete, invoker.check):
        with pytest.raises(CNIError) as err:
            verb(_conflist(), rt)
        assert err.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", HOSTILE_IFNAMES)
def test_invoker_refuses_hostile_ifname(tmp_path: Path, value: str) -> None:
    invoker = Invoker(path=(str(tmp_path / "bin"),), cache_dir=str(tmp_path / "cache"))
    rt = RuntimeConf(container_id="c1", netns="/nonexistent", ifname=value)
    with pytest.raises(CNIError) as err:
        invoker.add(_conflist(), rt)
    assert err.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", HOSTILE)
def test_conflist_refuses_hostile_network_name(value: str) -> None:
    raw = {"cniVersion": "1.1.0", "name": value, "plugins": [{"type": "loopback"}]}
    with pytest.raises(CNIError) as err:
        parse_conflist(json.dumps(raw).encode())
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG


@pytest.mark.parametrize(
    "value", ["relative", "/tmp/a/../../etc", "/tmp/a\0b", "/" + "x" * 5000, ""]
)
def test_invoker_refuses_hostile_cache_dir(tmp_path: Path, value: str) -> None:
    invoker = Invoker(path=(str(tmp_path / "bin"),), cache_dir=value)
    rt = RuntimeConf(container_id="c1", netns="/nonexistent", ifname="eth0")
    before = os.listdir(".")
    outcome, touched = None, []
    recorder = Recorder.get()
    recorder.events.clear()
    recorder.armed = True
    try:
        with pytest.raises(CNIError) as err:
            invoker.add(_conflist(), rt)
        outcome = err.value
    finally:
        recorder.armed = False
        touched = list(recorder.events)
    assert outcome is not None
    assert outcome.code == ErrorCode.INVALID_ENVIRONMENT
    assert touched == []
    assert os.listdir(".") == before


# ---------------------------------------------------------------------------- no path escapes

_NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=300
)


def _valid(check: Any, value: str) -> bool:
    try:
        check(value)
    except CNIError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(network=_NAMES, cid=_NAMES, ifname=st.text(min_size=1, max_size=20))
def test_paths_from_valid_names_stay_in_their_directory(
    network: str, cid: str, ifname: str
) -> None:
    root = "/state/root"
    if _valid(skel.validate_network_name, network):
        assert os.path.dirname(network_dir(root, network)) == root
        if _valid(skel.validate_container_id, cid) and _valid(skel.validate_ifname, ifname):
            entry = cache.entry_path(root, network, cid, ifname)
            assert os.path.dirname(os.path.normpath(entry)) == f"{root}/results"
            backup = os.path.normpath(backup_path(root, network, cid, ifname))
            assert backup.startswith(f"{root}/{network}/")
