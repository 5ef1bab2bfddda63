"""Inputs every plugin must refuse, and the oracle that runs one through ``skel.run``.

Three families, each failing for a reason skel or the plugin's config parser must catch
before acting: a broken environment (no or unknown CNI_COMMAND, a required variable dropped,
a hostile container id or ifname), a broken stdin (not JSON, not an object, a missing, non-
string or unsupported cniVersion, a hostile network name) and valid-shaped configs that are
refused (a key the plugin does not know, protocol fields of the wrong type). State dirs of the
plugins (IPAM, portmap, tuning) point into ``data_dir`` so a leak would show there.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from pycni.cni import skel
from pycni.cni._fields import GoKeys
from pycni.cni.errors import ErrorCode
from pycni.plugins import PLUGINS

PLUGIN_NAMES = tuple(sorted(PLUGINS))
NO_NETNS = "/nonexistent/pycni-fuzz/netns"
# Plugins whose parser refuses keys it does not know (code 2).
KEY_CHECKED = frozenset({"bridge", "bandwidth", "firewall", "portmap", "tuning", "pycni-dns",
                         "dnsname"})
_VERBS_WITH_CONFIG = ("ADD", "DEL", "CHECK", "STATUS", "GC")
_SPEC_CODES = frozenset(int(c) for c in ErrorCode) - {int(ErrorCode.INTERNAL)}

HOSTILE_NAMES = st.one_of(
    st.sampled_from(["..", ".", "/", "a/b", "../x", "a\0b", "-x", "x\n", " x", "x y", "é"]),
    st.text(min_size=256, max_size=300, alphabet="ab"),
    st.text(min_size=1, max_size=20).filter(lambda s: not _safe(s)),
)
HOSTILE_IFNAMES = st.one_of(
    st.sampled_from(["", ".", "..", "a/b", "a:b", "a\0b", "a b", "x" * 16, "é" * 8]),
    st.text(min_size=16, max_size=40, alphabet="abc"),
)


def _safe(name: str) -> bool:
    try:
        skel.validate_container_id(name)
    except Exception:  # any refusal counts as unsafe
        return False
    return True


def base_config(plugin: str, data_dir: str, version: str = "1.1.0") -> dict[str, Any]:
    """A config the plugin would accept, its state pointed into ``data_dir``."""
    doc: dict[str, Any] = {"cniVersion": version, "name": "fuzznet", "type": plugin}
    ipam = {"type": "host-local", "subnet": "10.123.0.0/24", "dataDir": data_dir}
    if plugin == "bridge":
        doc.update(bridge="fuzz0", ipam=ipam)
    elif plugin == "host-local":
        doc["ipam"] = ipam
    elif plugin in ("portmap", "tuning"):
        doc["dataDir"] = data_dir
    elif plugin in ("pycni-dns", "dnsname"):
        doc["runDir"] = data_dir
    return doc


def base_env(verb: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": "fuzz-container",
        "CNI_NETNS": NO_NETNS,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/nonexistent/pycni-fuzz/bin",
    }


@dataclass(frozen=True, slots=True)
class Case:
    plugin: str
    env: Mapping[str, str]
    stdin: bytes

    def __repr__(self) -> str:
        return f"Case({self.plugin!r}, env={dict(self.env)!r}, stdin={self.stdin[:300]!r})"


@st.composite
def bad_env(draw: st.DrawFn, data_dir: str, plugins: tuple[str, ...] = PLUGIN_NAMES) -> Case:
    plugin = draw(st.sampled_from(plugins))
    verb = draw(st.sampled_from(("ADD", "DEL", "CHECK")))
    env = base_env(verb)
    how = draw(st.sampled_from(("command", "drop", "cid", "ifname")))
    if how == "command":
        env["CNI_COMMAND"] = draw(
            st.one_of(st.just(""), st.text(max_size=10).filter(lambda s: s not in skel.VERBS))
        )
        if draw(st.booleans()):
            del env["CNI_COMMAND"]
    elif how == "drop":
        required = {"ADD": 4, "CHECK": 4, "DEL": 3}[verb]
        names = ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH", "CNI_NETNS"][:required]
        dropped = draw(st.sampled_from(names))
        if draw(st.booleans()):
            del env[dropped]
        else:
            env[dropped] = ""
    elif how == "cid":
        env["CNI_CONTAINERID"] = draw(HOSTILE_NAMES)
    else:
        env["CNI_IFNAME"] = draw(HOSTILE_IFNAMES)
    doc = base_config(plugin, data_dir)
    return Case(plugin, _env_safe(env), json.dumps(doc).encode())


def _env_safe(env: dict[str, str]) -> dict[str, str]:
    """A real environment cannot carry NUL; the injected mapping can, so keep it."""
    return env


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def bad_stdin(draw: st.DrawFn, data_dir: str, plugins: tuple[str, ...] = PLUGIN_NAMES) -> Case:
    plugin = draw(st.sampled_from(plugins))
    verb = draw(st.sampled_from(_VERBS_WITH_CONFIG))
    doc = base_config(plugin, data_dir)
    how = draw(st.sampled_from(("bytes", "truncated", "not-object", "version", "name")))
    if how == "bytes":
        data = draw(st.binary(max_size=200).filter(_not_json_object))
    elif how == "truncated":
        text = json.dumps(doc).encode()
        data = text[: draw(st.integers(0, len(text) - 1))]
    elif how == "not-object":
        data = json.dumps(draw(_JSON.filter(lambda v: not isinstance(v, dict)))).encode()
    elif how == "version":
        choice = draw(
            st.one_of(
                st.sampled_from(["", "0.0.1", "9.9.9", "1.1", "v1.1.0"]),
                st.integers(),
                st.none(),
                st.lists(st.text(max_size=3)),
            )
        )
        doc["cniVersion"] = choice
        if choice is None and draw(st.booleans()):
            del doc["cniVersion"]
        data = json.dumps(doc).encode()
    else:
        doc["name"] = draw(st.one_of(HOSTILE_NAMES, st.integers(), st.none()))
        data = json.dumps(doc).encode()
    return Case(plugin, base_env(verb), data)


def _not_json_object(data: bytes) -> bool:
    try:
        return not isinstance(json.loads(data), dict)
    except ValueError:
        return True


_WRONG_TYPED = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.none(), min_size=1))


@st.composite
def refused_config(draw: st.DrawFn, data_dir: str, plugins: tuple[str, ...] = PLUGIN_NAMES) -> Case:
    """Valid JSON, valid env, supported version: refused for what the config says."""
    plugin = draw(st.sampled_from(plugins))
    doc = base_config(plugin, data_dir)
    choices = ["prevResult", "runtimeConfig", "capabilities"]
    if plugin in KEY_CHECKED:
        choices.append("unknown")
    how = draw(st.sampled_from(choices))
    if how == "unknown":
        key = draw(
            st.text(min_size=1, max_size=12).filter(
                # matched as Go matches keys: "MTU" is mtu, not unknown
                lambda k: GoKeys(doc).match(k) is None
                and not k.startswith("cni.dev/")
                and _KNOWN.match(k) is None
            )
        )
        doc[key] = draw(_JSON)
    elif how == "prevResult":
        # (a falsy one, [] or 0, is "no prevResult" on purpose: DEL must work without one)
        doc["prevResult"] = draw(
            st.one_of(
                st.integers().filter(bool),
                st.text(min_size=1, max_size=5),
                st.lists(st.none(), min_size=1),
                st.just({"cniVersion": "1.1.0", "ips": "x"}),
            )
        )
    else:
        doc[how] = draw(_WRONG_TYPED)
    return Case(plugin, base_env("ADD"), json.dumps(doc).encode())


_KNOWN_ANY = frozenset(
    {
        "cniVersion",
        "cniVersions",
        "name",
        "type",
        "capabilities",
        "runtimeConfig",
        "args",
        "prevResult",
        "bridge",
        "isGateway",
        "isDefaultGateway",
        "forceAddress",
        "ipMasq",
        "ipMasqBackend",
        "mtu",
        "hairpinMode",
        "promiscMode",
        "vlan",
        "enabledad",
        "macspoofchk",
        "portIsolation",
        "dns",
        "ipam",
        "snat",
        "masqAll",
        "backend",
        "dataDir",
        "ingressPolicy",
        "sysctl",
        "mac",
        "promisc",
        "allmulti",
        "txQLen",
        "allowlist",
        "ingressRate",
        "ingressBurst",
        "egressRate",
        "egressBurst",
        "unshapedSubnets",
        "shapedSubnets",
        "vlanTrunk",
        "preserveDefaultVlan",
        "disableContainerInterface",
    }
)


_KNOWN = GoKeys(_KNOWN_ANY)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    stdout: str
    stderr: str


def run_case(case: Case) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    status = skel.run(
        PLUGINS[case.plugin], env=case.env, stdin=io.BytesIO(case.stdin), stdout=out, stderr=err
    )
    return Outcome(status, out.getvalue(), err.getvalue())


def assert_one_spec_error(case: Case, outcome: Outcome) -> None:
    """Exit 1, exactly one JSON error document with a spec code, no traceback anywhere."""
    assert outcome.status == 1, (case, outcome)
    lines = outcome.stdout.splitlines()
    assert len(lines) == 1, (case, outcome)
    doc = json.loads(lines[0])
    assert isinstance(doc, dict), (case, outcome)
    assert doc.get("code") in _SPEC_CODES, (case, outcome)
    assert isinstance(doc.get("msg"), str), (case, outcome)
    assert doc["msg"], (case, outcome)
    assert "Traceback" not in outcome.stdout, (case, outcome)
    assert "Traceback" not in outcome.stderr, (case, outcome)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MUTATIONS = frozenset(
    {
        "os.mkdir",
        "os.rename",
        "os.remove",
        "os.rmdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.utime",
        "shutil.rmtree",
        "shutil.move",
        "os.chdir",
        "subprocess.Popen",
        "os.exec",
        "os.posix_spawn",
        "os.fork",
        "os.system",
        "ctypes.dlopen",
    }
)
_KERNEL_FAMILIES = frozenset({socket.AF_NETLINK, getattr(socket, "AF_PACKET", -1)})


class Recorder:
    """One process-wide audit hook (they cannot be removed), recording only while armed."""

    def __init__(self) -> None:
        self.armed = False
        self.events: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed:
            return
        if event == "open":
            path, mode, flags = (*args, None, None, None)[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writes:
                self.events.append(f"open for writing: {path!r}")
        elif event in _MUTATIONS:
            self.events.append(f"{event}: {args!r}")
        elif event == "socket.__new__" and args and args[1] in _KERNEL_FAMILIES:
            self.events.append(f"kernel socket: {args!r}")

    @classmethod
    def get(cls) -> Recorder:
        if not hasattr(cls, "_instance"):
            cls._instance = cls()  # type: ignore[attr-defined]
        return cls._instance  # type: ignore[attr-defined,no-any-return]

    def run(self, case: Case) -> tuple[Outcome, list[str]]:
        """Run one case with the hook armed: its outcome and what it touched."""
        self.events.clear()
        self.armed = True
        try:
            outcome = run_case(case)
        finally:
            self.armed = False
        return outcome, list(self.events)


def tree(path: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files)
