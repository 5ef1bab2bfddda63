"""User namespaces (issue #20 item 2): `--userns=auto`, `--uidmap`/`--gidmap`, through the
runtime sandbox, with the subordinate ids of a test's own subuid/subgid files. Everything is
read back from the kernel: the init's credentials through a pidfd of it (the state's ProcRef,
never a pid path), file owners in the overlay's upper directory and on a volume, the netns's
owning user namespace, the device a capability cannot make."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.runtime_support import RuntimeSandbox

SUBIDS = "containers:100000:262144\n"  # four ranges of 65536
AUTO = 100000  # the first free range's start


@pytest.fixture
def ubox(box: RuntimeSandbox, tmp_path: Path) -> RuntimeSandbox:
    """The sandbox, its runtime given subordinate ids for `containers`."""
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text(SUBIDS)
    with box.config.open("a") as f:
        f.write(f"  subuid_file: {tmp_path / 'subuid'}\n  subgid_file: {tmp_path / 'subgid'}\n")
    return box


_CREDENTIALS = textwrap.dedent(
    """
    import sys
    from pycni_run import pidfds, state
    st = state.load("/run/pycni/containers", sys.argv[1])
    with st.pid.opened("the container") as pidfd:
        status = pidfds.read_proc(pidfd, "status")
    fields = dict(line.split(":", 1) for line in status.splitlines())
    print(fields["Uid"].split()[0], fields["Gid"].split()[0])
    """
)


def _host_ids_of_init(box: RuntimeSandbox, name: str) -> tuple[int, int]:
    """The init's uid and gid as the host sees them, through a pidfd of it."""
    out = box.sh(sys.executable, "-c", _CREDENTIALS, name)
    assert out.code == 0, out.stderr
    uid, gid = out.stdout.split()
    return int(uid), int(gid)


def _owner(box: RuntimeSandbox, path: str) -> tuple[int, int]:
    out = box.sh("stat", "-c", "%u %g", path)
    assert out.code == 0, out.stderr
    uid, gid = out.stdout.split()
    return int(uid), int(gid)


def test_root_inside_is_the_mapped_id_outside(ubox: RuntimeSandbox) -> None:
    ubox.ok("run", "-d", "--name", "u", "--userns=auto", "busybox", "sleep", "60")
    assert ubox.ok("exec", "u", "id", "-u") == "0\n"
    assert ubox.ok("exec", "u", "cat", "/proc/self/uid_map").split() == ["0", str(AUTO), "65536"]
    assert _host_ids_of_init(ubox, "u") == (AUTO, AUTO)
    doc = ubox.inspect("u")
    assert doc["HostConfig"]["UsernsMode"] == "auto"
    assert doc["HostConfig"]["IDMappings"] == {"UidMap": [f"0:{AUTO}:65536"],
                                               "GidMap": [f"0:{AUTO}:65536"]}
    assert doc["Namespaces"]["user"]["shared_with_host"] is False
    # The image's files are root's inside (its layers idmapped, not copied) ...
    assert ubox.ok("exec", "u", "stat", "-c", "%u %g", "/bin/busybox", "/") == "0 0\n0 0\n"
    # ... and what the container writes lands in its upper directory as the mapped ids.
    ubox.ok("exec", "u", "sh", "-c", "echo x > /by-root; touch /tmp/app; chown 1000:2000 /tmp/app")
    upper = ubox.state("u")["rootfs"]["upper"]
    assert _owner(ubox, f"{upper}/by-root") == (AUTO, AUTO)
    assert _owner(ubox, f"{upper}/tmp/app") == (AUTO + 1000, AUTO + 2000)
    assert _owner(ubox, upper) == (AUTO, AUTO)
    ubox.ok("rm", "-f", "u")
