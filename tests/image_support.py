"""Image archives the tests write themselves: layers member by member, in Docker's archive
format (``docker save``/``podman save --format docker-archive``) or an OCI image layout
(directory or tar, ``podman save --format oci-archive``). Nothing is pulled.

Bad archives are made by hand from the same parts: a member named ``../x``, a layer whose
bytes no longer match its diff id, a manifest naming a file the archive lacks.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

DEFAULT_NAME: Final = "localhost/test:latest"
PATH_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- layer members


@dataclass(frozen=True)
class Entry:
    """One tar member of a layer, written exactly as given (names are not cleaned)."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    target: str = ""  # a link's
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: Mapping[str, str] = field(default_factory=dict)


def file(name: str, data: bytes | str = b"", *, mode: int = 0o644, uid: int = 0,
         gid: int = 0) -> Entry:
    raw = data.encode() if isinstance(data, str) else data
    return Entry(name, data=raw, mode=mode, uid=uid, gid=gid)


def directory(name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(name, kind=tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, kind=tarfile.SYMTYPE, target=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, kind=tarfile.LNKTYPE, target=target)


def whiteout(path: str) -> Entry:
    """Hides ``path`` of the layers below (``dir/.wh.name``)."""
    head, _, base = path.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}", mode=0o600)


def opaque(directory_path: str) -> Entry:
    """Hides everything below in ``directory_path`` (``dir/.wh..wh..opq``)."""
    return file(f"{directory_path}/.wh..wh..opq", mode=0o600)


def layer_tar(entries: Sequence[Entry]) -> bytes:
    """An uncompressed layer: PAX format, mtime 0 (reproducible)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type, info.mode, info.uid, info.gid = entry.kind, entry.mode, entry.uid, entry.gid
            info.linkname, info.size, info.mtime = entry.target, len(entry.data), 0
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs.items()}
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def rootfs_layer(rootfs: Path, only: Callable[[Path], bool] = lambda _path: True) -> bytes:
    """A directory tree (the paths ``only`` keeps, relative to ``rootfs``) as one uncompressed
    layer: root-owned, numeric, mtime 0."""

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(rootfs.rglob("*")):
            if only(entry.relative_to(rootfs)):
                tar.add(entry, arcname=str(entry.relative_to(rootfs)), recursive=False,
                        filter=normalize)
    return buf.getvalue()


# --------------------------------------------------------------------------- images


@dataclass
class Image:
    """Uncompressed layers (bottom first) and the ``config`` part of an image config."""

    layers: list[bytes]
    config: dict[str, Any] = field(default_factory=lambda: {"Env": [PATH_ENV]})
    name: str = DEFAULT_NAME
    created: str = "1970-01-01T00:00:00Z"

    def config_bytes(self) -> bytes:
        return json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": self.created,
                "config": self.config,
                "rootfs": {"type": "layers",
                           "diff_ids": [f"sha256:{sha256(layer)}" for layer in self.layers]},
                "history": [{"created": self.created, "created_by": "pycni tests"}
                            for _ in self.layers],
            },
            sort_keys=True,
        ).encode()

    @property
    def id(self) -> str:
        return f"sha256:{sha256(self.config_bytes())}"


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_tar(out: Path, members: Mapping[str, bytes]) -> Path:
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            _member(tar, name, data)
    return out


def docker_archive_members(images: Sequence[Image], *,
                           blob: Callable[[int, bytes], bytes] = lambda _i, b: b,
                           ) -> dict[str, bytes]:
    """Docker's layout (podman's names): ``<diff id>.tar`` per layer, ``<config id>.json``,
    ``manifest.json``. ``blob(index, layer)`` may change what is stored for a layer."""
    members: dict[str, bytes] = {}
    manifest = []
    for image in images:
        config = image.config_bytes()
        names = []
        for index, layer in enumerate(image.layers):
            names.append(f"{sha256(layer)}.tar")
            members[names[-1]] = blob(index, layer)
        members[f"{sha256(config)}.json"] = config
        manifest.append({"Config": f"{sha256(config)}.json", "RepoTags": [image.name],
                         "Layers": names})
    members["manifest.json"] = json.dumps(manifest).encode()
    return members


def write_docker_archive(image: Image, out: Path) -> Path:
    return write_tar(out, docker_archive_members([image]))


def _descriptor(media: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media, "digest": f"sha256:{sha256(data)}", "size": len(data), **extra}


def oci_layout_members(image: Image, *, compress: bool = True,
                       annotations: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """An OCI image layout: ``oci-layout``, ``index.json``, ``blobs/sha256/*`` (gzip layers
    as podman writes them, mtime 0 so the bytes are reproducible). ``annotations`` of the
    manifest in the index: the image's name as ``org.opencontainers.image.ref.name`` unless
    given."""
    config = image.config_bytes()
    blobs = [gzip.compress(layer, mtime=0) if compress else layer for layer in image.layers]
    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [_descriptor(media, b) for b in blobs],
    }).encode()
    index = {"schemaVersion": 2, "manifests": [_descriptor(
        "application/vnd.oci.image.manifest.v1+json", manifest,
        annotations=dict(annotations or {"org.opencontainers.image.ref.name": image.name}))]}
    members = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
               "index.json": json.dumps(index).encode()}
    for data in (config, manifest, *blobs):
        members[f"blobs/sha256/{sha256(data)}"] = data
    return members


def write_oci_archive(image: Image, out: Path, *, compress: bool = True) -> Path:
    return write_tar(out, oci_layout_members(image, compress=compress))


def write_oci_dir(image: Image, out: Path, *, compress: bool = True) -> Path:
    for name, data in oci_layout_members(image, compress=compress).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return out
