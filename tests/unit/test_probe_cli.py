"""`pycni probe` wiring: scapy stays out of `import pycni.cli`; user errors exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pycni import cli


def test_importing_the_cli_does_not_import_scapy() -> None:
    code = (
        "import sys, pycni.cli, pycni.probe, pycni.probe.run\n"
        "print(sorted(m for m in sys.modules if m == 'scapy' or m.startswith('scapy.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_probe_arguments_parse() -> None:
    ns = cli._parser().parse_args(
        ["probe", "web", "--to", "10.0.0.1:80", "--to", "10.0.0.2", "--json", "--timeout", "0.5"]
    )
    assert (ns.command, ns.target, ns.to, ns.json, ns.timeout) == (
        "probe", "web", ["10.0.0.1:80", "10.0.0.2"], True, 0.5
    )


def test_a_bad_destination_exits_2_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["probe", "web", "--to", "10.0.0.1:99999"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "port must be 1..65535" in captured.err


def test_an_unknown_target_exits_2(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "no-such-target-xyz", "--state-dir", str(tmp_path)]) == 2
    assert "no container or network namespace named" in capsys.readouterr().err
