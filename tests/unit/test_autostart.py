"""pycni.autostart's switches: its own small reader of pycni.yaml's ``autostart`` section
agrees with the YAML loader wherever it answers, and declines (starts nothing) elsewhere."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pycni import autostart
from pycni.config_file import find_config_file

REPO_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "pycni.yaml"

DOCUMENTS = [
    "",
    "runtime:\n  state_dir: /run/pycni\n",
    "autostart:\n  plugins: false\n",
    "autostart:\n  plugins: no   # podman's nodes run the plugins in-process\n  runtime: On\n",
    "# autostart: false\nautostart:\n\n  # off for now\n  runtime: FALSE\nnetwork: {}\n",
    "runtime:\n  autostart: false\nautostart:\n  idle_timeout: 30\n",
    "autostart:\n  idle_timeout: 2.5\n  plugins: yes\nruntime:\n  conf_dir: /etc/cni/net.d\n",
    # Forms the reader declines: YAML reads them (or refuses them), this reader does not try.
    "autostart:\n\tplugins: false\n",
    "autostart: {plugins: false}\n",
    "autostart: false\n",
    '"autostart":\n  plugins: false\n',
    "autostart:\n  plugins: false\nautostart:\n  plugins: true\n",
    'autostart:\n  plugins: "false"\n',
    "autostart:\n  plugins: &off false\n  runtime: *off\n",
    "autostart:\n  plugins:\n    false\n",
]


def _meaning(doc: Any) -> dict[str, Any] | None:
    """What the YAML loader makes of ``autostart`` (None: not a plain mapping of ours)."""
    section = (doc or {}).get("autostart", {}) if isinstance(doc, dict) else {}
    return section if isinstance(section, dict) else None


@pytest.mark.parametrize("text", DOCUMENTS)
def test_the_reader_agrees_with_yaml_or_declines(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pycni.yaml"
    path.write_text(text)
    read = autostart.read_section(str(path).encode())
    try:
        meaning = _meaning(yaml.safe_load(text))
    except yaml.YAMLError:
        meaning = None
    if read is None:
        return  # declined: autostart stays off, whatever the file meant
    assert meaning is not None, text
    for key in ("plugins", "runtime"):
        switch = meaning.get(key, True)
        assert (read.get(key, "true") in autostart._ON) is (switch is True), (key, text)
    if "idle_timeout" in meaning:
        assert float(read["idle_timeout"]) == float(meaning["idle_timeout"])


@pytest.mark.parametrize("text", DOCUMENTS[DOCUMENTS.index("autostart:\n\tplugins: false\n"):])
def test_forms_it_cannot_read_turn_autostart_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    path = tmp_path / "pycni.yaml"
    path.write_text(text)
    monkeypatch.setenv("PYCNI_RUN_CONFIG", str(path))
    monkeypatch.delenv("PYCNI_AUTOSTART")
    assert autostart.read_section(str(path).encode()) is None
    assert not autostart.enabled(autostart.PLUGIN_SERVER)


def test_the_shipped_config_turns_both_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYCNI_AUTOSTART")
    monkeypatch.delenv("PYCNI_IDLE_TIMEOUT")
    monkeypatch.setenv("PYCNI_RUN_CONFIG", str(REPO_CONFIG))
    assert autostart.enabled(autostart.PLUGIN_SERVER)
    assert autostart.enabled(autostart.RUNTIME_DAEMON)
    assert autostart.idle_timeout() == yaml.safe_load(REPO_CONFIG.read_text())["autostart"][
        "idle_timeout"]


def test_the_same_file_as_the_runtime_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYCNI_RUN_CONFIG", raising=False)
    found = find_config_file()
    assert found is not None
    assert autostart._config_path() == str(found).encode()
    monkeypatch.setenv("PYCNI_RUN_CONFIG", str(tmp_path / "elsewhere.yaml"))
    assert autostart._config_path() == str(find_config_file()).encode()


@pytest.mark.parametrize(
    ("env", "config", "expected"),
    [
        ("1", "autostart:\n  plugins: false\n  runtime: false\n", (True, True)),
        ("0", "", (False, False)),
        ("", "autostart:\n  runtime: off\n", (True, False)),
        ("maybe", "", (False, False)),  # a value it does not know: off
    ],
)
def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, config: str,
    expected: tuple[bool, bool],
) -> None:
    path = tmp_path / "pycni.yaml"
    path.write_text(config)
    monkeypatch.setenv("PYCNI_RUN_CONFIG", str(path))
    monkeypatch.setenv("PYCNI_AUTOSTART", env)
    assert (autostart.enabled(autostart.PLUGIN_SERVER),
            autostart.enabled(autostart.RUNTIME_DAEMON)) == expected


@pytest.mark.parametrize(
    ("env", "config", "expected"),
    [
        ("7", "autostart:\n  idle_timeout: 30\n", 7.0),
        ("", "autostart:\n  idle_timeout: 30\n", 30.0),
        ("-1", "autostart:\n  idle_timeout: 0\n", autostart.DEFAULT_IDLE_TIMEOUT),
        ("soon", "", autostart.DEFAULT_IDLE_TIMEOUT),
    ],
)
def test_idle_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, config: str,
                      expected: float) -> None:
    path = tmp_path / "pycni.yaml"
    path.write_text(config)
    monkeypatch.setenv("PYCNI_RUN_CONFIG", str(path))
    monkeypatch.setenv("PYCNI_IDLE_TIMEOUT", env)
    assert autostart.idle_timeout() == expected


# A caller that forks a start off, then exits: its stdout must reach EOF at once, however long
# the start waits for a CPU (here: it sleeps before doing anything, then leaves a mark).
_DETACHING_CALLER = """
import os, sys, time
sys.path[:0] = [{repo!r}]
from pycni.autostart import fork_detached
if fork_detached():
    time.sleep(3)
    open(sys.argv[1], "w").close()
    os._exit(0)
print("called", flush=True)
"""


def test_a_start_holds_nothing_of_its_callers_stdout(tmp_path: Path) -> None:
    mark = tmp_path / "start-done"
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-IS", "-c", _DETACHING_CALLER.format(repo=repo),
                             str(mark)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()  # returns at EOF: once every holder of the pipe has let go
    proc.wait()
    assert out == b"called\n"
    assert not mark.exists()  # the start has not got that far: it never held our stdout
    until_marked = 0
    while not mark.exists() and until_marked < 600:
        time.sleep(0.05)
        until_marked += 1
    assert mark.exists()  # it did run, detached
