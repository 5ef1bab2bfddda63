"""The plugin skeleton, driven in-process with injected env/stdin/stdout/stderr.

The protocol promise under test: whatever the input, exactly one JSON document on stdout,
the right code, exit 1 on error, and a traceback (if any) only on stderr.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import skel
from pycni.cni import version as versions
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs, PluginInfo, parse_cni_args
from pycni.cni.types import DNS, Interface, IPConfig, Result, Route

ATTACH_VERBS = ("ADD", "DEL", "CHECK")
CONFIG_VERBS = ("ADD", "DEL", "CHECK", "STATUS", "GC")
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": ("CNI_PATH",),
    "GC": ("CNI_PATH",),
}
MISSING_ENV_CASES = [(verb, var) for verb, needed in REQUIRED_ENV.items() for var in needed]
NO_NETNS = "/nonexistent/pycni-test/netns"  # never stat-able: the own-netns guard stays quiet

RESULT = Result(
    cni_version="1.1.0",
    interfaces=(Interface(name="eth0", mac="aa:bb:cc:dd:ee:ff", sandbox=NO_NETNS, mtu=1500),),
    ips=(IPConfig(address="10.0.0.2/24", gateway="10.0.0.1", interface=0),),
    routes=(Route(dst="0.0.0.0/0", gw="10.0.0.1", table=254),),
    dns=DNS(nameservers=("10.0.0.1",)),
)


# ---- harness ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def documents(self) -> list[Any]:
        decoder = json.JSONDecoder()
        text, pos, docs = self.stdout, 0, []
        while pos < len(text):
            if text[pos].isspace():
                pos += 1
                continue
            doc, pos = decoder.raw_decode(text, pos)
            docs.append(doc)
        return docs

    def error(self) -> dict[str, Any]:
        """The one error document, after checking everything the protocol promises about it."""
        assert self.code == 1, self
        assert "Traceback" not in self.stdout
        docs = self.documents()
        assert len(docs) == 1, f"expected exactly one JSON document, got {self.stdout!r}"
        doc = docs[0]
        assert isinstance(doc, dict)
        assert set(doc) <= {"cniVersion", "code", "msg", "details"}
        assert isinstance(doc["code"], int)
        assert isinstance(doc["msg"], str)
        assert self.stdout.endswith("\n")
        return doc

    def result(self) -> dict[str, Any]:
        assert self.code == 0, self
        docs = self.documents()
        assert len(docs) == 1, self.stdout
        assert isinstance(docs[0], dict)
        return docs[0]


@dataclass
class FakePlugin:
    """A plugin module: records each call; ``behaviour`` per verb returns or raises."""

    verbs: tuple[str, ...] = ("ADD", "DEL", "CHECK", "STATUS", "GC")
    behaviour: dict[str, Callable[[CmdArgs], Any]] = field(default_factory=dict)
    calls: list[CmdArgs] = field(default_factory=list)

    def _call(self, verb: str, args: CmdArgs) -> Any:
        self.calls.append(args)
        action = self.behaviour.get(verb)
        if action is not None:
            return action(args)
        return RESULT if verb == "ADD" else None

    def __getattr__(self, name: str) -> Any:
        verb = name.removeprefix("cmd_").upper()
        if name.startswith("cmd_") and verb in self.verbs:
            return lambda args: self._call(verb, args)
        raise AttributeError(name)


def info_for(plugin: object, **overrides: Any) -> PluginInfo:
    return PluginInfo(name="fake", module="fake.module", load=lambda _: plugin, **overrides)


def base_env(command: str) -> dict[str, str]:
    env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/bin"}
    if command in ATTACH_VERBS:
        env.update(CNI_CONTAINERID="ctr-1", CNI_NETNS=NO_NETNS, CNI_IFNAME="eth0")
    return env


def config(cni_version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": cni_version, "name": "testnet", "type": "fake", **extra}


def call(
    info: PluginInfo | None = None,
    *,
    env: Mapping[str, str],
    stdin: bytes | Mapping[str, Any] | None = None,
) -> Outcome:
    info = info or info_for(FakePlugin())
    data = (
        stdin
        if isinstance(stdin, bytes)
        else json.dumps(stdin if stdin is not None else config()).encode()
    )
    out, err = io.StringIO(), io.StringIO()
    code = skel.run(info, env=env, stdin=io.BytesIO(data), stdout=out, stderr=err)
    return Outcome(code, out.getvalue(), err.getvalue())


def call_verb(
    verb: str,
    plugin: FakePlugin | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | Mapping[str, Any] | None = None,
    **info: Any,
) -> Outcome:
    return call(info_for(plugin or FakePlugin(), **info), env=env or base_env(verb), stdin=stdin)


# ---- success paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("cni_version", versions.SUPPORTED)
def test_add_result_is_rendered_in_the_requests_version(cni_version: str) -> None:
    outcome = call_verb("ADD", stdin=config(cni_version))
    assert outcome.result() == RESULT.to_dict(cni_version)
    assert outcome.result()["cniVersion"] == cni_version
    assert outcome.stderr == ""


@pytest.mark.parametrize("verb", ["DEL", "CHECK", "STATUS", "GC"])
def test_other_verbs_print_nothing_on_success(verb: str) -> None:
    plugin = FakePlugin()
    outcome = call_verb(verb, plugin)
    assert (outcome.code, outcome.stdout) == (0, "")
    assert len(plugin.calls) == 1


@pytest.mark.parametrize("verb", ["DEL", "CHECK", "STATUS", "GC"])
def test_unimplemented_verbs_succeed_silently(verb: str) -> None:
    plugin = FakePlugin(verbs=("ADD",))
    outcome = call_verb(verb, plugin)
    assert (outcome.code, outcome.stdout, outcome.stderr) == (0, "", "")
    assert plugin.calls == []


@pytest.mark.parametrize("verb", ["DEL", "CHECK", "STATUS", "GC"])
def test_a_result_returned_by_a_non_add_verb_is_not_printed(verb: str) -> None:
    plugin = FakePlugin(behaviour={verb: lambda _: RESULT})
    assert call_verb(verb, plugin).stdout == ""


def test_cmd_args_carry_the_validated_call() -> None:
    plugin = FakePlugin()
    env = base_env("ADD") | {
        "CNI_PATH": os.pathsep.join(["/a", "", "/b"]),
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
    }
    stdin = config("1.0.0", ipam={"type": "x"})
    call_verb("ADD", plugin, env=env, stdin=stdin)
    (args,) = plugin.calls
    assert args.command == "ADD"
    assert (args.container_id, args.netns, args.ifname) == ("ctr-1", NO_NETNS, "eth0")
    assert args.path == ("/a", "/b")
    assert args.cni_args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}
    assert json.loads(args.stdin) == stdin
    assert (args.cni_version, args.network) == ("1.0.0", "testnet")
    assert args.config.ipam == {"type": "x"}
    assert args.env == env


def test_del_without_netns_is_fine() -> None:
    env = base_env("DEL")
    del env["CNI_NETNS"]
    plugin = FakePlugin()
    assert call_verb("DEL", plugin, env=env).code == 0
    assert plugin.calls[0].netns == ""


@pytest.mark.parametrize("verb", ["STATUS", "GC"])
def test_status_and_gc_need_no_attachment(verb: str) -> None:
    assert call_verb(verb, env={"CNI_COMMAND": verb, "CNI_PATH": "/opt/cni/bin"}).code == 0


def test_gc_valid_attachments() -> None:
    plugin = FakePlugin()
    attachments = [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net1"}]
    call_verb("GC", plugin, stdin=config() | {"cni.dev/valid-attachments": attachments})
    assert plugin.calls[0].valid_attachments() == {("a", "eth0"), ("b", "net1")}


def test_gc_old_attachments_spelling_and_absence() -> None:
    plugin = FakePlugin()
    call_verb(
        "GC",
        plugin,
        stdin=config() | {"cni.dev/attachments": [{"containerID": "a", "ifname": "e"}]},
    )
    call_verb("GC", plugin, stdin=config())
    assert plugin.calls[0].valid_attachments() == {("a", "e")}
    assert plugin.calls[1].valid_attachments() == frozenset()


@pytest.mark.parametrize("bad", [{"containerID": "a", "ifname": "e"}, ["a:eth0"], "a:eth0"])
def test_gc_malformed_valid_attachments(bad: Any) -> None:
    plugin = FakePlugin(behaviour={"GC": lambda args: args.valid_attachments()})
    doc = call_verb("GC", plugin, stdin=config() | {"cni.dev/valid-attachments": bad}).error()
    assert doc["code"] == ErrorCode.DECODING_FAILURE


# ---- VERSION ----------------------------------------------------------------------------------


@pytest.mark.parametrize("asked", ["0.3.1", "1.1.0", "0.1.0", "9.9.9"])
def test_version_lists_ours_and_echoes_the_input(asked: str) -> None:
    outcome = call(env={"CNI_COMMAND": "VERSION"}, stdin={"cniVersion": asked})
    assert outcome.result() == {
        "cniVersion": asked,
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


@pytest.mark.parametrize(
    "stdin", [b"", b"{", b"[]", b'{"cniVersion": 1}', b'{"cniVersion": ""}', b"\xff"]
)
def test_version_answers_even_odd_input_with_current(stdin: bytes) -> None:
    outcome = call(env={"CNI_COMMAND": "VERSION"}, stdin=stdin)
    assert outcome.result()["cniVersion"] == versions.CURRENT


def test_version_needs_no_other_env_and_no_import() -> None:
    def never(_: str) -> object:
        raise AssertionError("VERSION must not import the plugin")

    info = PluginInfo(name="p", module="p", versions=("0.4.0", "1.0.0"), load=never)
    outcome = call(
        info,
        env={"CNI_COMMAND": "VERSION", "CNI_IFNAME": "bad/name"},
        stdin={"cniVersion": "1.0.0"},
    )
    assert outcome.result() == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}


def test_version_with_unreadable_stdin() -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError("EIO")

    out = io.StringIO()
    code = skel.run(
        info_for(FakePlugin()),
        env={"CNI_COMMAND": "VERSION"},
        stdin=Broken(),
        stdout=out,
        stderr=io.StringIO(),
    )
    assert code == 0
    assert json.loads(out.getvalue())["cniVersion"] == versions.CURRENT


# ---- bad input, every verb --------------------------------------------------------------------


@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"{",
        b"not json",
        b'{"cniVersion": "1.1.0",}',
        b"\xff\xfe{}",
        b"[" * 100_000,  # deeper than the recursion limit: was a RecursionError and 999
        b'{"cniVersion": "1.1.0", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_malformed_json_is_code_6(verb: str, stdin: bytes) -> None:
    doc = call_verb(verb, stdin=stdin).error()
    assert doc["code"] == ErrorCode.DECODING_FAILURE
    assert "cniVersion" not in doc


@pytest.mark.parametrize(
    "stdin", [b"[]", b'["cniVersion", "1.1.0"]', b'"1.1.0"', b"1", b"null", b"true"]
)
@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_non_object_json_is_code_6(verb: str, stdin: bytes) -> None:
    doc = call_verb(verb, stdin=stdin).error()
    assert doc["code"] == ErrorCode.DECODING_FAILURE
    assert "cniVersion" not in doc


@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_unreadable_stdin_is_code_5(verb: str) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError("EIO")

    out = io.StringIO()
    code = skel.run(
        info_for(FakePlugin()), env=base_env(verb), stdin=Broken(), stdout=out, stderr=io.StringIO()
    )
    doc = Outcome(code, out.getvalue(), "").error()
    assert doc["code"] == ErrorCode.IO_FAILURE


@pytest.mark.parametrize("command", [None, ""])
def test_missing_command_is_code_4(command: str | None) -> None:
    env = base_env("ADD")
    del env["CNI_COMMAND"]
    if command is not None:
        env["CNI_COMMAND"] = command
    doc = call(env=env, stdin=config("0.4.0")).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert "CNI_COMMAND" in doc["msg"]
    assert doc["cniVersion"] == "0.4.0"  # the request's config is readable: its version


@pytest.mark.parametrize("command", [None, "add"])
def test_bad_command_without_a_readable_config_has_no_version(command: str | None) -> None:
    env = base_env("ADD")
    del env["CNI_COMMAND"]
    if command is not None:
        env["CNI_COMMAND"] = command
    doc = call(env=env, stdin=b"not json").error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert "cniVersion" not in doc


@pytest.mark.parametrize("command", ["add", "Add", "DELETE", "VERSIONS", "UPDATE", " ADD"])
def test_unknown_command_is_code_4(command: str) -> None:
    env = base_env("ADD") | {"CNI_COMMAND": command}
    plugin = FakePlugin()
    doc = call(info_for(plugin), env=env, stdin=config("1.0.0")).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert repr(command) in doc["details"]
    assert doc["cniVersion"] == "1.0.0"
    assert plugin.calls == []


@pytest.mark.parametrize("cni_version", ["0.1.0", "0.2.0", "1.2.0", "2.0.0", "banana", "1.0"])
@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_unsupported_version_is_code_1(verb: str, cni_version: str) -> None:
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, stdin=config(cni_version)).error()
    assert doc["code"] == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert doc["cniVersion"] == cni_version
    assert plugin.calls == []


def test_unsupported_version_wins_over_fields_of_a_newer_spec() -> None:
    """A 2.0 config may have changed field shapes: refuse it for its version, not its fields."""
    stdin = config("2.0.0", prevResult={"cniVersion": "2.0.0", "ips": [{"address": {"v4": 1}}]})
    assert call_verb("DEL", stdin=stdin).error()["code"] == ErrorCode.INCOMPATIBLE_CNI_VERSION


@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_plugins_own_version_list_is_honoured(verb: str) -> None:
    doc = call_verb(verb, stdin=config("0.4.0"), versions=("1.0.0", "1.1.0")).error()
    assert doc["code"] == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert doc["cniVersion"] == "0.4.0"


@pytest.mark.parametrize(("verb", "var"), MISSING_ENV_CASES)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_required_env_is_code_4_naming_it(verb: str, var: str, how: str) -> None:
    env = base_env(verb)
    if how == "absent":
        env.pop(var, None)
    else:
        env[var] = ""
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, env=env).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert var in doc["msg"]
    assert doc["cniVersion"] == "1.1.0"  # stdin was readable: the version is known
    assert plugin.calls == []


def test_all_missing_variables_are_named_at_once() -> None:
    doc = call_verb("ADD", env={"CNI_COMMAND": "ADD"}).error()
    for var in REQUIRED_ENV["ADD"]:
        assert var in doc["msg"]


def test_missing_env_wins_over_bad_stdin() -> None:
    """As skel: the environment is checked before the config is decoded."""
    doc = call_verb("ADD", env={"CNI_COMMAND": "ADD"}, stdin=b"{").error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert "cniVersion" not in doc


BAD_IFNAMES = [
    "a" * 16,
    "é" * 8,
    ".",
    "..",
    "eth/0",
    "/",
    "eth:0",
    "eth 0",
    " eth0",
    "eth0\t",
    "eth0\n",
    "eth\u00a00",
    "eth\x000",
]


@pytest.mark.parametrize("ifname", BAD_IFNAMES)
@pytest.mark.parametrize("verb", ATTACH_VERBS)
def test_invalid_ifname_is_code_4(verb: str, ifname: str) -> None:
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, env=base_env(verb) | {"CNI_IFNAME": ifname}).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert "CNI_IFNAME" in doc["msg"]
    assert plugin.calls == []


@pytest.mark.parametrize("ifname", ["a" * 15, "ü" * 7, "eth0.100", "net-1_a", "a"])
def test_valid_ifnames(ifname: str) -> None:
    assert call_verb("ADD", env=base_env("ADD") | {"CNI_IFNAME": ifname}).code == 0


BAD_CONTAINER_IDS = ["-abc", ".abc", "_abc", "a/b", "a b", "abc\n", "a:b", "ü", "a" * 256, "a\x00b"]


@pytest.mark.parametrize("container_id", BAD_CONTAINER_IDS)
@pytest.mark.parametrize("verb", ATTACH_VERBS)
def test_invalid_container_id_is_code_4(verb: str, container_id: str) -> None:
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, env=base_env(verb) | {"CNI_CONTAINERID": container_id}).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert "CNI_CONTAINERID" in doc["msg"]
    assert plugin.calls == []


@pytest.mark.parametrize(
    "container_id", ["a" * 255, "0", "a_b.c-D9", "cnitool-0123456789abcdef0123"]
)
def test_valid_container_ids(container_id: str) -> None:
    assert call_verb("ADD", env=base_env("ADD") | {"CNI_CONTAINERID": container_id}).code == 0


@pytest.mark.parametrize("verb", ["STATUS", "GC"])
def test_a_bad_container_id_is_refused_even_where_optional(verb: str) -> None:
    doc = call_verb(verb, env=base_env(verb) | {"CNI_CONTAINERID": "../x"}).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT


BAD_NETWORK_NAMES = [
    "a/b",
    "/",
    "..",
    ".",
    "../etc",
    "a\x00b",
    "x" * 256,
    "net\n",
    "-net",
    "ü",
    "a b",
    "",
]


@pytest.mark.parametrize("name", BAD_NETWORK_NAMES)
@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_bad_network_name_is_code_7(verb: str, name: str) -> None:
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, stdin=config() | {"name": name}).error()
    assert doc["code"] == ErrorCode.INVALID_NETWORK_CONFIG
    assert "name" in doc["msg"]
    assert doc["cniVersion"] == "1.1.0"
    assert plugin.calls == []


def test_longest_network_name_is_fine() -> None:
    assert call_verb("ADD", stdin=config() | {"name": "x" * 255}).code == 0


@pytest.mark.parametrize(
    ("verb", "cni_version"),
    [
        ("CHECK", "0.3.0"),
        ("CHECK", "0.3.1"),
        ("STATUS", "0.3.0"),
        ("STATUS", "0.3.1"),
        ("STATUS", "0.4.0"),
        ("STATUS", "1.0.0"),
        ("GC", "0.3.0"),
        ("GC", "0.3.1"),
        ("GC", "0.4.0"),
        ("GC", "1.0.0"),
    ],
)
def test_version_gates_are_code_1(verb: str, cni_version: str) -> None:
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, stdin=config(cni_version)).error()
    assert doc["code"] == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert verb in doc["msg"]
    assert doc["cniVersion"] == cni_version
    assert plugin.calls == []


@pytest.mark.parametrize(
    ("verb", "cni_version"),
    [
        ("CHECK", "0.4.0"),
        ("CHECK", "1.0.0"),
        ("CHECK", "1.1.0"),
        ("STATUS", "1.1.0"),
        ("GC", "1.1.0"),
        ("ADD", "0.3.0"),
        ("DEL", "0.3.0"),
    ],
)
def test_version_gates_let_these_through(verb: str, cni_version: str) -> None:
    assert call_verb(verb, stdin=config(cni_version)).code == 0


@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_plain_exception_is_999_with_text_and_traceback_on_stderr(verb: str) -> None:
    def boom(_: CmdArgs) -> None:
        raise RuntimeError("kaboom: the netlink socket melted")

    outcome = call_verb(verb, FakePlugin(behaviour={verb: boom}))
    doc = outcome.error()
    assert doc["code"] == ErrorCode.INTERNAL
    assert "kaboom: the netlink socket melted" in doc["details"]
    assert "RuntimeError" in doc["details"]
    assert doc["cniVersion"] == "1.1.0"
    assert "Traceback" in outcome.stderr
    assert "kaboom" in outcome.stderr


def test_import_failure_of_the_plugin_is_999() -> None:
    def load(_: str) -> object:
        raise ImportError("No module named 'pyroute2'")

    outcome = call(PluginInfo(name="p", module="p", load=load), env=base_env("ADD"))
    doc = outcome.error()
    assert doc["code"] == ErrorCode.INTERNAL
    assert "pyroute2" in doc["details"]
    assert "Traceback" in outcome.stderr


@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_cni_error_from_the_plugin_keeps_its_code(verb: str) -> None:
    def refuse(_: CmdArgs) -> None:
        raise CNIError(ErrorCode.TRY_AGAIN_LATER, "busy", "lock held")

    outcome = call_verb(verb, FakePlugin(behaviour={verb: refuse}))
    assert outcome.error() == {
        "cniVersion": "1.1.0",
        "code": 11,
        "msg": "busy",
        "details": "lock held",
    }
    assert outcome.stderr == ""


@pytest.mark.parametrize("returned", [None, {"cniVersion": "1.1.0"}, "result"])
def test_add_must_return_a_result(returned: Any) -> None:
    doc = call_verb("ADD", FakePlugin(behaviour={"ADD": lambda _: returned})).error()
    assert doc["code"] == ErrorCode.INTERNAL


def test_plugin_without_add_is_999() -> None:
    doc = call_verb("ADD", FakePlugin(verbs=("DEL",))).error()
    assert doc["code"] == ErrorCode.INTERNAL


@pytest.mark.parametrize(
    ("stdin", "version_in_error"),
    [
        (b"{", None),
        (b"[]", None),
        (json.dumps({"name": "n", "type": "t"}).encode(), None),
        (json.dumps({"cniVersion": 1, "name": "n", "type": "t"}).encode(), None),
        (json.dumps({"cniVersion": "", "name": "n", "type": "t"}).encode(), None),
        (json.dumps({"cniVersion": "0.4.0", "name": "bad/name", "type": "t"}).encode(), "0.4.0"),
        (json.dumps({"cniVersion": "7.0.0", "name": "n", "type": "t"}).encode(), "7.0.0"),
        (json.dumps({"cniVersion": "1.0.0", "type": "t"}).encode(), "1.0.0"),
    ],
)
def test_cni_version_in_error_iff_known(stdin: bytes, version_in_error: str | None) -> None:
    doc = call_verb("ADD", stdin=stdin).error()
    assert doc.get("cniVersion") == version_in_error


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"cniVersion": "1.0.0", "name": "n"}, "type"),
        ({"cniVersion": "1.0.0", "type": "t"}, "name"),
        ({"name": "n", "type": "t"}, "cniVersion"),
        (
            config("1.0.0", prevResult={"cniVersion": "1.0.0", "ips": [{"address": "x"}]}),
            "prevResult.ips[0].address",
        ),
        (config("1.0.0", prevResult={"cniVersion": "0.2.0"}), None),
    ],
)
def test_invalid_config_fields(doc: dict[str, Any], field: str | None) -> None:
    error = call_verb("DEL", stdin=doc).error()
    if field is None:
        assert error["code"] == ErrorCode.INCOMPATIBLE_CNI_VERSION
    else:
        assert error["code"] == ErrorCode.INVALID_NETWORK_CONFIG
        assert error["msg"] == f"invalid {field}"


# ---- CNI_ARGS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ATTACH_VERBS)
def test_unknown_cni_args_are_code_4(verb: str) -> None:
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, env=base_env(verb) | {"CNI_ARGS": "K8S_POD_NAME=web"}).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert "K8S_POD_NAME" in doc["details"]
    assert plugin.calls == []


@pytest.mark.parametrize("ignore", ["1", "true", "True", "TRUE"])
@pytest.mark.parametrize("verb", ATTACH_VERBS)
def test_ignore_unknown_lets_unknown_cni_args_through(verb: str, ignore: str) -> None:
    plugin = FakePlugin()
    env = base_env(verb) | {"CNI_ARGS": f"K8S_POD_NAME=web;IgnoreUnknown={ignore};X=1=2"}
    assert call_verb(verb, plugin, env=env).code == 0
    assert plugin.calls[0].cni_args["K8S_POD_NAME"] == "web"


@pytest.mark.parametrize("ignore", ["0", "false", "yes", ""])
def test_ignore_unknown_must_be_true(ignore: str) -> None:
    env = base_env("ADD") | {"CNI_ARGS": f"IgnoreUnknown={ignore};FOO=bar"}
    assert call_verb("ADD", env=env).error()["code"] == ErrorCode.INVALID_ENVIRONMENT


def test_known_cni_args_pass() -> None:
    plugin = FakePlugin()
    env = base_env("ADD") | {"CNI_ARGS": "IP=10.0.0.5/24;MAC=aa:bb:cc:dd:ee:ff"}
    assert call_verb("ADD", plugin, env=env, known_cni_args=frozenset({"IP", "MAC"})).code == 0
    assert plugin.calls[0].cni_args == {"IP": "10.0.0.5/24", "MAC": "aa:bb:cc:dd:ee:ff"}


def test_cni_args_keys_are_case_sensitive() -> None:
    env = base_env("ADD") | {"CNI_ARGS": "ip=10.0.0.5/24"}
    doc = call_verb("ADD", env=env, known_cni_args=frozenset({"IP"})).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT


@pytest.mark.parametrize("text", ["FOO", "=bar", "IgnoreUnknown=1;junk"])
def test_malformed_cni_args_are_code_4(text: str) -> None:
    doc = call_verb("ADD", env=base_env("ADD") | {"CNI_ARGS": text}).error()
    assert doc["code"] == ErrorCode.INVALID_ENVIRONMENT
    assert "CNI_ARGS" in doc["msg"]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", {}),
        (";;", {}),
        ("A=1;B=", {"A": "1", "B": ""}),
        ("A=1;A=2", {"A": "2"}),
        ("A=x=y", {"A": "x=y"}),
    ],
)
def test_parse_cni_args(text: str, parsed: dict[str, str]) -> None:
    assert parse_cni_args(text) == parsed


# ---- the plugin's own netns -------------------------------------------------------------------

OWN_NETNS = "/proc/self/ns/net"


@pytest.mark.parametrize("verb", ATTACH_VERBS)
def test_own_netns_is_code_8(verb: str) -> None:
    plugin = FakePlugin()
    doc = call_verb(verb, plugin, env=base_env(verb) | {"CNI_NETNS": OWN_NETNS}).error()
    assert doc["code"] == ErrorCode.INVALID_NETNS
    assert doc["details"] == OWN_NETNS
    assert plugin.calls == []


@pytest.mark.parametrize("path", [f"/proc/{os.getpid()}/ns/net", "/proc/thread-self/ns/net"])
def test_own_netns_by_another_name_is_code_8(path: str) -> None:
    doc = call_verb("ADD", env=base_env("ADD") | {"CNI_NETNS": path}).error()
    assert doc["code"] == ErrorCode.INVALID_NETNS


@pytest.mark.parametrize("verb", ATTACH_VERBS)
def test_own_netns_allowed_by_the_plugin(verb: str) -> None:
    plugin = FakePlugin()
    outcome = call_verb(
        verb, plugin, env=base_env(verb) | {"CNI_NETNS": OWN_NETNS}, allow_own_netns=True
    )
    assert outcome.code == 0
    assert plugin.calls[0].netns == OWN_NETNS


@pytest.mark.parametrize("override", ["1", "true", "TRUE"])
@pytest.mark.parametrize("verb", ATTACH_VERBS)
def test_own_netns_allowed_by_override(verb: str, override: str) -> None:
    env = base_env(verb) | {"CNI_NETNS": OWN_NETNS, "CNI_NETNS_OVERRIDE": override}
    assert call_verb(verb, env=env).code == 0


@pytest.mark.parametrize("override", ["0", "false", "", "yes"])
def test_override_must_be_true(override: str) -> None:
    env = base_env("ADD") | {"CNI_NETNS": OWN_NETNS, "CNI_NETNS_OVERRIDE": override}
    assert call_verb("ADD", env=env).error()["code"] == ErrorCode.INVALID_NETNS


def test_another_file_is_not_our_netns(tmp_path: Path) -> None:
    other = tmp_path / "netns"
    other.write_bytes(b"")
    assert call_verb("ADD", env=base_env("ADD") | {"CNI_NETNS": str(other)}).code == 0


# ---- main -------------------------------------------------------------------------------------


def test_main_wires_the_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CNI_COMMAND", "VERSION")

    class Stdin:
        buffer = io.BytesIO(b'{"cniVersion": "0.4.0"}')

    monkeypatch.setattr(sys, "stdin", Stdin())
    assert skel.main(info_for(FakePlugin())) == 0
    assert json.loads(capsys.readouterr().out)["cniVersion"] == "0.4.0"


def test_main_exits_1_on_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CNI_COMMAND", raising=False)

    class Stdin:
        buffer = io.BytesIO(b"")

    monkeypatch.setattr(sys, "stdin", Stdin())
    assert skel.main(info_for(FakePlugin())) == 1
    assert json.loads(capsys.readouterr().out)["code"] == ErrorCode.INVALID_ENVIRONMENT
