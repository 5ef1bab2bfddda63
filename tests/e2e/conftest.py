"""Fixtures for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.runtime_support import RuntimeSandbox, open_sandbox, shared_image_store


@pytest.fixture
def box(
    tmp_path: Path, cni_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeSandbox]:
    """pycni-run in its own sandbox (mount, net and pid namespaces; tmpfs state dirs)."""
    with open_sandbox(tmp_path, cni_bin, shared_image_store(tmp_path_factory)) as sandbox:
        yield sandbox


@pytest.fixture
def nested_box(
    tmp_path: Path, cni_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeSandbox]:
    """pycni-run in a pid namespace inside the sandbox that keeps the sandbox's /proc: a pid
    turned into a /proc path lands on a process of the sandbox, never of the machine."""
    store = shared_image_store(tmp_path_factory)
    with open_sandbox(tmp_path, cni_bin, store, nested=True) as sandbox:
        # The premise: in there, a process's own pid is not what /proc/self names.
        own, via_proc = sandbox.sh("sh", "-c", 'echo "$$ $(readlink /proc/self)"').stdout.split()
        assert own != via_proc, "the nested sandbox's /proc is its own"
        yield sandbox
