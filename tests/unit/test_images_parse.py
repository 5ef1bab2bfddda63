"""pycni-run images, the pure parts: references, image configs and how `run` merges them,
archive manifests (read from a directory, no root), layer member names, chain ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pycni_run.errors import RunError
from pycni_run.images import refs
from pycni_run.images.config import ExposedPort, apply_config, parse_config
from pycni_run.images.digests import Digest, chain_ids, parse_digest
from pycni_run.images.manifest import read_plans
from pycni_run.images.members import (
    MemberPath,
    check_symlink_target,
    member_path,
    whiteout_of,
)
from pycni_run.images.source import open_source
from pycni_run.spec import ContainerSpec

from tests.image_support import (
    Image,
    docker_archive_members,
    file,
    layer_tar,
    oci_layout_members,
)


def _config(run: dict[str, Any] | None = None, **top: Any) -> bytes:
    doc: dict[str, Any] = {"os": "linux", "config": run or {},
                           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}}
    doc.update(top)
    return json.dumps(doc).encode()


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("ref", "normal"),
    [("two", "two:latest"), ("two:1", "two:1"), ("localhost/two:1", "localhost/two:1"),
     ("registry:5000/a/b", "registry:5000/a/b:latest"), ("a.b-c_d:v1.2-x", "a.b-c_d:v1.2-x")],
)
def test_normalize(ref: str, normal: str) -> None:
    assert refs.normalize(ref) == normal


@pytest.mark.parametrize(
    "ref", ["", "UPPER", "a:", "a b", "a@sha256:" + "0" * 64, "-a", "a:" + "x" * 129]
)
def test_normalize_refuses(ref: str) -> None:
    with pytest.raises(RunError):
        refs.normalize(ref)


def test_a_short_name_also_means_podman_and_docker_hub_names() -> None:
    assert refs.candidates("two") == ["two:latest", "localhost/two:latest",
                                      "docker.io/library/two:latest"]
    assert refs.candidates("org/app:1")[-1] == "docker.io/org/app:1"
    assert refs.candidates("localhost/two:1") == ["localhost/two:1"]


# --------------------------------------------------------------------------- image config


def test_parse_config_reads_what_run_uses() -> None:
    config = parse_config(_config({
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["id"], "Env": ["A=1", "B=x=y"],
        "WorkingDir": "/srv", "User": "app:grp",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "9000-9002": {}},
    }, created="2026-01-02T03:04:05.123456789Z"))
    assert config.entrypoint == ("/bin/sh", "-c")
    assert config.cmd == ("id",)
    assert config.env == (("A", "1"), ("B", "x=y"))
    assert (config.workdir, config.user) == ("/srv", "app:grp")
    assert config.exposed == (ExposedPort(53, "udp"), ExposedPort(80), ExposedPort(9000),
                              ExposedPort(9001), ExposedPort(9002))
    assert config.diff_ids == (Digest("a" * 64),)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "object"),
        (_config({"Cmd": "id"}), "Cmd must be a list"),
        (_config({"Env": ["NOEQUALS"]}), "KEY=VALUE"),
        (_config({"ExposedPorts": {"99999/tcp": {}}}), "ExposedPorts"),
        (_config({"ExposedPorts": {"1-65535/tcp": {}}}), "ExposedPorts"),
        (_config({"ExposedPorts": {"80/icmp": {}}}), "ExposedPorts"),
        (_config(os="windows"), "not linux"),
        (_config(rootfs={"type": "layers", "diff_ids": ["md5:00"]}), "unsupported digest"),
        (_config(rootfs={"type": "layers", "diff_ids": ["sha256:xyz"]}), "malformed"),
        (_config(rootfs={"type": "other"}), "rootfs"),
    ],
)
def test_parse_config_refuses(data: bytes, message: str) -> None:
    with pytest.raises(RunError, match=message):
        parse_config(data)


def _spec(**kw: Any) -> ContainerSpec:
    base: dict[str, Any] = {"name": "c", "id": "0" * 64, "image": "app", "command": ()}
    return ContainerSpec(**{**base, **kw})


IMAGE_CONFIG = parse_config(_config({
    "Entrypoint": ["/entry"], "Cmd": ["default"], "Env": ["PATH=/img", "A=image"],
    "WorkingDir": "/srv", "User": "app",
}))


def test_apply_config_fills_what_the_command_line_left() -> None:
    spec = apply_config(_spec(), IMAGE_CONFIG)
    assert spec.command == ("/entry", "default")
    assert dict(spec.env) == {"PATH": "/img", "A": "image"}
    assert (spec.workdir, spec.user) == ("/srv", "app")


def test_apply_config_command_line_wins() -> None:
    spec = apply_config(_spec(command=("arg",), env=(("A", "cli"),), workdir="/w", user="0"),
                        IMAGE_CONFIG)
    assert spec.command == ("/entry", "arg")  # CMD replaces Cmd, Entrypoint stays
    assert dict(spec.env) == {"PATH": "/img", "A": "cli"}
    assert (spec.workdir, spec.user) == ("/w", "0")


def test_entrypoint_flag_replaces_entrypoint_and_drops_cmd() -> None:
    assert apply_config(_spec(entrypoint=("/bin/ls",)), IMAGE_CONFIG).command == ("/bin/ls",)
    assert apply_config(_spec(entrypoint=(), command=("x",)), IMAGE_CONFIG).command == ("x",)
    with pytest.raises(RunError, match="no command specified"):
        apply_config(_spec(entrypoint=()), IMAGE_CONFIG)


def test_a_relative_working_dir_is_read_from_the_root() -> None:
    config = parse_config(_config({"Cmd": ["x"], "WorkingDir": "app"}))
    assert apply_config(_spec(), config).workdir == "/app"
    assert apply_config(_spec(), parse_config(_config({"Cmd": ["x"]}))).workdir == "/"


# --------------------------------------------------------------------------- digests


def test_chain_ids_fold_the_diff_ids() -> None:
    a, b = Digest("a" * 64), Digest("b" * 64)
    second = hashlib.sha256(f"sha256:{'a' * 64} sha256:{'b' * 64}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, Digest(second)]
    assert parse_digest("sha256:" + "c" * 64, "x") == Digest("c" * 64)


# --------------------------------------------------------------------------- layer members


@pytest.mark.parametrize(
    ("name", "parts"),
    [("bin/sh", ("bin", "sh")), ("./bin//sh", ("bin", "sh")), ("./", ()), ("a/./b/", ("a", "b"))],
)
def test_member_path(name: str, parts: tuple[str, ...]) -> None:
    assert member_path(name, "L").parts == parts


@pytest.mark.parametrize(
    ("name", "message"),
    [("/etc/passwd", "absolute"), ("../x", "out of the layer"), ("a/../../x", "out of the layer"),
     ("a/" + "x" * 256, "longer than 255")],
)
def test_member_path_refuses(name: str, message: str) -> None:
    with pytest.raises(RunError, match=message):
        member_path(name, "sha256:abc")


def test_whiteout_names() -> None:
    assert whiteout_of(member_path("a/.wh.b", "L")) == ("file", MemberPath(("a", "b")))
    assert whiteout_of(member_path("a/.wh..wh..opq", "L")) == ("opaque", MemberPath(("a",)))
    assert whiteout_of(member_path(".wh..wh.plnk", "L"))[0] == "meta"  # type: ignore[index]
    assert whiteout_of(member_path("a/b.wh.c", "L")) is None


@pytest.mark.parametrize("target", ["/etc", "../b", "x/../../a", "/..", "sh"])
def test_symlink_targets_inside_the_layer_or_absolute(target: str) -> None:
    check_symlink_target(member_path("a/link", "L"), target, "L")


@pytest.mark.parametrize("target", ["../../etc", "x/../../..", ""])
def test_symlink_targets_out_of_the_layer(target: str) -> None:
    with pytest.raises(RunError):
        check_symlink_target(member_path("a/link", "L"), target, "L")


# --------------------------------------------------------------------------- manifests


def _write_dir(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


IMAGE = Image(layers=[layer_tar([file("a", "1")]), layer_tar([file("b", "2")])],
              config={"Cmd": ["x"]}, name="localhost/two:1")


@pytest.mark.parametrize("layout", ["docker", "oci"])
def test_read_plans_of_both_layouts(tmp_path: Path, layout: str) -> None:
    members = (docker_archive_members([IMAGE]) if layout == "docker"
               else oci_layout_members(IMAGE))
    with open_source(str(_write_dir(tmp_path, members)), str(tmp_path)) as source:
        (plan,) = read_plans(source)
    assert plan.tags == ("localhost/two:1",)
    assert str(plan.config.digest) == IMAGE.id
    assert len(plan.layers) == 2
    if layout == "oci":  # the blob digests are known (of the gzip bytes)
        assert all(layer.digest is not None and layer.size for layer in plan.layers)


def test_read_plans_refuses_what_names_nothing_or_is_missing(tmp_path: Path) -> None:
    cases: dict[str, tuple[dict[str, bytes], str]] = {
        "empty manifest": ({"manifest.json": b"[]"}, "names no image"),
        "empty index": ({"index.json": b'{"schemaVersion": 2, "manifests": []}'},
                        "names no image"),
        "nothing": ({"x": b""}, "no manifest.json"),
        "missing layer": ({k: v for k, v in docker_archive_members([IMAGE]).items()
                           if not k.endswith(".tar") or k.startswith(hashlib.sha256(
                               IMAGE.layers[0]).hexdigest())}, "is not in the archive"),
        "no layers": ({"manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]).encode(),
                       "c.json": b"{}"}, "names no layers"),
        "escaping name": ({"manifest.json": json.dumps(
            [{"Config": "../c.json", "Layers": ["l.tar"]}]).encode()}, "out of the image"),
    }
    for label, (members, message) in cases.items():
        root = tmp_path / label.replace(" ", "-")
        root.mkdir()
        with open_source(str(_write_dir(root, members)), str(tmp_path)) as source, \
                pytest.raises(RunError, match=message):
            read_plans(source)


def test_an_oci_manifest_must_match_its_digest(tmp_path: Path) -> None:
    members = oci_layout_members(IMAGE)
    index = json.loads(members["index.json"])
    manifest_name = f"blobs/sha256/{index['manifests'][0]['digest'].split(':')[1]}"
    members[manifest_name] = members[manifest_name].replace(b'"schemaVersion": 2',
                                                            b'"schemaVersion":  2')
    with open_source(str(_write_dir(tmp_path, members)), str(tmp_path)) as source, \
            pytest.raises(RunError, match="is corrupt"):
        read_plans(source)
