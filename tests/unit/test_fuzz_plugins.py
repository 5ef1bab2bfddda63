"""Fuzzing every plugin through ``skel.run`` with inputs that must be refused.

For each plugin in ``PLUGINS`` and each input family of ``fuzz_support``: exit status 1,
exactly one error JSON with a spec code (never 999, which means an unexpected exception),
no traceback, the plugins' data dirs (pointed at a temporary directory) still empty, and
nothing touched: an audit hook records every write-mode open, file-system mutation,
netlink/raw socket, subprocess and ctypes library load made while the plugin runs, and there
must be none. (The kernel-state comparison in a throwaway netns is tests/netns/test_fuzz_netns.py.)
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni.plugins import PLUGINS
from tests.unit.fuzz_support import (
    Case,
    Recorder,
    assert_one_spec_error,
    bad_env,
    bad_stdin,
    refused_config,
    run_case,
    tree,
)

# Named at import (the strategies below take it), made only when this module's tests run: a
# run that merely collects this module (``-k other``) must not leave a directory behind.
_DATA_DIR = os.path.join(tempfile.gettempdir(), f"pycni-fuzz-{os.getpid()}")


@pytest.fixture(scope="module", autouse=True)
def _preloaded() -> Iterator[None]:
    """Plugin modules imported before the hook is armed (imports may write bytecode)."""
    for info in PLUGINS.values():
        importlib.import_module(info.module)
    os.makedirs(_DATA_DIR, mode=0o700, exist_ok=True)
    yield
    leftover = tree(_DATA_DIR)
    shutil.rmtree(_DATA_DIR, ignore_errors=True)
    assert leftover == []


def _refused_untouched(case: Case) -> None:
    recorder = Recorder.get()
    recorder.events.clear()
    recorder.armed = True
    try:
        outcome = run_case(case)
    finally:
        recorder.armed = False
    assert_one_spec_error(case, outcome)
    assert recorder.events == [], (case, outcome, recorder.events)
    assert tree(_DATA_DIR) == [], case


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(bad_env(_DATA_DIR))
def test_broken_env_is_refused(case: Case) -> None:
    _refused_untouched(case)


@_SETTINGS
@given(bad_stdin(_DATA_DIR))
def test_broken_stdin_is_refused(case: Case) -> None:
    _refused_untouched(case)


@_SETTINGS
@given(refused_config(_DATA_DIR))
def test_refused_config_is_refused(case: Case) -> None:
    _refused_untouched(case)


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_every_plugin_refuses_every_family(plugin: str, data: st.DataObject) -> None:
    """Each plugin by name, so none is starved by the sampling of the tests above."""
    family = data.draw(st.sampled_from((bad_env, bad_stdin, refused_config)))
    case = data.draw(family(_DATA_DIR, (plugin,)))
    _refused_untouched(case)


def test_the_oracle_sees_a_write(tmp_path: Any) -> None:
    """Control: an ADD that succeeds does write, and the recorder notices."""
    import json

    from tests.unit.fuzz_support import base_config, base_env

    doc = base_config("host-local", str(tmp_path))
    case = Case("host-local", base_env("ADD"), json.dumps(doc).encode())
    recorder = Recorder.get()
    recorder.events.clear()
    recorder.armed = True
    try:
        outcome = run_case(case)
    finally:
        recorder.armed = False
    assert outcome.status == 0, outcome
    assert any("open for writing" in e for e in recorder.events), recorder.events
