"""`pycni-run load`, `images`, `rmi`: archives the tests write, unpacked into a private store
(root: whiteouts are 0/0 character devices and trusted.* xattrs). No container is started, so
nothing here needs the runtime sandbox: everything lives in the test's own directory."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.image_support import (
    Entry,
    Image,
    directory,
    docker_archive_members,
    file,
    hardlink,
    layer_tar,
    oci_layout_members,
    opaque,
    sha256,
    symlink,
    whiteout,
    write_docker_archive,
    write_oci_archive,
    write_oci_dir,
    write_tar,
)

BASE = layer_tar([
    directory("data"), file("data/a", "lower a\n"), file("data/b", "lower b\n"),
    directory("op"), file("op/old", "old\n"), symlink("abs", "/data/b"),
    file("bin/tool", "#!/bin/sh\n", mode=0o4755, uid=1000, gid=1001),
    hardlink("bin/same", "bin/tool"),
])
TOP = layer_tar([
    whiteout("data/a"), opaque("op"), file("op/new", "new\n"), file("data/c", "upper c\n"),
])
IMAGE = Image(layers=[BASE, TOP], config={"Cmd": ["sh"]}, name="localhost/two:1")


def pycni_run(
    store: Path, *args: str, stdin: bytes | None = None, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycni_run.cli", "--image-store", str(store), *args],
        input=stdin.decode("latin-1") if stdin is not None else None,
        capture_output=True, text=True, check=False, timeout=120,
        encoding="latin-1" if stdin is not None else None, umask=umask,
    )


def load(store: Path, archive: Path) -> str:
    ran = pycni_run(store, "load", "-i", str(archive))
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def layer_dir(store: Path, chain_id: str) -> Path:
    return store / "layers" / chain_id.removeprefix("sha256:") / "diff"


def inspect(store: Path, ref: str) -> dict[str, object]:
    ran = pycni_run(store, "image", "inspect", ref)
    assert ran.returncode == 0, ran.stderr
    doc: dict[str, object] = json.loads(ran.stdout)[0]
    return doc


def store_contents(store: Path) -> list[str]:
    """Everything the store holds but its lock file and (empty) directories."""
    return sorted(str(p.relative_to(store)) for p in store.rglob("*")
                  if not p.is_dir() or p.is_symlink())


def test_whiteouts_become_overlays_own(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert load(store, write_docker_archive(IMAGE, tmp_path / "two.tar")) == (
        "Loaded image: localhost/two:1\n")
    doc = inspect(store, "two:1")
    assert doc["Id"] == IMAGE.id
    base_id, top_id = doc["GraphDriver"]["Data"]["ChainIDs"]  # type: ignore[index]
    assert base_id == f"sha256:{sha256(BASE)}"  # the first chain id is the diff id
    top = layer_dir(store, top_id)
    gone = os.lstat(top / "data" / "a")
    assert stat.S_ISCHR(gone.st_mode)
    assert gone.st_rdev == os.makedev(0, 0)
    assert os.getxattr(top / "op", "trusted.overlay.opaque") == b"y"
    assert not (top / "op" / ".wh..wh..opq").exists()
    assert not (top / "data" / ".wh.a").exists()
    base = layer_dir(store, base_id)
    tool = os.lstat(base / "bin" / "tool")
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o4755, 1000, 1001)
    assert os.lstat(base / "bin" / "same").st_ino == tool.st_ino
    assert os.readlink(base / "abs") == "/data/b"
    links = doc["GraphDriver"]["Data"]["Links"]  # type: ignore[index]
    assert [os.readlink(store / "l" / link) for link in links] == [
        f"../layers/{c.removeprefix('sha256:')}/diff" for c in (base_id, top_id)]


def test_directories_a_layer_only_implies_let_everyone_in(tmp_path: Path) -> None:
    image = Image(layers=[layer_tar([file("deep/er/file", "x", mode=0o644)])],
                  config={"Cmd": ["x"]})
    ran = pycni_run(tmp_path / "store", "load", "-i",
                    str(write_docker_archive(image, tmp_path / "i.tar")), umask=0o077)
    assert ran.returncode == 0, ran.stderr
    (layer,) = (tmp_path / "store" / "layers").iterdir()
    for path in ("diff", "diff/deep", "diff/deep/er"):
        assert stat.S_IMODE(os.stat(layer / path).st_mode) == 0o755, path
    assert stat.S_IMODE(os.stat(layer / "diff/deep/er/file").st_mode) == 0o644


@pytest.mark.parametrize("layout", ["oci-archive", "oci-dir", "stdin"])
def test_every_layout_loads_the_same_layers(tmp_path: Path, layout: str) -> None:
    store = tmp_path / "store"
    load(store, write_docker_archive(IMAGE, tmp_path / "two.tar"))
    before = {p: p.stat().st_ino for p in (store / "layers").iterdir()}
    if layout == "oci-archive":
        load(store, write_oci_archive(IMAGE, tmp_path / "oci.tar"))
    elif layout == "oci-dir":
        (tmp_path / "oci").mkdir()
        load(store, write_oci_dir(IMAGE, tmp_path / "oci"))
    else:
        ran = pycni_run(store, "load", stdin=(tmp_path / "two.tar").read_bytes())
        assert ran.returncode == 0, ran.stderr
    assert {p: p.stat().st_ino for p in (store / "layers").iterdir()} == before  # not again
    assert pycni_run(store, "images", "-q").stdout.split() == [IMAGE.id[7:19]]


def test_a_layer_of_a_fresh_store_comes_from_gzip(tmp_path: Path) -> None:
    store = tmp_path / "store"
    load(store, write_oci_archive(IMAGE, tmp_path / "oci.tar"))
    top = inspect(store, "two:1")["GraphDriver"]["Data"]["ChainIDs"][1]  # type: ignore[index]
    assert (layer_dir(store, top) / "op" / "new").read_text() == "new\n"
    record = json.loads((layer_dir(store, top).parent / "layer.json").read_text())
    assert record["digest"] == f"sha256:{sha256(gzip.compress(TOP, mtime=0))}"


def _corrupt(data: bytes) -> bytes:
    return data.replace(b"upper c", b"UPPER c")


def test_a_corrupted_layer_is_refused_naming_its_digest(tmp_path: Path) -> None:
    store = tmp_path / "store"
    members = docker_archive_members([IMAGE], blob=lambda i, b: _corrupt(b) if i == 1 else b)
    ran = pycni_run(store, "load", "-i", str(write_tar(tmp_path / "bad.tar", members)))
    assert ran.returncode == 125
    assert f"layer sha256:{sha256(TOP)}" in ran.stderr
    assert "is corrupt" in ran.stderr
    oci = oci_layout_members(IMAGE)
    blob = f"sha256:{sha256(gzip.compress(TOP, mtime=0))}"
    oci[f"blobs/sha256/{blob[7:]}"] = gzip.compress(_corrupt(TOP), mtime=0)
    ran = pycni_run(store, "load", "-i", str(write_tar(tmp_path / "bad-oci.tar", oci)))
    assert ran.returncode == 125
    assert f"layer {blob} is corrupt" in ran.stderr
    assert store_contents(store) == ["images.lock"]


def _bad_layer(*entries: Callable[[Path], Entry]) -> Callable[[Path, Path], Path]:
    """An archive whose top layer holds ``entries``, each made from ``trap``: a directory
    outside the store that a broken unpacker would write into (it must stay empty)."""
    def write(out: Path, trap: Path) -> Path:
        top = layer_tar([entry(trap) for entry in entries])
        return write_docker_archive(Image(layers=[BASE, top]), out)
    return write


def _up(trap: Path) -> str:
    """A relative path from a layer's directory (at most 12 deep) up to ``trap``."""
    return "../" * 12 + str(trap).lstrip("/")


def _without_layer(out: Path, _trap: Path) -> Path:
    members = docker_archive_members([IMAGE])
    del members[f"{sha256(TOP)}.tar"]
    return write_tar(out, members)


def _config_says_three_layers(out: Path, _trap: Path) -> Path:
    members = docker_archive_members([IMAGE])
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"] = manifest[0]["Layers"][:1]
    members["manifest.json"] = json.dumps(manifest).encode()
    return write_tar(out, members)


BAD_ARCHIVES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "dot-dot": (_bad_layer(lambda t: file(f"{_up(t)}/escape", "x")), "leads out of the layer"),
    "dot-dot-deep": (_bad_layer(lambda t: file(f"data/{_up(t)}/escape", "x")),
                     "leads out of the layer"),
    "absolute": (_bad_layer(lambda t: file(f"{t}/escape", "x")), "absolute path"),
    "symlink-out": (_bad_layer(lambda t: symlink("data/up", _up(t))), "points out of the layer"),
    "through-symlink": (_bad_layer(lambda t: symlink("etc", str(t)),
                                   lambda _t: file("etc/escape", "x")),
                        "goes through etc, a link"),
    "hardlink-out": (_bad_layer(lambda t: hardlink("x", f"{_up(t)}/victim")),
                     "leads out of the layer"),
    "hardlink-absent": (_bad_layer(lambda _t: hardlink("x", "etc/passwd")),
                        "not a file of this layer"),
    "device": (_bad_layer(lambda _t: Entry("dev/sda", kind=b"4")), "device node"),
    "missing-layer": (_without_layer, "is not in the archive"),
    "manifest-names-nothing": (lambda out, _t: write_tar(out, {"manifest.json": b"[]"}),
                               "names no image"),
    "layer-count": (_config_says_three_layers, "its config lists 2 layers, the manifest 1"),
    "not-a-tar": (lambda out, _t: (out.write_bytes(b"\x00" * 10), out)[1],
                  "not an image archive"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_input_is_refused_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    store = tmp_path / "store"
    good = Image(layers=[layer_tar([file("kept", "1")])], config={"Cmd": ["x"]},
                 name="localhost/kept:1")
    load(store, write_docker_archive(good, tmp_path / "good.tar"))
    before = store_contents(store)
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "victim").write_text("untouched\n")
    write, message = BAD_ARCHIVES[case]
    ran = pycni_run(store, "load", "-i", str(write(tmp_path / "bad.tar", trap)))
    assert ran.returncode == 125
    assert message in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr
    assert store_contents(store) == before
    assert not list((store / "tmp").iterdir())
    assert [p.name for p in trap.iterdir()] == ["victim"]
    assert os.stat(trap / "victim").st_nlink == 1


def test_layers_are_shared_and_collected_with_their_last_image(tmp_path: Path) -> None:
    store = tmp_path / "store"
    one = Image(layers=[BASE, layer_tar([file("one", "1")])], config={"Cmd": ["x"]},
                name="localhost/one:1")
    two = Image(layers=[BASE, layer_tar([file("two", "2")])], config={"Cmd": ["y"]},
                name="localhost/two:1")
    load(store, write_docker_archive(one, tmp_path / "one.tar"))
    load(store, write_docker_archive(two, tmp_path / "two.tar"))
    assert len(list((store / "layers").iterdir())) == 3  # BASE once
    assert len(list((store / "l").iterdir())) == 3
    ran = pycni_run(store, "rmi", "one:1")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[:2] == ["Untagged: localhost/one:1", f"Deleted: {one.id}"]
    assert len(list((store / "layers").iterdir())) == 2  # BASE stays for two
    assert pycni_run(store, "run", "one:1").returncode == 125
    ran = pycni_run(store, "rmi", two.id[7:19])  # by id prefix
    assert ran.returncode == 0, ran.stderr
    assert store_contents(store) == ["images.lock", "repositories.json"]
    assert json.loads((store / "repositories.json").read_text()) == {}


def test_rmi_of_one_name_of_several_only_untags(tmp_path: Path) -> None:
    store = tmp_path / "store"
    load(store, write_docker_archive(IMAGE, tmp_path / "a.tar"))
    other = Image(layers=IMAGE.layers, config=IMAGE.config, name="localhost/alias:2")
    load(store, write_docker_archive(other, tmp_path / "b.tar"))
    assert inspect(store, "alias:2")["RepoTags"] == ["localhost/alias:2", "localhost/two:1"]
    ran = pycni_run(store, "rmi", IMAGE.id)
    assert ran.returncode == 125
    assert "several names" in ran.stderr
    assert pycni_run(store, "rmi", "alias:2").stdout == "Untagged: localhost/alias:2\n"
    assert inspect(store, IMAGE.id)["RepoTags"] == ["localhost/two:1"]
    assert pycni_run(store, "rmi", "nosuch").returncode == 125
