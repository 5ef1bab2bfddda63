"""The images an archive holds: Docker's ``manifest.json`` or an OCI layout's ``index.json``.

Each becomes an ``ImagePlan``: where its config and its layers are in the source, with the
digest each must have when it is known (an OCI descriptor's, or a ``blobs/sha256/<hex>``
name's), and the names to tag it with. Nothing is read but JSON documents; every blob a plan
names must exist before ``load`` unpacks anything. A docker archive's manifest wins when both
are present (Docker 25 writes both, and only the manifest carries ``RepoTags`` for all).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pycni_run.errors import RunError
from pycni_run.images import refs
from pycni_run.images.digests import Digest, is_hex_digest, parse_digest
from pycni_run.images.source import Source

__all__ = ["BlobRef", "ImagePlan", "read_blob", "read_plans"]

MAX_JSON_BYTES: Final = 4 << 20
MAX_LAYERS: Final = 128  # Docker's limit (overlay itself stacks up to 500)
_MANIFEST_TYPES: Final = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEX_TYPES: Final = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_NAME_ANNOTATIONS: Final = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_HOST_ARCH: Final = "amd64"


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRef:
    path: str  # inside the source
    digest: Digest | None = None  # what the stored bytes must hash to, when known
    size: int | None = None

    def __str__(self) -> str:
        return str(self.digest) if self.digest else self.path


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePlan:
    config: BlobRef
    layers: tuple[BlobRef, ...]
    tags: tuple[str, ...] = ()


def read_blob(source: Source, name: str, digest: Digest | None = None) -> bytes:
    """A small document, checked against its digest when that is known."""
    with source.open(name) as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise RunError(f"{name}: larger than {MAX_JSON_BYTES} bytes")
    if digest is not None and Digest.of(data) != digest:
        raise RunError(f"{digest} is corrupt: its content hashes to {Digest.of(data)}")
    return data


def read_json(source: Source, name: str, digest: Digest | None = None) -> Any:
    data = read_blob(source, name, digest)
    try:
        return json.loads(data)
    except ValueError as err:
        raise RunError(f"{name} is not JSON: {err}") from None


def _blob_path(digest: Digest) -> str:
    return f"blobs/sha256/{digest.hex}"


def _digest_in_name(path: str) -> Digest | None:
    """``blobs/sha256/<hex>`` names the digest of what it holds."""
    head, base = posixpath.split(path)
    return Digest(base) if head.endswith("sha256") and is_hex_digest(base) else None


def _tags(names: object, where: str) -> tuple[str, ...]:
    if names is None:
        return ()
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RunError(f"{where}: RepoTags must be a list of strings")
    return tuple(refs.normalize(n) for n in names)


def _docker_plan(entry: object, index: int) -> ImagePlan:
    where = f"manifest.json[{index}]"
    if not isinstance(entry, dict):
        raise RunError(f"{where}: must be an object")
    config, layers = entry.get("Config"), entry.get("Layers")
    if not isinstance(config, str) or not config:
        raise RunError(f"{where}: names no Config")
    if not isinstance(layers, list) or not all(isinstance(p, str) and p for p in layers):
        raise RunError(f"{where}: Layers must be a list of paths")
    stem = posixpath.basename(config).removesuffix(".json")
    config_digest = Digest(stem) if is_hex_digest(stem) else _digest_in_name(config)
    return ImagePlan(
        config=BlobRef(path=config, digest=config_digest),
        layers=tuple(BlobRef(path=p, digest=_digest_in_name(p)) for p in layers),
        tags=_tags(entry.get("RepoTags"), where),
    )


def _descriptor(doc: object, where: str) -> tuple[BlobRef, str, dict[str, Any]]:
    """An OCI descriptor: (blob, media type, the whole descriptor)."""
    if not isinstance(doc, dict):
        raise RunError(f"{where}: a descriptor must be an object")
    digest = parse_digest(doc.get("digest"), where)
    size = doc.get("size")
    if not isinstance(size, int) or size < 0:
        raise RunError(f"{where}: descriptor without a valid size")
    media = doc.get("mediaType", "")
    if not isinstance(media, str) or "encrypted" in media:
        raise RunError(f"{where}: unsupported media type {media!r}")
    return BlobRef(path=_blob_path(digest), digest=digest, size=size), media, doc


def _oci_tags(desc: dict[str, Any]) -> tuple[str, ...]:
    notes = desc.get("annotations") or {}
    for key in _NAME_ANNOTATIONS:
        name = notes.get(key) if isinstance(notes, dict) else None
        if isinstance(name, str) and name:
            return (refs.normalize(name),)
    return ()


def _wanted(desc: dict[str, Any]) -> bool:
    """A platform-specific manifest of a multi-platform index: this machine's only."""
    platform = desc.get("platform")
    if not isinstance(platform, dict):
        return True
    return platform.get("os", "linux") == "linux" and platform.get("architecture") in (
        None, _HOST_ARCH)


def _oci_manifest(doc: Any, where: str, tags: tuple[str, ...]) -> ImagePlan:
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise RunError(f"{where}: not an image manifest (schemaVersion 2)")
    config, _, _ = _descriptor(doc.get("config"), f"{where}: config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RunError(f"{where}: layers must be a list")
    found = tuple(_descriptor(d, f"{where}: layers[{i}]")[0] for i, d in enumerate(layers))
    return ImagePlan(config=config, layers=found, tags=tags)


def _oci_plans(index: Any, where: str, read: Callable[[BlobRef], Any],
               depth: int = 0) -> list[ImagePlan]:
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise RunError(f"{where}: not an image index (no manifests list)")
    plans: list[ImagePlan] = []
    for i, item in enumerate(index["manifests"]):
        blob, media, desc = _descriptor(item, f"{where}: manifests[{i}]")
        if media in _INDEX_TYPES and depth < 2:
            plans += _oci_plans(read(blob), str(blob), read, depth + 1)
        elif (media in _MANIFEST_TYPES or not media) and _wanted(desc):
            plans.append(_oci_manifest(read(blob), str(blob), _oci_tags(desc)))
    return plans


def read_plans(source: Source) -> list[ImagePlan]:
    """Every image the source holds; RunError if it holds none or names what it lacks."""
    if source.exists("manifest.json"):
        where, doc = "manifest.json", read_json(source, "manifest.json")
        if not isinstance(doc, list):
            raise RunError("manifest.json must be a list of images")
        plans = [_docker_plan(entry, i) for i, entry in enumerate(doc)]
    elif source.exists("index.json"):
        where = "index.json"
        plans = _oci_plans(read_json(source, "index.json"), where,
                           lambda blob: read_json(source, blob.path, blob.digest))
    else:
        raise RunError("not an image archive: no manifest.json (docker) or index.json (OCI)")
    if not plans:
        raise RunError(f"{where} names no image")
    for plan in plans:
        _check_present(source, plan, where)
    return plans


def _check_present(source: Source, plan: ImagePlan, where: str) -> None:
    if not plan.layers:
        raise RunError(f"{where}: image {plan.config} names no layers")
    if len(plan.layers) > MAX_LAYERS:
        raise RunError(f"{where}: image {plan.config} has {len(plan.layers)} layers, more "
                       f"than {MAX_LAYERS}")
    for blob in (plan.config, *plan.layers):
        if not source.exists(blob.path):
            raise RunError(f"{where}: {blob.path} (named by the manifest) is not in the archive")
