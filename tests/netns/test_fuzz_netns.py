"""The fuzz families of tests/unit/test_fuzz_plugins.py, run inside a throwaway netns whose
kernel state (links, addresses, routes, qdiscs, nft ruleset) is compared before and after
every example: a refused input changes nothing in the kernel. The netns is this thread's for
the duration (``netns.enter``), as the plugin's own netns would be."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni.net import netns
from tests.unit.fuzz_support import (
    Case,
    assert_one_spec_error,
    bad_env,
    bad_stdin,
    refused_config,
    run_case,
    tree,
)


def _snapshot(path: str) -> tuple[str, ...]:
    views = (["ip", "-d", "link"], ["ip", "addr"], ["ip", "route", "show", "table", "all"],
             ["tc", "qdisc"], ["nft", "list", "ruleset"])
    return tuple(
        subprocess.run(["nsenter", f"--net={path}", *argv], capture_output=True, text=True,
                       check=True, timeout=10).stdout
        for argv in views
    )


@pytest.fixture(scope="module")
def sandbox_ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("fuzz-ns")
    path = netns.create(str(directory / "host"))
    try:
        yield path
    finally:
        netns.remove(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz-data"))


_FAMILIES = st.sampled_from((bad_env, bad_stdin, refused_config))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_refused_inputs_leave_the_kernel_alone(
    sandbox_ns: str, data_dir: str, data: st.DataObject
) -> None:
    case: Case = data.draw(data.draw(_FAMILIES)(data_dir))
    before = _snapshot(sandbox_ns)
    with netns.enter(sandbox_ns):
        outcome = run_case(case)
    assert_one_spec_error(case, outcome)
    assert _snapshot(sandbox_ns) == before, case
    assert tree(data_dir) == [], case
