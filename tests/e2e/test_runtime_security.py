"""A container is a boundary by default (issue #17): Docker's capabilities, seccomp profile,
masked and read-only /proc and /sys paths and device allowlist, read back from the kernel
inside the container; and what ``--privileged``, ``--cap-add`` and ``--security-opt`` give back.

Nothing here changes the machine: the clock is only ever probed with values the kernel refuses
after the permission checks (an invalid ``settimeofday``, ``adjtimex`` with a zero tick), and
``/proc/sysrq-trigger`` is only written where it must fail (read-only), with ``h`` (help).
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.e2e.runtime_support import RuntimeSandbox

pytestmark = [pytest.mark.root, pytest.mark.runtime_sandbox]

DOCKER_CAPS = "00000000a80425fb"
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")

# One static probe: each argument names a call, each line says how it ended (errno's name).
_PROBE_C = textwrap.dedent(
    r"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/syscall.h>
    #include <sys/time.h>
    #include <sys/timex.h>
    #include <unistd.h>

    static long call(const char *name) {
        if (!strcmp(name, "add_key"))  /* into this process's own keyring: gone at exit */
            return syscall(SYS_add_key, "user", "pycni-probe", "x", 1, -2);
        if (!strcmp(name, "keyctl"))  /* KEYCTL_GET_KEYRING_ID of the process keyring */
            return syscall(SYS_keyctl, 0, -2, 0);
        if (!strcmp(name, "settimeofday")) {  /* an invalid time: never sets the clock */
            struct timeval tv = {0, 2000000};  /* the raw call: glibc would refuse it itself */
            return syscall(SYS_settimeofday, &tv, NULL);
        }
        if (!strcmp(name, "adjtimex")) {  /* a zero tick: refused after the CAP_SYS_TIME check */
            struct timex tx = {.modes = ADJ_TICK, .tick = 0};
            return adjtimex(&tx);
        }
        errno = ENOSYS;
        return -1;
    }

    int main(int argc, char **argv) {
        for (int i = 1; i < argc; i++) {
            long ret = call(argv[i]);
            printf("%s %s\n", argv[i], ret < 0 ? strerrorname_np(errno) : "ok");
        }
        return 0;
    }
    """
)


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("probe")
    (workdir / "probe.c").write_text(_PROBE_C)
    subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(workdir / "probe"), str(workdir / "probe.c")],
        check=True,
    )
    return workdir / "probe"


@pytest.fixture
def rootfs(box: RuntimeSandbox, probe_binary: Path, tmp_path: Path) -> str:
    """The busybox image with the probe at /probe (for ``--rootfs``)."""
    box.ok("run", "--rm", "--net=none", "busybox", "true")  # the image exists from here on
    root = tmp_path / "rootfs"
    shutil.copytree(box.image_store / "busybox" / "rootfs", root, symlinks=True)
    shutil.copy2(probe_binary, root / "probe")
    return str(root)


def _status(box: RuntimeSandbox, *args: str) -> dict[str, str]:
    out = box.ok(*args, "cat", "/proc/self/status")
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def _caps(status: dict[str, str]) -> dict[str, str]:
    return {name: status[name].strip() for name in CAP_SETS}


def _probe(box: RuntimeSandbox, rootfs: str, *args: str) -> dict[str, str]:
    """Run the probe in a container (``args``: run options); its calls' outcomes."""
    calls = ("add_key", "keyctl", "settimeofday", "adjtimex")
    out = box.ok("run", "--rm", "--net=none", *args, "--rootfs", rootfs, "/probe", *calls)
    return dict(line.split() for line in out.splitlines())


def test_a_default_container_has_dockers_capabilities_in_all_five_sets(
    box: RuntimeSandbox,
) -> None:
    status = _status(box, "run", "--rm", "--net=none", "busybox")
    assert _caps(status) == dict.fromkeys(CAP_SETS, DOCKER_CAPS)
    assert status["Seccomp"].strip() == "2"
    assert status["NoNewPrivs"].strip() == "0"  # Docker's default: off


def test_cap_add_and_cap_drop_change_the_sets(box: RuntimeSandbox) -> None:
    status = _status(
        box, "run", "--rm", "--net=none", "--cap-add", "net_admin", "--cap-drop", "CAP_MKNOD",
        "busybox",
    )
    expected = f"{(0xA80425FB | 1 << 12) & ~(1 << 27):016x}"  # + NET_ADMIN, - MKNOD
    assert _caps(status) == dict.fromkeys(CAP_SETS, expected)
    none = _status(box, "run", "--rm", "--net=none", "--cap-drop", "ALL", "busybox")
    assert _caps(none) == dict.fromkeys(CAP_SETS, "0000000000000000")


def test_privileged_gets_every_capability_the_runtime_has_and_no_filter(
    box: RuntimeSandbox,
) -> None:
    own = dict(  # a process of the sandbox: what the runtime holds
        line.split(":\t", 1) for line in box.sh("cat", "/proc/self/status").stdout.splitlines()
    )
    status = _status(box, "run", "--rm", "--net=none", "--privileged", "busybox")
    assert _caps(status)["CapEff"] == own["CapEff"].strip()
    assert _caps(status)["CapBnd"] == own["CapBnd"].strip()
    assert status["Seccomp"].strip() == "0"


def test_no_new_privileges_is_set_on_request(box: RuntimeSandbox) -> None:
    status = _status(
        box, "run", "--rm", "--net=none", "--security-opt", "no-new-privileges", "busybox"
    )
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert _caps(status)["CapEff"] == DOCKER_CAPS


def test_exec_gets_the_containers_sets_and_filter(box: RuntimeSandbox) -> None:
    box.ok(
        "run", "-d", "--name", "svc", "--net=none", "--security-opt", "no-new-privileges",
        "busybox", "sleep", "600",
    )
    status = _status(box, "exec", "svc")
    assert _caps(status) == dict.fromkeys(CAP_SETS, DOCKER_CAPS)
    assert status["Seccomp"].strip() == "2"
    assert status["NoNewPrivs"].strip() == "1"
    assert box.run("exec", "svc", "unshare", "-U", "true").code != 0
    box.ok("run", "-d", "--name", "root", "--net=none", "--privileged", "busybox", "sleep", "600")
    assert _status(box, "exec", "root")["Seccomp"].strip() == "0"


def test_seccomp_refuses_what_dockers_profile_refuses(box: RuntimeSandbox, rootfs: str) -> None:
    assert _probe(box, rootfs) == {
        "add_key": "EPERM",
        "keyctl": "EPERM",
        "settimeofday": "EPERM",
        "adjtimex": "EPERM",
    }
    ran = box.run("run", "--rm", "--net=none", "busybox", "unshare", "-U", "true")
    assert ran.code != 0
    assert "Operation not permitted" in ran.stderr


def test_seccomp_unconfined_lifts_the_filter(box: RuntimeSandbox, rootfs: str) -> None:
    found = _probe(box, rootfs, "--security-opt", "seccomp=unconfined")
    assert found["add_key"] == "ok"
    assert found["keyctl"] != "EPERM"
    assert found["settimeofday"] == "EINVAL"  # it reaches the kernel, which checks the time first
    assert found["adjtimex"] == "EPERM"  # the capability check remains
    status = _status(
        box, "run", "--rm", "--net=none", "--security-opt", "seccomp=unconfined", "busybox"
    )
    assert status["Seccomp"].strip() == "0"
    box.ok("run", "--rm", "--net=none", "--security-opt", "seccomp=unconfined", "busybox",
           "unshare", "-U", "true")


def test_cap_add_sys_time_reaches_the_clock_checks(box: RuntimeSandbox, rootfs: str) -> None:
    """Both sides: the probe's invalid values are refused with EINVAL once the filter and the
    capability let the calls through (never a real clock change)."""
    found = _probe(box, rootfs, "--cap-add", "SYS_TIME")
    assert found["settimeofday"] == "EINVAL"  # past seccomp's CAP_SYS_TIME rule
    assert found["adjtimex"] == "EINVAL"  # past the kernel's CAP_SYS_TIME check
    ran = box.run("run", "--rm", "--net=none", "busybox", "date", "-s", "2001-01-01 00:00")
    assert "can't set date: Operation not permitted" in ran.stderr  # busybox still exits 0


def test_mount_needs_cap_sys_admin(box: RuntimeSandbox) -> None:
    mount = ("busybox", "mount", "-t", "tmpfs", "none", "/tmp")
    ran = box.run("run", "--rm", "--net=none", *mount)
    assert ran.code != 0
    assert "permission denied" in ran.stderr  # busybox's words for EPERM
    box.ok("run", "--rm", "--net=none", "--cap-add", "SYS_ADMIN", *mount)
    box.ok("run", "--rm", "--net=none", "--privileged", *mount)


def test_a_block_device_can_be_made_but_not_opened(box: RuntimeSandbox) -> None:
    """Docker's device allowlist (devices cgroup): mknod of any node, no open of a block
    device; --privileged allows every device. 7:0 is /dev/loop0 (read, nothing bound: empty)."""
    script = "mknod /tmp/blk b 7 0 && cat /tmp/blk"
    ran = box.run("run", "--rm", "--net=none", "busybox", "sh", "-c", script)
    assert ran.code != 0
    assert "Operation not permitted" in ran.stderr
    box.ok("run", "--rm", "--net=none", "--privileged", "busybox", "sh", "-c", script)


def test_masked_and_read_only_paths(box: RuntimeSandbox) -> None:
    """Masked files read empty, masked directories list nothing, read-only paths refuse writes
    (``/proc/sys/kernel/domainname`` is the container's own UTS namespace's: writing it with
    --privileged changes nothing outside). This kernel has no /proc/sysrq-trigger (no
    CONFIG_MAGIC_SYSRQ), /proc/kcore or /proc/sched_debug: only their absence is checked."""
    script = (
        "for f in interrupts keys timer_list; do wc -c < /proc/$f; done; "
        "ls /sys/firmware | wc -l; ls /proc/acpi | wc -l; "
        "echo pycni > /proc/sys/kernel/domainname && echo WROTE; "
        "echo h > /proc/sysrq-trigger && echo SYSRQ; :"
    )
    ran = box.run("run", "--rm", "--net=none", "busybox", "sh", "-c", script)
    assert ran.stdout.split() == ["0", "0", "0", "0", "0"]
    assert "domainname: Read-only file system" in ran.stderr
    privileged = box.ok("run", "--rm", "--net=none", "--privileged", "busybox", "sh", "-c", script)
    sizes = privileged.split()
    assert int(sizes[0]) > 0  # /proc/interrupts
    assert int(sizes[3]) > 0  # /sys/firmware
    assert "WROTE" in sizes
    assert "SYSRQ" not in sizes
    default = box.ok("run", "--rm", "--net=none", "busybox", "cat", "/proc/self/mountinfo")
    options = {line.split()[4]: line.split()[5] for line in default.splitlines()}
    for path in ("/proc/sys", "/proc/bus", "/proc/irq", "/sys", "/sys/firmware", "/proc/acpi"):
        assert options[path].startswith("ro"), path
    mine = box.ok("run", "--rm", "--net=none", "--privileged", "busybox", "cat",
                  "/proc/self/mountinfo")
    options = {line.split()[4]: line.split()[5] for line in mine.splitlines()}
    assert options["/sys"].startswith("rw")
    assert "/proc/sys" not in options
    assert "/proc/keys" not in options


def test_inspect_shows_what_the_container_got(box: RuntimeSandbox) -> None:
    box.ok(
        "run", "-d", "--name", "seen", "--net=none", "--cap-add", "net_admin",
        "--security-opt", "no-new-privileges", "busybox", "sleep", "600",
    )
    host = box.inspect("seen")["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapAdd"] == ["CAP_NET_ADMIN"]
    assert "CAP_NET_ADMIN" in host["Capabilities"]
    assert "CAP_SYS_ADMIN" not in host["Capabilities"]
    assert host["NoNewPrivileges"] is True
    assert host["Seccomp"] == "default"
    assert "/proc/kcore" in host["MaskedPaths"]
    assert "/proc/sysrq-trigger" in host["ReadonlyPaths"]
    assert host["DeviceCgroupRules"][:2] == ["deny a *:* rwm", "allow c *:* m"]
    devices = box.inspect("seen")["Cgroup"]["Files"]["devices"].splitlines()
    assert "b *:* m" in devices
    assert "c 1:3 rwm" in devices
    assert "a *:* rwm" not in devices


def test_bad_security_options_are_refused_before_anything_is_made(
    box: RuntimeSandbox, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}')
    for options, message in (
        (("--cap-add", "CAP_NOPE"), "unknown capability"),
        (("--cap-drop", "bogus"), "unknown capability"),
        (("--security-opt", f"seccomp={bad}"), "syscalls[0].action"),
        (("--security-opt", f"seccomp={tmp_path}/missing.json"), "No such file"),
        (("--security-opt", "apparmor=x"), "invalid --security-opt"),
    ):
        ran = box.run("run", "--name", "never", "--net=none", *options, "busybox", "true")
        assert ran.code == 125, ran.stderr
        assert message in ran.stderr
        assert box.run("inspect", "never").code != 0
    assert box.cgroup_dirs() == []


def test_a_docker_format_profile_file_is_applied(box: RuntimeSandbox, tmp_path: Path) -> None:
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(
        '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ['
        '{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}'
    )
    opt = ("--security-opt", f"seccomp={profile}")
    ran = box.run("run", "--rm", "--net=none", *opt, "busybox", "mkdir", "/tmp/x")
    assert ran.code != 0
    assert "Permission denied" in ran.stderr  # errnoRet 13: EACCES
    # Not Docker's default profile: what only that refuses is allowed here.
    box.ok("run", "--rm", "--net=none", *opt, "busybox", "unshare", "-U", "true")
    box.ok("run", "-d", "--name", "filed", "--net=none", *opt, "busybox", "sleep", "600")
    assert box.inspect("filed")["HostConfig"]["Seccomp"] == str(profile)
    assert "Permission denied" in box.run("exec", "filed", "mkdir", "/tmp/y").stderr
