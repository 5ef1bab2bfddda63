"""Choosing a backend, the none backend, and the nft runners' plumbing (no kernel access).

Nothing here may run nft or iptables for real: auto-detection would probe the root namespace,
so it is exercised through fakes only.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall import driver, select, validate_backend_name
from pycni.firewall.iptables import IptablesDriver
from pycni.firewall.model import AttachmentKey, Masquerade
from pycni.firewall.nftables import NftablesDriver
from pycni.firewall.nftables.engine import ExecRunner, NftError
from pycni.firewall.none import NoneDriver
from tests.support import modules_loaded_by

M = Masquerade(key=AttachmentKey("n", "c", "eth0"), network_subnets=("10.0.0.0/8",),
               sources=("10.0.0.2",))


@pytest.mark.parametrize("name", [None, "nftables", "iptables", "none"])
def test_valid_backend_names(name: str | None) -> None:
    assert validate_backend_name(name) == name


@pytest.mark.parametrize("name", ["nft", "IPTABLES", "", "firewalld"])
def test_unknown_backend_name_is_config_error_naming_the_field(name: str) -> None:
    with pytest.raises(CNIError) as info:
        validate_backend_name(name)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert info.value.code == 7
    assert "ipMasqBackend" in info.value.msg
    with pytest.raises(CNIError, match="backend"):
        validate_backend_name(name, field="backend")
    with pytest.raises(CNIError):
        select(name)


@pytest.mark.parametrize(("name", "cls"), [
    ("nftables", NftablesDriver), ("iptables", IptablesDriver), ("none", NoneDriver)])
def test_select_by_name_makes_that_backend_without_probing(name: str, cls: type) -> None:
    backend = select(name)
    assert isinstance(backend, cls)
    assert backend.name == name


class Fake(NoneDriver):
    def __init__(self, name: str, reason: str | None) -> None:
        self.name, self.reason, self.probed = name, reason, 0

    def status(self) -> str | None:
        self.probed += 1
        return self.reason


def test_first_usable_prefers_order_and_stops_early() -> None:
    nft, ipt = Fake("nftables", None), Fake("iptables", None)
    assert driver.first_usable([nft, ipt]) is nft
    assert ipt.probed == 0
    broken = Fake("nftables", "libnftables.so.1 missing")
    assert driver.first_usable([broken, ipt]) is ipt
    assert driver.first_usable([broken]) is None


def test_select_none_uses_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = Fake("iptables", None)
    monkeypatch.setattr(driver, "detect", lambda: chosen)
    assert select(None) is chosen
    assert select() is chosen


def test_none_backend_does_nothing_and_is_always_fine() -> None:
    none = NoneDriver().masquerade
    none.setup(M)
    none.teardown(M.key)
    assert none.check(M) == []
    assert none.gc("n", []) == []
    assert none.status() is None


def _fake_nft(tmp_path: Path, script: str) -> str:
    path = tmp_path / "nft"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_exec_runner_sends_one_json_document_on_stdin(tmp_path: Path) -> None:
    seen = tmp_path / "stdin.json"
    answer = json.dumps({"nftables": [{"table": {}}]})
    nft = _fake_nft(tmp_path, f'[ "$*" = "-j -f -" ] || exit 9\ncat > {seen}\necho \'{answer}\'\n')
    out = ExecRunner(nft).run([{"list": {"tables": None}}])
    assert out == {"nftables": [{"table": {}}]}
    assert json.loads(seen.read_text()) == {"nftables": [{"list": {"tables": None}}]}


def test_exec_runner_failure_is_nft_error(tmp_path: Path) -> None:
    nft = _fake_nft(tmp_path, "echo 'Error: Could not process rule: File exists' >&2\nexit 1\n")
    with pytest.raises(NftError) as info:
        ExecRunner(nft).run([])
    assert info.value.details == "Error: Could not process rule: File exists"
    assert info.value.code == ErrorCode.INTERNAL


def test_exec_runner_without_nft() -> None:
    with pytest.raises(NftError, match="cannot run"):
        ExecRunner("/nonexistent/nft").run([])


def _firewall_modules(code: str) -> list[str]:
    return [m for m in modules_loaded_by(code) if m.startswith("pycni.firewall.")]


def test_plugins_import_no_engine_and_a_driver_only_the_layouts_it_acts_with() -> None:
    """A plugin's start-up loads the driver choice, models and host-port registry only (no
    engine, no layout); choosing a driver loads no layout; using a facet loads that facet's
    layout only. Nothing touches the kernel: no facet method is called."""
    plugins = _firewall_modules("import pycni.plugins.bridge, pycni.plugins.firewall, "
                                "pycni.plugins.portmap, pycni.reconcile")
    light = ("pycni.firewall.driver", "pycni.firewall.model", "pycni.firewall.hostports",
             "pycni.firewall.hostsockets")
    assert [m for m in plugins if not m.startswith(light)] == []
    chosen = _firewall_modules("from pycni.firewall import select\nfw = select('nftables')")
    assert [m for m in chosen if m.startswith("pycni.firewall.nftables.")] == []
    acting = _firewall_modules("from pycni.firewall import select\n"
                               "select('nftables').masquerade")
    layouts = {m for m in acting if m.startswith("pycni.firewall.nftables.")}
    assert "pycni.firewall.nftables.masquerade" in layouts
    assert not {"pycni.firewall.nftables.forward", "pycni.firewall.nftables.portmap",
                "pycni.firewall.nftables.macspoof"} & layouts
    assert [m for m in acting if m.startswith("pycni.firewall.iptables")] == []
