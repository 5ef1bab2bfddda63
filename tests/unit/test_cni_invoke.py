"""The runtime side, against fake plugins: small executables written into tmp_path.

Each fake plugin appends what it saw (verb, environment, stdin and, if asked, the cache
entry) as one JSON line to a log, then does what its spec says for that verb. By default ADD
prints its prevResult with its own interface appended, so chaining is visible in the result.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import cache
from pycni.cni.conf import NetworkConfigList, parse_conflist
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.invoke import Invoker, RuntimeConf, build_plugin_config
from pycni.cni.types import Result

FAKE_BODY = r"""
import json, os, sys, time
raw = sys.stdin.buffer.read()
cmd = os.environ.get("CNI_COMMAND", "")
try:
    conf = json.loads(raw)
except ValueError:
    conf = raw.decode(errors="replace")
act = SPEC.get("verbs", {}).get(cmd, {})
seen = {"plugin": SPEC["name"], "command": cmd, "env": dict(os.environ), "stdin": conf}
if SPEC.get("watch"):
    try:
        with open(SPEC["watch"]) as f:
            seen["watched"] = json.load(f)
    except (OSError, ValueError):
        seen["watched"] = None
with open(LOG, "a") as f:
    f.write(json.dumps(seen) + "\n")
if act.get("sleep"):
    time.sleep(act["sleep"])
sys.stderr.write(act.get("stderr", ""))
if "stdout" in act:
    sys.stdout.write(act["stdout"])
elif cmd == "ADD":
    prev = conf.get("prevResult") or {"cniVersion": conf["cniVersion"]}
    result = dict(prev)
    result["interfaces"] = list(prev.get("interfaces", [])) + [{"name": SPEC["name"]}]
    if SPEC.get("ip"):
        ip = {"address": SPEC["ip"], "interface": len(result["interfaces"]) - 1}
        result["ips"] = list(prev.get("ips", [])) + [ip]
    sys.stdout.write(json.dumps(result))
elif cmd == "VERSION":
    answer = {"cniVersion": conf.get("cniVersion"), "supportedVersions": ["1.1.0"]}
    sys.stdout.write(json.dumps(answer))
sys.exit(act.get("exit", 0))
"""


def cni_error(code: int, msg: str, details: str = "") -> dict[str, Any]:
    """A verb behaviour: print the error document and exit 1, as skel does."""
    doc: dict[str, Any] = {"cniVersion": "1.1.0", "code": code, "msg": msg}
    if details:
        doc["details"] = details
    return {"stdout": json.dumps(doc), "exit": 1}


@dataclass
class Rig:
    """A bin dir of fake plugins, their shared log, a cache dir and an Invoker over them."""

    root: Path
    bin_dir: Path
    cache_dir: Path
    log: Path
    messages: list[str] = field(default_factory=list)

    def plugin(
        self,
        name: str,
        *,
        directory: Path | None = None,
        ip: str = "",
        watch: str = "",
        **verbs: dict[str, Any],
    ) -> Path:
        spec = {"name": name, "ip": ip, "watch": watch, "verbs": verbs}
        path = (directory or self.bin_dir) / name
        path.write_text(
            f"#!{sys.executable} -IS\nSPEC = {json.dumps(spec)!r}\nLOG = {str(self.log)!r}\n"
            f"SPEC = __import__('json').loads(SPEC)\n{FAKE_BODY}"
        )
        path.chmod(0o755)
        return path

    def shell_plugin(self, name: str, script: str) -> Path:
        path = self.bin_dir / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
        return path

    def invoker(self, **kw: Any) -> Invoker:
        options: dict[str, Any] = {
            "path": (str(self.bin_dir),),
            "cache_dir": str(self.cache_dir),
            "timeout": 20.0,
            "base_env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            "log": self.messages.append,
        }
        return Invoker(**(options | kw))

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def trace(self) -> list[tuple[str, str]]:
        return [(c["command"], c["plugin"]) for c in self.calls()]

    def entry_path(self, rt: RuntimeConf, network: str = "testnet") -> Path:
        return Path(cache.entry_path(str(self.cache_dir), network, rt.container_id, rt.ifname))

    def cached(self, rt: RuntimeConf, network: str = "testnet") -> cache.CachedAttachment | None:
        return cache.read(str(self.entry_path(rt, network)))

    def cache_files(self) -> list[str]:
        directory = self.cache_dir / "results"
        return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return Rig(
        root=tmp_path, bin_dir=bin_dir, cache_dir=tmp_path / "cache", log=tmp_path / "calls.jsonl"
    )


def network(
    *plugins: dict[str, Any], version: str = "1.1.0", name: str = "testnet", **top: Any
) -> NetworkConfigList:
    doc = {"cniVersion": version, "name": name, "plugins": list(plugins), **top}
    return parse_conflist(json.dumps(doc).encode(), "test.conflist")


RT = RuntimeConf(container_id="ctr1", netns="/run/netns/ctr1", ifname="eth0")


def cni_env(call: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in call["env"].items() if k.startswith("CNI_")}


# ---- finding plugins --------------------------------------------------------------------------


def test_lookup_takes_the_first_dir_on_the_path(rig: Rig) -> None:
    first, second = rig.root / "first", rig.root / "second"
    first.mkdir()
    second.mkdir()
    rig.plugin("shared", directory=second)
    rig.plugin("only2", directory=second)
    winner = rig.plugin("shared", directory=first)
    invoker = rig.invoker(path=(str(rig.root / "missing"), str(first), str(second)))
    assert invoker.find_plugin("shared") == str(winner)
    assert invoker.find_plugin("only2") == str(second / "only2")


def test_lookup_skips_directories_and_non_executables(rig: Rig) -> None:
    first, second = rig.root / "first", rig.root / "second"
    first.mkdir()
    second.mkdir()
    (first / "a").mkdir()
    (first / "b").write_text("#!/bin/sh\n")  # mode 0644: not a plugin
    rig.plugin("a", directory=second)
    rig.plugin("b", directory=second)
    invoker = rig.invoker(path=(str(first), str(second)))
    assert invoker.find_plugin("a") == str(second / "a")
    assert invoker.find_plugin("b") == str(second / "b")


def test_missing_plugin_is_code_7_naming_it(rig: Rig) -> None:
    with pytest.raises(CNIError) as info:
        rig.invoker().find_plugin("ghost")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "'ghost'" in info.value.msg
    assert str(rig.bin_dir) in info.value.details


@pytest.mark.parametrize("kind", ["../bin/evil", "/bin/sh", "sub/evil", "a\\b", ".", "..", ""])
def test_lookup_refuses_path_separators(rig: Rig, kind: str) -> None:
    (rig.bin_dir / "sub").mkdir()
    rig.plugin("evil", directory=rig.bin_dir / "sub")
    with pytest.raises(CNIError) as info:
        rig.invoker(path=(str(rig.bin_dir), "/")).find_plugin(kind)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert rig.calls() == []


# ---- environment and request config -----------------------------------------------------------


def test_env_sets_cni_vars_and_strips_stale_ones(rig: Rig) -> None:
    rig.plugin("p")
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "KEEP_ME": "yes",
        "CNI_COMMAND": "STALE",
        "CNI_NETNS": "/stale",
        "CNI_ARGS": "STALE=1",
        "CNI_STALE": "x",
        "CNI_NETNS_OVERRIDE": "1",
    }
    second = rig.root / "second"
    second.mkdir()
    invoker = rig.invoker(base_env=base, path=(str(rig.bin_dir), str(second)))
    rt = RuntimeConf(
        container_id="ctr1",
        netns="/run/netns/ctr1",
        ifname="net1",
        cni_args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")),
    )
    invoker.add(network({"type": "p"}), rt)
    (call,) = rig.calls()
    assert cni_env(call) == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": "/run/netns/ctr1",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
        "CNI_PATH": f"{rig.bin_dir}{os.pathsep}{second}",
    }
    assert call["env"]["KEEP_ME"] == "yes"


def test_env_defaults_to_the_process_env(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNI_CONTAINERID", "stale")
    monkeypatch.setenv("PYCNI_TEST_MARK", "inherited")
    rig.plugin("p")
    rig.invoker(base_env=None).status(network({"type": "p"}))
    (call,) = rig.calls()
    assert call["env"]["PYCNI_TEST_MARK"] == "inherited"
    assert cni_env(call) == {"CNI_COMMAND": "STATUS", "CNI_PATH": str(rig.bin_dir)}


def test_runtime_config_is_the_declared_capabilities_that_were_given(rig: Rig) -> None:
    rig.plugin("portmap")
    rig.plugin("plain")
    rig.plugin("idle")
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    rt = RuntimeConf(
        container_id="ctr1",
        netns="/n",
        capability_args={
            "portMappings": ports,
            "bandwidth": {"ingressRate": 1},
            "ips": ["10.0.0.5/24"],
        },
    )
    conf = network(
        {
            "type": "portmap",
            "capabilities": {"portMappings": True, "bandwidth": False, "mac": True},
        },
        {"type": "plain"},
        {"type": "idle", "capabilities": {"mac": True}},
    )
    rig.invoker().add(conf, rt)
    portmap, plain, idle = (c["stdin"] for c in rig.calls())
    assert portmap["runtimeConfig"] == {"portMappings": ports}
    assert portmap["capabilities"] == {"portMappings": True, "bandwidth": False, "mac": True}
    assert "runtimeConfig" not in plain
    assert "runtimeConfig" not in idle  # declared, but the runtime gave no mac: absent, not {}


def test_build_plugin_config() -> None:
    conf = network(
        {
            "type": "bridge",
            "name": "ignored",
            "cniVersion": "0.1.0",
            "bridge": "cni0",
            "capabilities": {"mac": True},
        },
        version="1.0.0",
    )
    data = build_plugin_config(
        conf,
        conf.plugins[0],
        capability_args={"mac": "aa:bb:cc:dd:ee:ff"},
        prev_result={"cniVersion": "1.0.0"},
        extra={"cni.dev/x": 1},
    )
    assert json.loads(data) == {
        "type": "bridge",
        "name": "testnet",
        "cniVersion": "1.0.0",
        "bridge": "cni0",
        "capabilities": {"mac": True},
        "runtimeConfig": {"mac": "aa:bb:cc:dd:ee:ff"},
        "prevResult": {"cniVersion": "1.0.0"},
        "cni.dev/x": 1,
    }
    bare = json.loads(build_plugin_config(conf, conf.plugins[0], capability_args={}))
    assert "prevResult" not in bare
    assert "runtimeConfig" not in bare


# ---- ADD --------------------------------------------------------------------------------------


def test_add_chains_prev_result_and_caches_the_final_one(rig: Rig) -> None:
    rig.plugin("p1", ip="10.0.0.2/24")
    rig.plugin("p2")
    rig.plugin("p3")
    conf = network({"type": "p1"}, {"type": "p2"}, {"type": "p3"}, version="1.0.0")
    rt = RuntimeConf(
        container_id="ctr1",
        netns="/run/netns/ctr1",
        cni_args=(("A", "1"),),
        capability_args={"x": 1},
    )
    result = rig.invoker().add(conf, rt)

    first, second, third = rig.calls()
    assert rig.trace() == [("ADD", "p1"), ("ADD", "p2"), ("ADD", "p3")]
    assert "prevResult" not in first["stdin"]
    assert second["stdin"]["prevResult"] == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "p1"}],
        "ips": [{"interface": 0, "address": "10.0.0.2/24"}],
    }
    assert [i["name"] for i in third["stdin"]["prevResult"]["interfaces"]] == ["p1", "p2"]
    assert all(
        c["stdin"]["name"] == "testnet" and c["stdin"]["cniVersion"] == "1.0.0" for c in rig.calls()
    )

    assert isinstance(result, Result)
    assert [i.name for i in result.interfaces] == ["p1", "p2", "p3"]
    assert result.cni_version == "1.0.0"

    cached = rig.cached(rt)
    assert cached is not None
    assert cached.result == result.to_dict("1.0.0")
    assert cached.config == conf.raw
    assert (cached.netns, cached.cni_args, cached.capability_args) == (
        "/run/netns/ctr1",
        (("A", "1"),),
        {"x": 1},
    )
    raw = json.loads(rig.entry_path(rt).read_bytes())
    assert raw["kind"] == "cniCacheV1"
    assert base64.b64decode(raw["config"]) == conf.raw
    assert rig.cache_files() == ["testnet-ctr1-eth0"]  # no temp files


def test_add_converts_each_result_to_the_list_version(rig: Rig) -> None:
    old = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}
    rig.plugin("p1", ADD={"stdout": json.dumps(old)})
    rig.plugin("p2")
    result = rig.invoker().add(network({"type": "p1"}, {"type": "p2"}, version="1.1.0"), RT)
    prev = rig.calls()[1]["stdin"]["prevResult"]
    assert prev == {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]}
    assert result.cni_version == "1.1.0"


@pytest.mark.parametrize("output", [{}, {"cniVersion": ""}, {"cniVersion": None}])
def test_add_result_without_version_gets_the_list_version(rig: Rig, output: dict[str, Any]) -> None:
    """libcni's fixupResultVersion: a missing or empty cniVersion means the config's."""
    rig.plugin("p", ADD={"stdout": json.dumps(output | {"ips": [{"address": "10.0.0.2/24"}]})})
    result = rig.invoker().add(network({"type": "p"}, version="0.4.0"), RT)
    assert result.cni_version == "0.4.0"
    assert result.ips[0].address == "10.0.0.2/24"


def test_add_in_progress_entry_exists_while_the_chain_runs(rig: Rig) -> None:
    watched = str(rig.entry_path(RT))
    rig.plugin("p1", watch=watched)
    rig.plugin("p2", watch=watched)
    rig.invoker().add(network({"type": "p1"}, {"type": "p2"}), RT)
    for call in rig.calls():
        pending = call["watched"]
        assert pending is not None, "no cache entry while ADD ran"
        assert pending["kind"] == "cniCacheV1"
        assert (pending["containerId"], pending["ifName"], pending["networkName"]) == (
            "ctr1",
            "eth0",
            "testnet",
        )
        assert pending["netns"] == "/run/netns/ctr1"
        assert "result" not in pending
    cached = rig.cached(RT)
    assert cached is not None
    assert cached.result is not None


def test_failed_add_is_rolled_back_and_leaves_no_cache(rig: Rig) -> None:
    rig.plugin("p1", ip="10.0.0.2/24")
    rig.plugin("p2", ADD=cni_error(7, "bad config", "no bridge"))
    rig.plugin("p3")
    conf = network({"type": "p1"}, {"type": "p2"}, {"type": "p3"})
    with pytest.raises(CNIError) as info:
        rig.invoker().add(conf, RT)
    assert (info.value.code, info.value.msg, info.value.details) == (7, "bad config", "no bridge")
    assert rig.trace() == [
        ("ADD", "p1"),
        ("ADD", "p2"),
        ("DEL", "p3"),
        ("DEL", "p2"),
        ("DEL", "p1"),
    ]
    p1_result = rig.calls()[1]["stdin"]["prevResult"]
    for call in rig.calls()[2:]:
        assert call["stdin"]["prevResult"] == p1_result
    assert rig.cache_files() == []


def test_failed_first_add_rolls_back_without_prev_result(rig: Rig) -> None:
    rig.plugin("p1", ADD=cni_error(11, "busy"))
    rig.plugin("p2")
    with pytest.raises(CNIError) as info:
        rig.invoker().add(network({"type": "p1"}, {"type": "p2"}), RT)
    assert info.value.code == 11
    assert rig.trace() == [("ADD", "p1"), ("DEL", "p2"), ("DEL", "p1")]
    assert all("prevResult" not in c["stdin"] for c in rig.calls()[1:])
    assert rig.cache_files() == []


def test_add_without_rollback_leaves_the_pending_entry_for_gc(rig: Rig) -> None:
    rig.plugin("p1")
    rig.plugin("p2", ADD=cni_error(7, "no"))
    with pytest.raises(CNIError):
        rig.invoker().add(network({"type": "p1"}, {"type": "p2"}), RT, rollback=False)
    assert rig.trace() == [("ADD", "p1"), ("ADD", "p2")]
    pending = rig.cached(RT)
    assert pending is not None
    assert pending.result is None


def test_a_second_add_of_a_live_attachment_is_refused_and_leaves_it_alone(rig: Rig) -> None:
    """Without the refusal the second ADD fails on what the first one holds and its rollback
    DEL destroys the live attachment (and its cache entry)."""
    rig.plugin("p1", ip="10.0.0.2/24")
    conf = network({"type": "p1"})
    rig.invoker().add(conf, RT)
    first = rig.cached(RT)
    rig.log.unlink()
    with pytest.raises(CNIError) as info:
        rig.invoker().add(conf, RT)
    assert info.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert "already exists" in info.value.msg
    assert rig.calls() == []  # no plugin ran: neither an ADD nor a rollback DEL
    assert rig.cached(RT) == first
    rig.invoker().delete(conf, RT)
    rig.invoker().add(conf, RT)  # once deleted, it may be added again


def test_a_crashed_add_may_be_retried(rig: Rig) -> None:
    rig.plugin("p1", ip="10.0.0.2/24")
    conf = network({"type": "p1"})
    cache.write(str(rig.cache_dir), cache.CachedAttachment(
        network="testnet", container_id="ctr1", ifname="eth0", netns="/run/netns/ctr1"))
    rig.invoker().add(conf, RT)
    assert rig.trace() == [("ADD", "p1")]


def test_a_read_only_cache_is_one_clear_error(rig: Rig) -> None:
    """A file where the cache's results directory should be stands in for a read-only file
    system (root ignores permission bits): code 5, not a traceback, and no plugin ran."""
    rig.plugin("p1")
    rig.cache_dir.mkdir()
    (rig.cache_dir / "results").write_text("")
    with pytest.raises(CNIError) as info:
        rig.invoker().add(network({"type": "p1"}), RT)
    assert info.value.code == ErrorCode.IO_FAILURE
    assert "results cache" in info.value.msg
    assert rig.calls() == []


def test_an_overlong_cache_file_name_is_refused_before_anything_runs(rig: Rig) -> None:
    rig.plugin("p1")
    long_net = network({"type": "p1"}, name="n" * 200)
    rt = RuntimeConf(container_id="c" * 60, netns="/run/netns/x", ifname="eth0")
    for verb in ("add", "delete", "check"):
        with pytest.raises(CNIError) as info:
            getattr(rig.invoker(), verb)(long_net, rt)
        assert info.value.code == ErrorCode.INVALID_ENVIRONMENT
        assert "too long for the results cache" in info.value.msg
    assert rig.calls() == []


def test_failed_rollback_keeps_the_original_error_and_the_entry(rig: Rig) -> None:
    rig.plugin("p1", DEL=cni_error(11, "del failed"))
    rig.plugin("p2", ADD=cni_error(7, "add failed"))
    with pytest.raises(CNIError) as info:
        rig.invoker().add(network({"type": "p1"}, {"type": "p2"}), RT)
    assert info.value.msg == "add failed"
    assert rig.trace() == [("ADD", "p1"), ("ADD", "p2"), ("DEL", "p2"), ("DEL", "p1")]
    assert rig.cache_files() == ["testnet-ctr1-eth0"]  # GC will find it
    assert any("del failed" in m for m in rig.messages)


@pytest.mark.parametrize(
    ("stdout", "code"),
    [
        ("", ErrorCode.DECODING_FAILURE),
        ("not json", ErrorCode.DECODING_FAILURE),
        ("[]", ErrorCode.DECODING_FAILURE),
        (
            '{"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}',
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
        ),
        (
            '{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}',
            ErrorCode.INVALID_NETWORK_CONFIG,
        ),
    ],
)
def test_bad_add_result_fails_and_rolls_back(rig: Rig, stdout: str, code: int) -> None:
    rig.plugin("p", ADD={"stdout": stdout})
    with pytest.raises(CNIError) as info:
        rig.invoker().add(network({"type": "p"}), RT)
    assert info.value.code == code
    assert rig.trace() == [("ADD", "p"), ("DEL", "p")]
    assert rig.cache_files() == []


@pytest.mark.parametrize(
    "rt",
    [
        RuntimeConf(container_id="bad/id"),
        RuntimeConf(container_id="c", ifname="a" * 16),
        RuntimeConf(container_id="c", ifname=".."),
    ],
)
@pytest.mark.parametrize("verb", ["add", "delete", "check"])
def test_invalid_attachment_is_refused_before_any_plugin(
    rig: Rig, rt: RuntimeConf, verb: str
) -> None:
    rig.plugin("p")
    with pytest.raises(CNIError) as info:
        getattr(rig.invoker(), verb)(network({"type": "p"}), rt)
    assert info.value.code == ErrorCode.INVALID_ENVIRONMENT
    assert rig.calls() == []
    assert rig.cache_files() == []


# ---- plugin failures --------------------------------------------------------------------------


def test_plugin_error_document_becomes_cni_error(rig: Rig) -> None:
    rig.plugin("p", STATUS=cni_error(50, "plugin not available", "daemon down"))
    with pytest.raises(CNIError) as info:
        rig.invoker().status(network({"type": "p"}))
    assert (info.value.code, info.value.msg, info.value.details) == (
        50,
        "plugin not available",
        "daemon down",
    )


def test_empty_stdout_uses_stderr_text(rig: Rig) -> None:
    rig.plugin("p", STATUS={"stderr": "panic: runtime error\n", "exit": 2})
    with pytest.raises(CNIError) as info:
        rig.invoker().status(network({"type": "p"}))
    assert info.value.code == ErrorCode.INTERNAL
    assert "exit status 2" in info.value.msg
    assert info.value.details == "panic: runtime error"


@pytest.mark.parametrize("stdout", ["oops, not json", '{"msg": "no code"}', "[1]"])
def test_unparsable_error_is_internal_with_the_text(rig: Rig, stdout: str) -> None:
    rig.plugin("p", STATUS={"stdout": stdout, "exit": 1})
    with pytest.raises(CNIError) as info:
        rig.invoker().status(network({"type": "p"}))
    assert info.value.code == ErrorCode.INTERNAL
    assert info.value.details == stdout


def test_stderr_of_a_successful_plugin_is_forwarded(rig: Rig) -> None:
    rig.plugin("p", STATUS={"stderr": "warning: slow disk\n"})
    rig.invoker().status(network({"type": "p"}))
    assert rig.messages == ["warning: slow disk"]


def test_a_hanging_plugin_is_killed_at_the_timeout(rig: Rig) -> None:
    pidfile = rig.root / "child.pid"
    rig.shell_plugin("hang", f"sleep 60 &\necho $! > {pidfile}\nwait")
    start = time.monotonic()
    with pytest.raises(CNIError) as info:
        rig.invoker(timeout=0.5).status(network({"type": "hang"}))
    elapsed = time.monotonic() - start
    assert info.value.code == ErrorCode.INTERNAL
    assert "timed out" in info.value.msg
    assert elapsed < 10
    # What the plugin started dies with it, rather than living on as an orphan.
    child = int(pidfile.read_text())
    assert wait_gone(child), f"plugin's child {child} survived the timeout"


def wait_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_timeout_during_add_rolls_back(rig: Rig) -> None:
    rig.plugin("p1")
    rig.plugin("p2", ADD={"sleep": 30})
    with pytest.raises(CNIError, match="timed out"):
        rig.invoker(timeout=0.5).add(network({"type": "p1"}, {"type": "p2"}), RT)
    assert rig.trace() == [("ADD", "p1"), ("ADD", "p2"), ("DEL", "p2"), ("DEL", "p1")]
    assert rig.cache_files() == []


def test_unexecutable_plugin_is_internal(rig: Rig) -> None:
    path = rig.bin_dir / "garbage"
    path.write_bytes(b"\x7fELF not really")
    path.chmod(0o755)
    with pytest.raises(CNIError) as info:
        rig.invoker().status(network({"type": "garbage"}))
    assert info.value.code == ErrorCode.INTERNAL
    assert "cannot execute" in info.value.msg


def test_text_file_busy_is_retried(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.plugin("p")
    real_popen = subprocess.Popen
    failures = iter([OSError(errno.ETXTBSY, "Text file busy")] * 2)

    def flaky(*args: Any, **kwargs: Any) -> Any:
        err = next(failures, None)
        if err is not None:
            raise err
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", flaky)
    monkeypatch.setattr(time, "sleep", lambda _: None)
    rig.invoker().status(network({"type": "p"}))
    assert rig.trace() == [("STATUS", "p")]


def test_text_file_busy_gives_up(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.plugin("p")

    def busy(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ETXTBSY, "Text file busy")

    monkeypatch.setattr(subprocess, "Popen", busy)
    monkeypatch.setattr(time, "sleep", lambda _: None)
    with pytest.raises(CNIError) as info:
        rig.invoker().status(network({"type": "p"}))
    assert info.value.code == ErrorCode.INTERNAL


def test_version_info(rig: Rig) -> None:
    rig.plugin("p")
    assert rig.invoker().version_info("p") == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["1.1.0"],
    }
    (call,) = rig.calls()
    assert call["stdin"] == {"cniVersion": "1.1.0"}
    assert cni_env(call) == {"CNI_COMMAND": "VERSION", "CNI_PATH": str(rig.bin_dir)}


@pytest.mark.parametrize("stdout", ["", "garbage", "[]"])
def test_version_info_garbage_is_code_6(rig: Rig, stdout: str) -> None:
    rig.plugin("p", VERSION={"stdout": stdout})
    with pytest.raises(CNIError) as info:
        rig.invoker().version_info("p")
    assert info.value.code == ErrorCode.DECODING_FAILURE


# ---- DEL --------------------------------------------------------------------------------------


@pytest.fixture
def added(rig: Rig) -> tuple[NetworkConfigList, dict[str, Any]]:
    """A three-plugin network with one ADDed attachment (RT); the log is then cleared."""
    for name, ip in (("p1", "10.0.0.2/24"), ("p2", ""), ("p3", "")):
        rig.plugin(name, ip=ip)
    conf = network({"type": "p1"}, {"type": "p2"}, {"type": "p3"})
    result = rig.invoker().add(conf, RT).to_dict()
    rig.log.unlink()
    return conf, result


def test_del_runs_in_reverse_with_the_cached_result(
    rig: Rig, added: tuple[NetworkConfigList, dict[str, Any]]
) -> None:
    conf, result = added
    rig.invoker().delete(conf, RT)
    assert rig.trace() == [("DEL", "p3"), ("DEL", "p2"), ("DEL", "p1")]
    for call in rig.calls():
        assert call["stdin"]["prevResult"] == result
        assert cni_env(call)["CNI_NETNS"] == RT.netns
    assert rig.cache_files() == []


def test_del_converts_the_cached_result_to_the_list_version(rig: Rig) -> None:
    rig.plugin("p")
    conf = network({"type": "p"}, version="0.4.0")
    cached = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mtu": 9000}],
        "ips": [{"address": "fd00::2/64", "interface": 0}],
    }
    cache.write(
        str(rig.cache_dir),
        cache.CachedAttachment(
            network="testnet", container_id="ctr1", ifname="eth0", result=cached
        ),
    )
    rig.invoker().delete(conf, RT)
    assert rig.calls()[0]["stdin"]["prevResult"] == {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"version": "6", "interface": 0, "address": "fd00::2/64"}],
    }


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"kind": "cniCacheV1"}',
        b'{"kind":"cniCacheV1","containerId":"ctr1","ifName":"eth0",'
        b'"networkName":"testnet","result":{"cniVersion":"0.1.0"}}',
    ],
)
def test_del_with_a_corrupt_cache_entry_runs_without_prev_result(rig: Rig, content: bytes) -> None:
    rig.plugin("p1")
    rig.plugin("p2")
    path = rig.entry_path(RT)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    rig.invoker().delete(network({"type": "p1"}, {"type": "p2"}), RT)
    assert rig.trace() == [("DEL", "p2"), ("DEL", "p1")]
    assert all("prevResult" not in c["stdin"] for c in rig.calls())
    assert rig.cache_files() == []


def test_del_without_a_cache_entry(rig: Rig) -> None:
    rig.plugin("p")
    rig.invoker().delete(network({"type": "p"}), RT)
    assert "prevResult" not in rig.calls()[0]["stdin"]


def test_del_below_040_sends_no_prev_result(rig: Rig) -> None:
    rig.plugin("p")
    conf = network({"type": "p"}, version="0.3.1")
    rig.invoker().add(conf, RT)
    rig.invoker().delete(conf, RT)
    assert rig.trace() == [("ADD", "p"), ("DEL", "p")]
    assert "prevResult" not in rig.calls()[1]["stdin"]
    assert rig.cache_files() == []


def test_del_without_netns(rig: Rig) -> None:
    rig.plugin("p")
    rig.invoker().delete(network({"type": "p"}), RuntimeConf(container_id="ctr1"))
    assert cni_env(rig.calls()[0])["CNI_NETNS"] == ""


def test_failed_del_stops_and_keeps_the_cache(
    rig: Rig, added: tuple[NetworkConfigList, dict[str, Any]]
) -> None:
    conf, _ = added
    rig.plugin("p2", DEL=cni_error(11, "try later"))
    with pytest.raises(CNIError) as info:
        rig.invoker().delete(conf, RT)
    assert info.value.code == 11
    assert rig.trace() == [("DEL", "p3"), ("DEL", "p2")]
    assert rig.cache_files() == ["testnet-ctr1-eth0"]


# ---- CHECK ------------------------------------------------------------------------------------


def test_check_passes_the_cached_result_in_order(
    rig: Rig, added: tuple[NetworkConfigList, dict[str, Any]]
) -> None:
    conf, result = added
    rig.invoker().check(conf, RT)
    assert rig.trace() == [("CHECK", "p1"), ("CHECK", "p2"), ("CHECK", "p3")]
    for call in rig.calls():
        assert call["stdin"]["prevResult"] == result
        assert cni_env(call)["CNI_CONTAINERID"] == "ctr1"
    assert rig.cache_files() == ["testnet-ctr1-eth0"]


def test_check_failure_propagates(
    rig: Rig, added: tuple[NetworkConfigList, dict[str, Any]]
) -> None:
    conf, _ = added
    rig.plugin("p2", CHECK=cni_error(7, "address missing"))
    with pytest.raises(CNIError, match="address missing"):
        rig.invoker().check(conf, RT)
    assert rig.trace() == [("CHECK", "p1"), ("CHECK", "p2")]


@pytest.mark.parametrize("flag", [True, "true"])
def test_check_honours_disable_check(rig: Rig, flag: Any) -> None:
    rig.plugin("p")
    conf = network({"type": "p"}, disableCheck=flag)
    rig.invoker().add(conf, RT)
    rig.log.unlink()
    rig.invoker().check(conf, RT)
    assert rig.calls() == []


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
@pytest.mark.parametrize("disabled", [False, True])
def test_check_refuses_below_040(rig: Rig, version: str, disabled: bool) -> None:
    rig.plugin("p")
    conf = network({"type": "p"}, version=version, disableCheck=disabled)
    rig.invoker().add(conf, RT)
    rig.log.unlink()
    with pytest.raises(CNIError) as info:
        rig.invoker().check(conf, RT)
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert rig.calls() == []


def test_check_without_a_cached_result_is_code_3(rig: Rig) -> None:
    rig.plugin("p")
    with pytest.raises(CNIError) as info:
        rig.invoker().check(network({"type": "p"}), RT)
    assert info.value.code == ErrorCode.UNKNOWN_CONTAINER
    assert rig.calls() == []


# ---- STATUS -----------------------------------------------------------------------------------


def test_status_runs_in_order_with_no_attachment(rig: Rig) -> None:
    for name in ("p1", "p2", "p3"):
        rig.plugin(name)
    rig.invoker().status(
        network({"type": "p1", "capabilities": {"mac": True}}, {"type": "p2"}, {"type": "p3"})
    )
    assert rig.trace() == [("STATUS", "p1"), ("STATUS", "p2"), ("STATUS", "p3")]
    for call in rig.calls():
        assert cni_env(call) == {"CNI_COMMAND": "STATUS", "CNI_PATH": str(rig.bin_dir)}
        assert "prevResult" not in call["stdin"]
        assert "runtimeConfig" not in call["stdin"]


def test_status_stops_at_the_first_failure(rig: Rig) -> None:
    rig.plugin("p1")
    rig.plugin("p2", STATUS=cni_error(51, "limited connectivity"))
    rig.plugin("p3")
    with pytest.raises(CNIError) as info:
        rig.invoker().status(network({"type": "p1"}, {"type": "p2"}, {"type": "p3"}))
    assert info.value.code == 51
    assert rig.trace() == [("STATUS", "p1"), ("STATUS", "p2")]


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_status_needs_110(rig: Rig, version: str) -> None:
    rig.plugin("p")
    with pytest.raises(CNIError) as info:
        rig.invoker().status(network({"type": "p"}, version=version))
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert rig.calls() == []


# ---- GC ---------------------------------------------------------------------------------------


@pytest.fixture
def stale(rig: Rig) -> NetworkConfigList:
    """Network ``testnet`` (p1, p2) with cached attachments: ctr1/eth0 (to keep), ctr2/eth0
    (stale, with a result), ctr3/net1 (stale, an ADD that never finished), a corrupt entry,
    and an entry of another network that GC of testnet must not touch."""
    rig.plugin("p1", ip="10.0.0.2/24")
    rig.plugin("p2")
    conf = network({"type": "p1"}, {"type": "p2"})
    invoker = rig.invoker()
    invoker.add(conf, RT)
    invoker.add(
        conf,
        RuntimeConf(
            container_id="ctr2",
            netns="/run/netns/ctr2",
            cni_args=(("A", "2"),),
            capability_args={"mac": "x"},
        ),
    )
    cache.write(
        str(rig.cache_dir),
        cache.CachedAttachment(
            network="testnet", container_id="ctr3", ifname="net1", netns="/run/netns/ctr3"
        ),
    )
    (rig.cache_dir / "results" / "testnet-junk-eth0").write_bytes(b"{")
    cache.write(
        str(rig.cache_dir),
        cache.CachedAttachment(
            network="testnet-other",
            container_id="ctr9",
            ifname="eth0",
            result={"cniVersion": "1.1.0"},
        ),
    )
    rig.log.unlink()
    return conf


def test_gc_deletes_stale_attachments_then_gcs_every_plugin(
    rig: Rig, stale: NetworkConfigList
) -> None:
    stale_result = rig.cached(RuntimeConf(container_id="ctr2"))
    assert stale_result is not None
    rig.invoker().gc(stale, [("ctr1", "eth0")])

    assert rig.trace() == [
        ("DEL", "p2"),
        ("DEL", "p1"),  # ctr2/eth0
        ("DEL", "p2"),
        ("DEL", "p1"),  # ctr3/net1
        ("GC", "p1"),
        ("GC", "p2"),
    ]
    calls = rig.calls()
    ctr2 = cni_env(calls[0])
    assert (ctr2["CNI_CONTAINERID"], ctr2["CNI_IFNAME"], ctr2["CNI_NETNS"], ctr2["CNI_ARGS"]) == (
        "ctr2",
        "eth0",
        "/run/netns/ctr2",
        "A=2",
    )
    assert calls[0]["stdin"]["prevResult"] == stale_result.result
    ctr3 = cni_env(calls[2])
    assert (ctr3["CNI_CONTAINERID"], ctr3["CNI_IFNAME"], ctr3["CNI_NETNS"]) == (
        "ctr3",
        "net1",
        "/run/netns/ctr3",
    )
    assert "prevResult" not in calls[2]["stdin"]

    valid = [{"containerID": "ctr1", "ifname": "eth0"}]
    for call in calls[4:]:
        assert call["stdin"]["cni.dev/valid-attachments"] == valid
        assert call["stdin"]["cni.dev/attachments"] == valid
        assert cni_env(call) == {"CNI_COMMAND": "GC", "CNI_PATH": str(rig.bin_dir)}
        assert "prevResult" not in call["stdin"]

    assert rig.cache_files() == ["testnet-ctr1-eth0", "testnet-other-ctr9-eth0"]


def test_gc_with_nothing_valid_removes_everything(rig: Rig, stale: NetworkConfigList) -> None:
    rig.invoker().gc(stale, [])
    assert [c for c, _ in rig.trace()].count("DEL") == 6
    assert rig.calls()[-1]["stdin"]["cni.dev/valid-attachments"] == []
    assert rig.cache_files() == ["testnet-other-ctr9-eth0"]


def test_gc_below_110_only_deletes(rig: Rig) -> None:
    rig.plugin("p")
    conf = network({"type": "p"}, version="1.0.0")
    rig.invoker().add(conf, RT)
    rig.log.unlink()
    rig.invoker().gc(conf, [])
    assert rig.trace() == [("DEL", "p")]
    assert rig.cache_files() == []


@pytest.mark.parametrize("flag", [True, "true"])
def test_gc_honours_disable_gc(rig: Rig, flag: Any) -> None:
    rig.plugin("p")
    conf = network({"type": "p"}, disableGC=flag)
    rig.invoker().add(conf, RT)
    rig.log.unlink()
    rig.invoker().gc(conf, [])
    assert rig.calls() == []
    assert rig.cache_files() == ["testnet-ctr1-eth0"]


def test_gc_goes_on_after_errors_and_reports_them_all(rig: Rig, stale: NetworkConfigList) -> None:
    rig.plugin("p1", ip="10.0.0.2/24", GC=cni_error(7, "p1 gc broke"))
    rig.plugin("p2", DEL=cni_error(11, "p2 del broke"))
    with pytest.raises(CNIError) as info:
        rig.invoker().gc(stale, [("ctr1", "eth0")])
    assert rig.trace() == [("DEL", "p2"), ("DEL", "p2"), ("GC", "p1"), ("GC", "p2")]
    assert info.value.code == ErrorCode.INTERNAL
    for text in ("ctr2/eth0", "ctr3/net1", "p2 del broke", "p1 gc broke"):
        assert text in info.value.details
    # A failed DEL keeps its entry for the next GC.
    assert "testnet-ctr2-eth0" in rig.cache_files()


def test_gc_removes_temp_files_of_dead_writers_only(rig: Rig, stale: NetworkConfigList) -> None:
    results = rig.cache_dir / "results"
    dead, live = results / ".tmp-dead1234", results / ".tmp-live5678"
    dead.write_text("{")
    live.write_text("{")
    old = time.time() - 3600
    os.utime(dead, (old, old))
    rig.invoker().gc(stale, [("ctr1", "eth0")])
    assert not dead.exists()
    assert live.exists()  # a writer may be between its write and its rename right now
    assert any(".tmp-dead1234" in m for m in rig.messages)


def test_gc_sorts_valid_attachments(rig: Rig) -> None:
    rig.plugin("p")
    rig.invoker().gc(network({"type": "p"}), {("b", "eth0"), ("a", "eth1"), ("a", "eth0")})
    assert rig.calls()[0]["stdin"]["cni.dev/valid-attachments"] == [
        {"containerID": "a", "ifname": "eth0"},
        {"containerID": "a", "ifname": "eth1"},
        {"containerID": "b", "ifname": "eth0"},
    ]


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    yield
    # Every plugin process was reaped: nothing of ours is left as a zombie. (Other children
    # of this pytest process, like the session's fork server, may be alive: not zombies.)
    try:
        zombie, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return
    assert zombie == 0, f"plugin process {zombie} was left unreaped"
