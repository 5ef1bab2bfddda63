"""Loading networks from a conf dir the way libcni does."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pycni.cni.conf import find_conflist, list_networks, load_conflist_file, parse_conflist
from pycni.cni.errors import CNIError, ErrorCode


def conflist(
    name: str = "net", *, version: str = "1.0.0", plugins: Any = None, **top: Any
) -> dict[str, Any]:
    if plugins is None:
        plugins = [
            {"type": "bridge", "bridge": "cni0"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]
    return {"cniVersion": version, "name": name, "plugins": plugins, **top}


def write(directory: Path, filename: str, doc: Any) -> Path:
    path = directory / filename
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return path


def parse(doc: Any) -> Any:
    return parse_conflist(json.dumps(doc).encode())


def error_of(doc: Any) -> CNIError:
    with pytest.raises(CNIError) as info:
        parse(doc)
    return info.value


# ---- parse_conflist ---------------------------------------------------------------------------


def test_parse_a_conflist() -> None:
    data = json.dumps(conflist(disableCheck=True)).encode()
    conf = parse_conflist(data, "/etc/cni/net.d/10-net.conflist")
    assert conf.name == "net"
    assert conf.cni_version == "1.0.0"
    assert conf.plugin_types == ("bridge", "portmap")
    assert conf.plugins[0] == {"type": "bridge", "bridge": "cni0"}
    assert conf.disable_check is True
    assert conf.disable_gc is False
    assert conf.raw == data  # the exact bytes, for the cache
    assert conf.source == "/etc/cni/net.d/10-net.conflist"


def test_unknown_keys_pass_through_unchanged() -> None:
    plugin = {
        "type": "bridge",
        "isGateway": True,
        "ipam": {"type": "host-local", "ranges": [[{}]]},
        "x-y": [1],
    }
    assert parse(conflist(plugins=[plugin])).plugins == (plugin,)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("True", True),
        ("false", False),
        ("yes", False),
    ],
)
@pytest.mark.parametrize("key", ["disableCheck", "disableGC"])
def test_disable_flags(key: str, flag: Any, expected: bool) -> None:
    conf = parse(conflist(**{key: flag}))
    attr = "disable_check" if key == "disableCheck" else "disable_gc"
    assert getattr(conf, attr) is expected


def test_disable_flag_of_wrong_type_is_refused() -> None:
    assert error_of(conflist(disableCheck=1)).code == ErrorCode.INVALID_NETWORK_CONFIG


def test_single_plugin_conf_is_upconverted() -> None:
    single = {
        "cniVersion": "0.4.0",
        "name": "solo",
        "type": "bridge",
        "bridge": "br0",
        "ipMasq": True,
    }
    conf = parse(single)
    assert conf.name == "solo"
    assert conf.cni_version == "0.4.0"
    assert conf.plugins == (single,)
    assert conf.plugin_types == ("bridge",)


@pytest.mark.parametrize(
    ("cni_version", "cni_versions", "chosen"),
    [
        ("0.4.0", ["1.0.0", "1.1.0"], "1.1.0"),  # the highest supported
        ("1.1.0", ["0.3.1"], "1.1.0"),
        ("0.3.1", ["9.0.0", "1.2.0"], "0.3.1"),  # newer than ours: ignored
        ("2.0.0", ["1.0.0"], "1.0.0"),
        ("1.0.0", [], "1.0.0"),
    ],
)
def test_cni_versions_negotiation(cni_version: str, cni_versions: list[str], chosen: str) -> None:
    conf = parse(conflist(version=cni_version, cniVersions=cni_versions))
    assert conf.cni_version == chosen
    assert conf.cni_versions == tuple(cni_versions)


@pytest.mark.parametrize(
    ("cni_version", "cni_versions"), [("0.2.0", []), ("2.0.0", ["1.2.0"]), ("0.1.0", ["0.2.0"])]
)
def test_no_supported_version_is_code_1(cni_version: str, cni_versions: list[str]) -> None:
    assert error_of(conflist(version=cni_version, cniVersions=cni_versions)).code == 1


def test_cni_versions_must_be_strings() -> None:
    err = error_of(conflist(cniVersions=["1.0.0", 1]))
    assert (err.code, err.msg) == (ErrorCode.INVALID_NETWORK_CONFIG, "invalid cniVersions[1]")


def test_missing_cni_version_is_code_7() -> None:
    doc = conflist()
    del doc["cniVersion"]
    err = error_of(doc)
    assert (err.code, err.msg) == (ErrorCode.INVALID_NETWORK_CONFIG, "invalid cniVersion")


@pytest.mark.parametrize(
    "key",
    [
        "runtimeConfig",
        "args",
        "cni.dev/valid-attachments",
        "cni.dev/attachments",
        "cni.dev/anything",
    ],
)
def test_reserved_keys_are_refused(key: str) -> None:
    plugins = [{"type": "bridge"}, {"type": "portmap", key: {}}]
    err = error_of(conflist(plugins=plugins))
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert err.msg == f"invalid plugins[1].{key}"


def test_reserved_keys_are_refused_in_a_single_plugin_conf() -> None:
    err = error_of({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "runtimeConfig": {}})
    assert err.msg == "invalid plugins[0].runtimeConfig"


def test_similar_but_unreserved_keys_pass() -> None:
    plugin = {"type": "bridge", "cni.devx": 1, "runtimeconfig": {}, "arguments": {}}
    assert parse(conflist(plugins=[plugin])).plugins == (plugin,)


@pytest.mark.parametrize("kind", ["../bridge", "/opt/cni/bin/bridge", "a/b", "a\\b", ".", ".."])
def test_type_with_path_separator_is_refused(kind: str) -> None:
    err = error_of(conflist(plugins=[{"type": kind}]))
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert err.msg == "invalid plugins[0].type"


@pytest.mark.parametrize(
    ("plugins", "field"),
    [
        ([{"bridge": "x"}], "plugins[0].type"),
        ([{"type": ""}], "plugins[0].type"),
        ([{"type": 5}], "plugins[0].type"),
        ([{"type": "a"}, "bridge"], "plugins[1]"),
        ([], "plugins"),
        ({"type": "a"}, "plugins"),
        ([{"type": "a", "capabilities": {"portMappings": "yes"}}], "plugins[0].capabilities"),
        ([{"type": "a", "capabilities": ["portMappings"]}], "plugins[0].capabilities"),
    ],
)
def test_bad_plugins_name_the_field(plugins: Any, field: str) -> None:
    err = error_of(conflist(plugins=plugins))
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert err.msg == f"invalid {field}"


def test_missing_plugins_is_refused() -> None:
    assert error_of({"cniVersion": "1.0.0", "name": "n"}).msg == "invalid plugins"


@pytest.mark.parametrize("name", ["a/b", "..", "", "net\n", "-x", "x" * 256, "a\x00b"])
def test_bad_network_name_is_code_7(name: str) -> None:
    err = error_of(conflist(name=name))
    assert err.code == ErrorCode.INVALID_NETWORK_CONFIG


@pytest.mark.parametrize("data", [b"{", b"", b"\xff", b"{'a': 1}", b"[" * 100_000])
def test_undecodable_is_code_6(data: bytes) -> None:
    with pytest.raises(CNIError) as info:
        parse_conflist(data, "x.conflist")
    assert info.value.code == ErrorCode.DECODING_FAILURE
    assert "x.conflist" in info.value.msg


@pytest.mark.parametrize("data", [b"[]", b"1", b"null", b'"net"'])
def test_non_object_is_code_6(data: bytes) -> None:
    with pytest.raises(CNIError) as info:
        parse_conflist(data)
    assert info.value.code == ErrorCode.DECODING_FAILURE


def test_conflist_is_frozen() -> None:
    conf = parse(conflist())
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.name = "other"


# ---- files and directories -------------------------------------------------------------------


def test_load_conflist_file(tmp_path: Path) -> None:
    path = write(tmp_path, "10-net.conflist", conflist())
    conf = load_conflist_file(str(path))
    assert conf.source == str(path)
    assert conf.raw == path.read_bytes()


def test_load_missing_file_is_code_5(tmp_path: Path) -> None:
    with pytest.raises(CNIError) as info:
        load_conflist_file(str(tmp_path / "nope.conflist"))
    assert info.value.code == ErrorCode.IO_FAILURE


def test_first_in_lexical_order_wins(tmp_path: Path) -> None:
    write(tmp_path, "9-net.conflist", conflist(plugins=[{"type": "nine"}]))
    write(tmp_path, "10-net.conflist", conflist(plugins=[{"type": "ten"}]))  # "10" < "9"
    write(tmp_path, "20-net.conflist", conflist(plugins=[{"type": "twenty"}]))
    conf = find_conflist(str(tmp_path), "net")
    assert conf.plugin_types == ("ten",)
    assert conf.source == str(tmp_path / "10-net.conflist")


def test_conflist_before_single_plugin_files(tmp_path: Path) -> None:
    write(tmp_path, "00-net.conf", {"cniVersion": "1.0.0", "name": "net", "type": "conf"})
    write(tmp_path, "00-net.json", {"cniVersion": "1.0.0", "name": "net", "type": "json"})
    write(tmp_path, "99-net.conflist", conflist(plugins=[{"type": "list"}]))
    assert find_conflist(str(tmp_path), "net").plugin_types == ("list",)


def test_single_plugin_files_in_lexical_order(tmp_path: Path) -> None:
    write(tmp_path, "20-net.conf", {"cniVersion": "1.0.0", "name": "net", "type": "conf"})
    write(tmp_path, "10-net.json", {"cniVersion": "1.0.0", "name": "net", "type": "json"})
    conf = find_conflist(str(tmp_path), "net")
    assert conf.plugin_types == ("json",)
    assert conf.cni_version == "1.0.0"


@pytest.mark.parametrize(
    "filename", ["net.conflist.bak", "net.conf~", "net.txt", "net", "net.yaml"]
)
def test_other_extensions_are_ignored(tmp_path: Path, filename: str) -> None:
    write(tmp_path, filename, conflist())
    with pytest.raises(CNIError):
        find_conflist(str(tmp_path), "net")


@pytest.mark.parametrize(
    "broken",
    [
        b"{",
        b"",
        json.dumps(conflist(plugins=[{"type": "../evil"}])).encode(),
        json.dumps(conflist(version="0.1.0")).encode(),
        json.dumps(conflist(plugins=[{"type": "x", "runtimeConfig": {}}])).encode(),
    ],
)
def test_broken_file_is_skipped(tmp_path: Path, broken: bytes) -> None:
    write(tmp_path, "00-net.conflist", broken)
    write(tmp_path, "50-other.conflist", conflist(name="other"))
    write(tmp_path, "99-net.conflist", conflist(plugins=[{"type": "good"}]))
    assert find_conflist(str(tmp_path), "net").plugin_types == ("good",)


def test_unreadable_entry_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "00-net.conflist").mkdir()  # a directory with a conflist's name
    write(tmp_path, "10-net.conflist", conflist())
    assert find_conflist(str(tmp_path), "net").source == str(tmp_path / "10-net.conflist")


def test_name_is_matched_exactly(tmp_path: Path) -> None:
    write(tmp_path, "10-a.conflist", conflist(name="net-a"))
    write(tmp_path, "20-b.conflist", conflist(name="net"))
    assert find_conflist(str(tmp_path), "net").source == str(tmp_path / "20-b.conflist")
    assert find_conflist(str(tmp_path), "net-a").source == str(tmp_path / "10-a.conflist")


def test_missing_network_is_code_7_naming_it(tmp_path: Path) -> None:
    write(tmp_path, "10-net.conflist", conflist())
    with pytest.raises(CNIError) as info:
        find_conflist(str(tmp_path), "ghost")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "'ghost'" in info.value.msg
    assert str(tmp_path) in info.value.details


def test_missing_dir_is_a_missing_network(tmp_path: Path) -> None:
    with pytest.raises(CNIError) as info:
        find_conflist(str(tmp_path / "nowhere"), "net")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert list_networks(str(tmp_path / "nowhere")) == []


def test_list_networks_in_libcni_order(tmp_path: Path) -> None:
    write(tmp_path, "30-c.conf", {"cniVersion": "1.0.0", "name": "c", "type": "x"})
    write(tmp_path, "20-b.conflist", conflist(name="b"))
    write(tmp_path, "10-a.conflist", conflist(name="a"))
    write(tmp_path, "05-broken.conflist", b"{")
    write(tmp_path, "00-d.json", {"cniVersion": "1.0.0", "name": "d", "type": "x"})
    assert [c.name for c in list_networks(str(tmp_path))] == ["a", "b", "d", "c"]
