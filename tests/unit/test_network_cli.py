"""`pycni network` and `pycni-run network`: one implementation behind both entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycni_run import cli as run_cli

from pycni import cli
from pycni.network import store
from pycni.network.render import render_conflist
from pycni.network.spec import NetworkSpec, SubnetSpec
from pycni.network.subnets import parse_subnet


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    for i, name in enumerate(("web", "db")):
        subnet = parse_subnet(f"10.100.{i}.0/24")
        store.write_new(str(conf), name, render_conflist(NetworkSpec(
            name=name, bridge=f"br-{name}",
            subnets=(SubnetSpec(subnet=subnet, gateway=subnet.network_address + 1),))))
    (tmp_path / "pycni.yaml").write_text(f"runtime:\n  cni_cache_dir: {tmp_path / 'cache'}\n")
    return conf


def test_pycni_network_ls(conf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(conf_dir.parent / "pycni.yaml")
    assert cli.main(["network", "ls", "-q", "--conf-dir", str(conf_dir), "--config", config]) == 0
    assert capsys.readouterr().out.split() == ["db", "web"]


def test_pycni_run_network_is_the_same_command(
        conf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(conf_dir.parent / "pycni.yaml")
    assert run_cli.main(["--config", config, "--conf-dir", str(conf_dir),
                         "network", "ls", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["Name"], r["Subnets"], r["Bridge"]) for r in rows] == [
        ("db", ["10.100.1.0/24"], "br-db"), ("web", ["10.100.0.0/24"], "br-web")]


def test_errors_go_to_stderr_with_status_1_and_usage_errors_2_or_125(
        conf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--conf-dir", str(conf_dir), "--config", str(conf_dir.parent / "pycni.yaml")]
    assert cli.main(["network", "inspect", "nosuch", *flags]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "pycni network: no such network: nosuch" in err
    assert cli.main(["network", "create"]) == 2
    assert "the following arguments are required: name" in capsys.readouterr().err
    assert run_cli.main(["network", "bogus"]) == 125
    assert cli.main(["network", "rm", "pycni", *flags]) == 1  # not in this conf dir
    assert "no such network: pycni" in capsys.readouterr().err
