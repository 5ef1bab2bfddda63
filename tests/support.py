"""Helpers for tests that exec plugin executables or the `pycni` CLI inside a sandbox netns."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycni.net import netns

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"


@dataclass(frozen=True)
class PluginRun:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def documents(self) -> list[Any]:
        """Every JSON document on stdout (the protocol allows exactly one)."""
        decoder = json.JSONDecoder()
        text, pos, docs = self.stdout.strip(), 0, []
        while pos < len(text):
            doc, end = decoder.raw_decode(text, pos)
            docs.append(doc)
            pos = end
            while pos < len(text) and text[pos].isspace():
                pos += 1
        return docs


def _run(
    argv: list[str],
    *,
    stdin: bytes | None,
    env: Mapping[str, str],
    run_in: str | None,
    timeout: float,
) -> PluginRun:
    """Run ``argv`` from inside netns ``run_in`` (the child inherits the thread's netns)."""
    with netns.enter(run_in) if run_in else contextlib.nullcontext():
        proc = subprocess.run(
            argv, input=stdin, env=env, capture_output=True, timeout=timeout, check=False
        )
    return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


# How the executables reach the plugin code (tests/conftest.py's `plugin_mode` sets these):
# forwarded into the otherwise minimal environment exec_plugin builds.
PLUGIN_MODE_ENV = ("PYCNI_SOCKET", "PYCNI_NO_SERVER")


def _plugin_mode_env() -> dict[str, str]:
    return {k: os.environ[k] for k in PLUGIN_MODE_ENV if k in os.environ}


def exec_plugin(
    binary: str | Path,
    *,
    command: str,
    config: Mapping[str, Any] | bytes | None,
    env: Mapping[str, str] | None = None,
    run_in: str | None = None,
    timeout: float = 30.0,
) -> PluginRun:
    """Exec a plugin as a runtime would, from inside ``run_in`` (the sandbox host netns)."""
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
                **_plugin_mode_env(), **(env or {})}
    stdin = config if isinstance(config, bytes) else json.dumps(config or {}).encode()
    return _run([str(binary)], stdin=stdin, env=full_env, run_in=run_in, timeout=timeout)


def run_cli(
    args: Sequence[str],
    *,
    run_in: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> PluginRun:
    """Run ``pycni ARGS`` (the console script's module) from inside ``run_in``."""
    argv = [sys.executable, "-m", "pycni.cli", *args]
    return _run(argv, stdin=None, env={**os.environ, **(env or {})}, run_in=run_in, timeout=timeout)


def run_cli_in_process(
    args: Sequence[str], *, run_in: str, capsys: Any
) -> PluginRun:
    """``pycni ARGS`` through ``pycni.cli.main`` in this process, from inside ``run_in`` (what
    ``run_cli`` runs, without an interpreter's start-up); ``capsys`` is pytest's fixture."""
    from pycni import cli

    capsys.readouterr()
    with netns.enter(run_in):
        code = cli.main(list(args))
    out, err = capsys.readouterr()
    return PluginRun(code, out, err)
