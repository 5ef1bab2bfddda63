"""`firewall` plugin: configuration parsing and the verbs' control flow (no kernel)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest
from pycni.firewall.model import AttachmentKey, Forward
from pycni.plugins import firewall
from pycni.plugins.firewall_conf import FirewallConfig, parse_firewall_config

PREV = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "br0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/n"}],
    "ips": [
        {"address": "10.99.0.5/24", "gateway": "10.99.0.1", "interface": 2},
        {"address": "fd00:99::5/64", "interface": 2},
    ],
}


def args_for(config: dict[str, Any], *, command: str = "ADD", prev: bool = True) -> CmdArgs:
    doc = {"cniVersion": "1.1.0", "name": "net", "type": "firewall", **config}
    if prev:
        doc["prevResult"] = PREV
    return CmdArgs(
        command=command, container_id="c1", netns="/var/run/netns/c1", ifname="eth0",
        config=PluginRequest.from_dict(doc),
    )


def refused(config: dict[str, Any]) -> CNIError:
    with pytest.raises(CNIError) as err:
        parse_firewall_config(args_for(config))
    return err.value


def test_defaults_isolate_and_detect_the_backend() -> None:
    assert parse_firewall_config(args_for({})) == FirewallConfig(
        backend=None, ingress_policy="same-bridge"
    )


@pytest.mark.parametrize("backend", ["nftables", "iptables", "none"])
def test_backends(backend: str) -> None:
    conf = parse_firewall_config(args_for({"backend": backend, "ingressPolicy": "open"}))
    assert (conf.backend, conf.ingress_policy) == (backend, "open")


@pytest.mark.parametrize(
    ("config", "code", "field"),
    [
        ({"ingressPolicy": "isolated"}, ErrorCode.UNSUPPORTED_FIELD, "ingressPolicy"),
        ({"backend": "firewalld"}, ErrorCode.UNSUPPORTED_FIELD, "backend"),
        ({"firewalldZone": "trusted"}, ErrorCode.UNSUPPORTED_FIELD, "firewalldZone"),
        ({"iptablesAdminChainName": "X"}, ErrorCode.UNSUPPORTED_FIELD, "iptablesAdminChainName"),
        ({"ingresPolicy": "open"}, ErrorCode.UNSUPPORTED_FIELD, "ingresPolicy"),
        ({"ingressPolicy": "closed"}, ErrorCode.INVALID_NETWORK_CONFIG, "ingressPolicy"),
        ({"ingressPolicy": 1}, ErrorCode.INVALID_NETWORK_CONFIG, "ingressPolicy"),
        ({"backend": "pf"}, ErrorCode.INVALID_NETWORK_CONFIG, "backend"),
        ({"internal": "yes"}, ErrorCode.INVALID_NETWORK_CONFIG, "internal"),
    ],
)
def test_refused_naming_the_field(config: dict[str, Any], code: int, field: str) -> None:
    err = refused(config)
    assert err.code == code
    assert field in err.msg + err.details


def test_protocol_and_runtime_keys_are_accepted() -> None:
    parse_firewall_config(args_for({"runtimeConfig": {}, "cni.dev/valid-attachments": []}))


# ------------------------------------------------------------------------------ the verbs


class Recorder:
    name = "fake"

    def __init__(self, *, problems: list[str] | None = None, status: str | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self._problems = problems or []
        self._status = status

    def setup(self, f: Forward) -> None:
        self.calls.append(("setup", f))

    def teardown(self, key: AttachmentKey) -> None:
        self.calls.append(("teardown", key))

    def check(self, f: Forward) -> list[str]:
        self.calls.append(("check", f))
        return self._problems

    def gc(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        self.calls.append(("gc", (network, sorted(valid))))
        return []

    def status(self) -> str | None:
        return self._status


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(firewall, "select", lambda name: _Usable(None, rec))
    return rec


def test_add_hands_addresses_and_subnets_and_passes_the_result_on(recorder: Recorder) -> None:
    args = args_for({"ingressPolicy": "open"})
    result = firewall.cmd_add(args)
    assert result == args.config.prev_result
    (verb, f), = recorder.calls
    assert verb == "setup"
    assert isinstance(f, Forward)
    assert f.key == AttachmentKey("net", "c1", "eth0")
    assert f.sources == ("10.99.0.5", "fd00:99::5")
    assert f.network_subnets == ("10.99.0.0/24", "fd00:99::/64")
    assert f.ingress_policy == "open"


def test_internal_reaches_the_backend(recorder: Recorder) -> None:
    assert parse_firewall_config(args_for({})).internal is False
    firewall.cmd_add(args_for({"internal": True}))
    (_, f), = recorder.calls
    assert isinstance(f, Forward)
    assert f.internal


def test_add_without_prev_result_is_code_7(recorder: Recorder) -> None:
    with pytest.raises(CNIError) as err:
        firewall.cmd_add(args_for({}, prev=False))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert recorder.calls == []


def test_del_needs_no_prev_result_and_survives_a_refused_config(recorder: Recorder) -> None:
    firewall.cmd_del(args_for({"ingressPolicy": "isolated"}, command="DEL", prev=False))
    assert recorder.calls == [("teardown", AttachmentKey("net", "c1", "eth0"))]


def test_check_reports_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(problems=["element missing"])
    monkeypatch.setattr(firewall, "select", lambda name: _Usable(None, rec))
    with pytest.raises(CNIError, match="element missing"):
        firewall.cmd_check(args_for({}, command="CHECK"))


def test_gc_passes_the_valid_attachments(recorder: Recorder) -> None:
    valid = [{"containerID": "c2", "ifname": "eth0"}]
    firewall.cmd_gc(args_for({"cni.dev/valid-attachments": valid}, command="GC", prev=False))
    assert recorder.calls == [("gc", ("net", [("c2", "eth0")]))]


class _Usable:
    name = "fake"

    def __init__(self, reason: str | None, forward: Recorder | None = None) -> None:
        self.reason = reason
        self.forward = forward or Recorder()

    def status(self) -> str | None:
        return self.reason


def test_status_51_when_our_accepts_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall, "select", lambda name: _Usable(None, Recorder(status="no hole")))
    with pytest.raises(CNIError) as err:
        firewall.cmd_status(args_for({}, command="STATUS", prev=False))
    assert err.value.code == ErrorCode.LIMITED_CONNECTIVITY


def test_status_50_when_the_backend_is_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall, "select", lambda name: _Usable("no nft"))
    with pytest.raises(CNIError) as err:
        firewall.cmd_status(args_for({}, command="STATUS", prev=False))
    assert err.value.code == ErrorCode.PLUGIN_NOT_AVAILABLE


def test_status_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall, "select", lambda name: _Usable(None, Recorder()))
    firewall.cmd_status(args_for({}, command="STATUS", prev=False))
