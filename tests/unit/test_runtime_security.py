"""The container's confinement as data: capability names and sets, the seccomp profile model
(Docker's default, Docker's JSON format, the rules a container gets), the command line's
security options, the device rules written to cgroup v1, and libseccomp kept off the
start-up path. No kernel state is changed here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pycni_run import capabilities, cgroups, cli, devices, security
from pycni_run.cgroups import _V1, _V2, Cgroup
from pycni_run.errors import RunError
from pycni_run.seccomp_json import from_docker, load_file
from pycni_run.seccomp_profile import DOCKER_DEFAULT, Condition, Profile, Rule, Scope, applicable
from pycni_run.spec import ContainerSpec, Limits

HELD = frozenset(capabilities.NAMES) - {"CAP_SYS_RESOURCE"}  # this VM's bounding set


def _spec(*argv: str) -> ContainerSpec:
    return cli.build_spec(*cli.parse_run_args([*argv, "busybox", "true"]))


# ---------------------------------------------------------------------- capabilities


def test_dockers_default_set_is_its_mask() -> None:
    assert capabilities.mask_of(capabilities.DOCKER_DEFAULT) == 0xA80425FB
    assert set(capabilities.names_of(0xA80425FB)) == capabilities.DOCKER_DEFAULT
    assert capabilities.NAMES[40] == "CAP_CHECKPOINT_RESTORE"


@pytest.mark.parametrize("text", ["net_admin", "NET_ADMIN", "cap_net_admin", " CAP_NET_ADMIN "])
def test_capability_names_with_or_without_cap_and_in_any_case(text: str) -> None:
    assert capabilities.normalize(text) == "CAP_NET_ADMIN"
    assert capabilities.normalize("all") == capabilities.ALL


@pytest.mark.parametrize("text", ["", "CAP_", "NOPE", "net-admin", "CAP_ALL"])
def test_unknown_capabilities_are_refused(text: str) -> None:
    with pytest.raises(RunError, match="unknown capability"):
        capabilities.normalize(text, "--cap-drop")


def _resolve(add: tuple[str, ...] = (), drop: tuple[str, ...] = (), **kw: Any) -> set[str]:
    return set(
        capabilities.resolve(
            add=add, drop=drop, privileged=kw.get("privileged", False),
            runtime_holds=kw.get("holds", HELD),
        )
    )


def test_resolve_is_mobys_tweak_bounded_by_what_the_runtime_holds() -> None:
    default = set(capabilities.DOCKER_DEFAULT)
    assert _resolve() == default
    assert _resolve(("CAP_NET_ADMIN",), ("CAP_MKNOD",)) == default - {"CAP_MKNOD"} | {
        "CAP_NET_ADMIN"
    }
    assert _resolve(drop=("ALL",)) == set()
    assert _resolve(("CAP_KILL",), ("ALL",)) == {"CAP_KILL"}
    assert _resolve(("ALL",), ("CAP_SYS_ADMIN",)) == HELD - {"CAP_SYS_ADMIN"}
    assert _resolve(drop=("CAP_KILL",), privileged=True) == HELD  # drops do not apply
    assert _resolve(holds=frozenset({"CAP_KILL"})) == {"CAP_KILL"}


def test_cap_add_of_what_the_runtime_lacks_is_refused() -> None:
    with pytest.raises(RunError, match="CAP_SYS_RESOURCE: pycni-run itself does not hold"):
        _resolve(("CAP_SYS_RESOURCE",))


# ---------------------------------------------------------------------- the profile model


def _names(rules: tuple[Rule, ...]) -> set[str]:
    return {name for rule in rules for name in rule.names}


def _rules_for(name: str, rules: tuple[Rule, ...]) -> list[Rule]:
    return [rule for rule in rules if name in rule.names]


def test_dockers_default_without_sys_admin_refuses_namespaces_and_mounts() -> None:
    rules = applicable(DOCKER_DEFAULT, caps=capabilities.DOCKER_DEFAULT, arch="amd64",
                       kernel=(6, 18))
    names = _names(rules)
    assert {"read", "execve", "capset", "prctl", "arch_prctl", "modify_ldt", "chroot"} <= names
    refused = {"mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key",
               "settimeofday", "reboot", "init_module", "bpf", "cacheflush", "open_by_handle_at"}
    assert not refused & names
    (clone,) = _rules_for("clone", rules)
    assert clone.conditions == (Condition(0, "masked_eq", 0x7E020000, 0),)
    assert 0x10000000 & 0x7E020000  # CLONE_NEWUSER is among the refused flags
    (clone3,) = _rules_for("clone3", rules)
    assert (clone3.action, clone3.errno) == ("errno", 38)
    (socket,) = _rules_for("socket", rules)
    assert socket.conditions == (Condition(0, "ne", 40),)  # no AF_VSOCK


def test_dockers_default_gives_calls_back_with_their_capability() -> None:
    caps = capabilities.DOCKER_DEFAULT | {"CAP_SYS_ADMIN", "CAP_SYS_TIME"}
    rules = applicable(DOCKER_DEFAULT, caps=caps, arch="amd64", kernel=(6, 18))
    assert {"mount", "unshare", "setns", "settimeofday", "clock_settime", "clone"} <= _names(rules)
    assert all(not r.conditions for r in _rules_for("clone", rules))
    assert _rules_for("clone3", rules)[0].action == "allow"


def test_includes_and_excludes_by_arch_and_kernel() -> None:
    on_arm = _names(applicable(DOCKER_DEFAULT, caps=frozenset(), arch="arm64", kernel=(6, 1)))
    assert "cacheflush" in on_arm
    assert "arch_prctl" not in on_arm
    old = applicable(DOCKER_DEFAULT, caps=frozenset(), arch="amd64", kernel=(4, 4))
    assert "ptrace" not in _names(old)
    rule = Rule(names=("x",), excludes=Scope(min_kernel=(5, 0)))
    profile = Profile(name="p", rules=(rule,))
    assert applicable(profile, caps=frozenset(), arch="amd64", kernel=(4, 19)) == (rule,)
    assert applicable(profile, caps=frozenset(), arch="amd64", kernel=(5, 0)) == ()


# ---------------------------------------------------------------------- Docker's JSON format


def test_a_docker_profile_is_read_into_our_form() -> None:
    profile = from_docker(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                         "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"name": "personality", "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
                 "includes": {"caps": ["sys_admin"], "minKernel": "4.8"},
                 "excludes": {"arches": ["s390"]}, "comment": "ignored"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            ],
        },
        name="mine.json",
    )
    assert profile.arch_map == (("x86_64", ("x86",)),)
    assert profile.rules[1].conditions == (Condition(0, "eq", 8),)
    assert profile.rules[2].includes == Scope(caps=frozenset({"CAP_SYS_ADMIN"}),
                                              min_kernel=(4, 8))
    assert profile.rules[2].excludes.arches == frozenset({"s390"})
    assert (profile.rules[3].action, profile.rules[3].errno) == ("errno", 38)
    listed = from_docker({"defaultAction": "SCMP_ACT_ALLOW",
                          "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]}, name="l")
    assert listed.arch_map == (("x86_64", ("x32",)), ("x32", ("x86_64",)))


_ALLOW: dict[str, Any] = {"defaultAction": "SCMP_ACT_ALLOW"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "the profile: expected an object"),
        ({}, "defaultAction is required"),
        ({"defaultAction": "SCMP_ACT_NOPE"}, "unknown action 'SCMP_ACT_NOPE'"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY is not supported"),
        ({**_ALLOW, "defaultErrnoRet": -1}, "defaultErrnoRet: expected an integer"),
        ({**_ALLOW, "flags": ["SECCOMP_FILTER_FLAG_LOG"]}, "flags"),
        ({**_ALLOW, "listenerPath": "/run/x.sock"}, "listenerPath"),
        ({**_ALLOW, "architectures": ["SCMP_ARCH_X86"], "archMap": [{}]}, "not both"),
        ({**_ALLOW, "architectures": ["SCMP_ARCH_Z80"]}, "unknown architecture"),
        ({**_ALLOW, "syscalls": {}}, "syscalls: expected a list"),
        ({**_ALLOW, "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}, "at least one syscall name"),
        ({**_ALLOW, "syscalls": [{"names": ["read"]}]}, "syscalls[0].action: unknown action"),
        ({**_ALLOW, "syscalls": [{"names": [""], "action": "SCMP_ACT_ERRNO"}]}, "non-empty"),
        ({**_ALLOW, "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}]},
         "either 'name' or 'names'"),
        ({**_ALLOW, "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO",
                                  "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
         "syscalls[0].args[0].index: expected an integer from 0 to 5"),
        ({**_ALLOW, "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO",
                                  "args": [{"index": 0, "value": True, "op": "SCMP_CMP_EQ"}]}]},
         "args[0].value"),
        ({**_ALLOW, "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO",
                                  "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]},
         "unknown operator"),
        ({**_ALLOW, "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO",
                                  "includes": {"caps": ["CAP_NOPE"]}}]}, "unknown capability"),
        ({**_ALLOW, "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO",
                                  "excludes": {"minKernel": "4"}}]}, "MAJOR.MINOR"),
    ],
)
def test_bad_profiles_are_refused_with_the_place(doc: Any, message: str) -> None:
    with pytest.raises(RunError, match=r"invalid seccomp profile p\.json: ") as err:
        from_docker(doc, name="p.json")
    assert message in str(err.value)


def test_profile_files_that_are_not_profiles(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(RunError, match="not JSON"):
        load_file(str(tmp_path / "junk.json"))
    with pytest.raises(RunError, match="No such file"):
        load_file(str(tmp_path / "missing.json"))
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(RunError, match="not JSON"):
        load_file(str(tmp_path / "deep.json"))


# ---------------------------------------------------------------------- the command line


def test_security_flags_on_the_command_line(tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG"}))
    spec = _spec("--cap-add", "net_admin", "--cap-add", "ALL", "--cap-drop", "mknod",
                 "--security-opt", "no-new-privileges", "--security-opt", f"seccomp={profile}")
    opts = spec.security
    assert opts.cap_add == ("CAP_NET_ADMIN", "ALL")
    assert opts.cap_drop == ("CAP_MKNOD",)
    assert opts.no_new_privileges
    assert opts.seccomp == str(profile)
    assert opts.profile is not None
    assert opts.profile.default_action == "log"
    assert _spec("--privileged").security.privileged
    assert _spec("--security-opt", "seccomp:unconfined").security.seccomp == "unconfined"
    assert not _spec("--security-opt", "no-new-privileges=false").security.no_new_privileges
    assert _spec().security == security.SecurityOptions()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cap-add", "CAP_NOPE"], "invalid --cap-add 'CAP_NOPE': unknown capability"),
        (["--cap-drop", "x"], "invalid --cap-drop 'x'"),
        (["--security-opt", "label=disable"], "invalid --security-opt 'label=disable'"),
        (["--security-opt", "no-new-privileges=maybe"], "invalid --security-opt"),
        (["--security-opt", "seccomp="], "invalid --security-opt"),
        (["--security-opt", "seccomp=/nonexistent/p.json"], "No such file"),
    ],
)
def test_bad_security_flags_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(RunError) as err:
        _spec(*argv)
    assert message in str(err.value)
    assert err.value.code == 125


def test_parsing_security_flags_does_not_load_libseccomp(tmp_path: Path) -> None:
    """The client, the CLI and the spec never pay libseccomp's import (~17 ms)."""
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    code = (
        "import sys; from pycni_run import cli, client; "
        f"cli.build_spec(*cli.parse_run_args(['--cap-add', 'net_admin', '--security-opt', "
        f"'seccomp={profile}', 'busybox'])); "
        "assert 'pyseccomp' not in sys.modules, 'libseccomp was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- compiled, and cgroups


def test_the_default_profile_compiles_and_unknown_names_are_skipped() -> None:
    from pycni_run.seccomp_filter import compile_program, kernel_version

    program = compile_program(DOCKER_DEFAULT, capabilities.DOCKER_DEFAULT)
    assert program
    assert len(program) % 8 == 0
    odd = Profile(name="odd", rules=(
        Rule(names=("no_such_call", "read"), action="errno"),
        Rule(names=("read",), action="errno"),  # the default's action and errno: skipped
        Rule(names=("personality",), action="allow",
             conditions=(Condition(0, "eq", 0), Condition(0, "eq", 8))),  # one argument twice
    ))
    assert len(compile_program(odd, frozenset())) % 8 == 0
    assert kernel_version("6.18.44-fc-v1272") == (6, 18)
    assert kernel_version("5.10.0") == (5, 10)


def test_resolve_gives_privileged_no_filter_no_masks_and_every_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capabilities, "held", lambda: HELD)
    conf = security.resolve(security.SecurityOptions(privileged=True))
    assert (conf.program, conf.seccomp, conf.masked_paths, conf.readonly_paths) == (
        b"", "unconfined", (), ()
    )
    assert conf.devices == devices.PRIVILEGED
    assert conf.capabilities == HELD
    default = security.resolve(security.SecurityOptions())
    assert default.program
    assert default.seccomp == "default"
    assert "/proc/keys" in default.masked_paths
    assert default.devices == devices.DOCKER_DEFAULT
    doc = security.to_doc(default)
    assert doc["DeviceCgroupRules"][:3] == ["deny a *:* rwm", "allow c *:* m", "allow b *:* m"]
    assert doc["Capabilities"] == sorted(capabilities.DOCKER_DEFAULT)


def test_v1_writes_the_device_rules_in_order_v2_writes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[tuple[str, str]] = []
    monkeypatch.setattr(cgroups, "write_file", lambda p, v: written.append((Path(p).name, v)))
    rules = (devices.DeviceRule(allow=False), devices.DeviceRule(allow=True, kind="c", major=1,
                                                                  minor=3))
    cg = Cgroup(version=1, paths={"devices": str(tmp_path)})
    _V1().apply(cg, Limits(devices=rules))
    assert written == [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")]
    written.clear()
    _V2().apply(Cgroup(version=2, paths={"unified": str(tmp_path)}), Limits(devices=rules))
    assert written == []
    assert devices.DeviceRule(allow=True, kind="c", major=136).line() == "c 136:* rwm"
