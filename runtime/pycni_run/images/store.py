"""The image store: every layer unpacked once, images, their names; one lock file.

    <store>/busybox/rootfs/              the built-in image (rootfs.ensure_image)
    <store>/layers/<chain id>/diff/      one layer in overlay's format, by chain id: shared,
                                         read-only, by every image and container stacking it
    <store>/layers/<chain id>/layer.json its digests, size and short link name
    <store>/l/<LINK> -> ../layers/<chain id>/diff    the short names overlay mounts (podman's l/)
    <store>/images/<id>/config.json      the config blob as loaded (the id is its sha256)
    <store>/images/<id>/image.json       its layers (chain ids, bottom first) and their links
    <store>/repositories.json            {"NAME:TAG": "sha256:<id>"}
    <store>/tmp/                         loads in progress (each holds a flock) and removals
    <store>/images.lock                  lockf: shared while a run pins an image (until its
                                         state names it), exclusive to change the store

Nothing appears in layers/, l/, images/ or the names but by a rename or a symlink made under
the exclusive lock, all of one load at once (``commit``): a load that fails leaves only its
temporary directory, which it removes (or, killed, the next one sweeps). lockf, not flock: a
POSIX lock is not inherited by the container's init and the plugins that ``run`` forks. The
layer directories belong to the image's own uids; a user namespace (issue #20's item 2) will
stack idmapped mounts of them, never copies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pycni import atomicfile
from pycni_run.errors import RunError
from pycni_run.images import refs
from pycni_run.images.digests import Digest, is_hex_digest, parse_digest

__all__ = ["ImageRecord", "StagedImage", "StagedLayer", "Store"]

_LINK_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_LINK_LENGTH: Final = 16
_MIN_ID_PREFIX: Final = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedLayer:
    chain_id: Digest
    diff_id: Digest
    digest: Digest | None = None  # the blob's, as it came
    size: int = 0
    directory: str = ""  # its unpacked layer (diff/) in the load's temp dir; "" = in the store


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedImage:
    config: bytes  # the blob: its sha256 is the image id
    layers: tuple[StagedLayer, ...]  # bottom first
    names: tuple[str, ...] = ()

    @property
    def id(self) -> Digest:
        return Digest.of(self.config)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRecord:
    id: Digest
    layers: tuple[Digest, ...]  # chain ids, bottom first
    links: tuple[str, ...]  # their short names in l/, bottom first
    size: int
    loaded: float

    def to_json(self) -> str:
        return json.dumps({"id": str(self.id), "layers": [str(c) for c in self.layers],
                           "links": list(self.links), "size": self.size, "loaded": self.loaded})

    @classmethod
    def from_json(cls, text: str) -> ImageRecord:
        doc = json.loads(text)
        return cls(id=parse_digest(doc["id"], "image.json"),
                   layers=tuple(parse_digest(c, "image.json") for c in doc["layers"]),
                   links=tuple(doc["links"]), size=int(doc["size"]),
                   loaded=float(doc["loaded"]))


class Store:
    def __init__(self, root: str) -> None:
        self.root = root
        self.links_dir = os.path.join(root, "l")
        self._layers = os.path.join(root, "layers")
        self._images = os.path.join(root, "images")
        self._tmp = os.path.join(root, "tmp")
        self._tags = os.path.join(root, "repositories.json")

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, "images.lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # drops the lock

    # ------------------------------------------------------------------ reading

    def layer_dir(self, chain_id: Digest) -> str:
        return os.path.join(self._layers, chain_id.hex)

    def has_layer(self, chain_id: Digest) -> bool:
        return os.path.isfile(os.path.join(self.layer_dir(chain_id), "layer.json"))

    def _layer_doc(self, chain_id: Digest) -> dict[str, Any]:
        with open(os.path.join(self.layer_dir(chain_id), "layer.json")) as f:
            doc: dict[str, Any] = json.load(f)
        return doc

    def image(self, image_id: Digest) -> ImageRecord | None:
        try:
            with open(os.path.join(self._images, image_id.hex, "image.json")) as f:
                return ImageRecord.from_json(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, RunError) as err:
            raise RunError(f"image store: unreadable record of {image_id}: {err}") from err

    def config_bytes(self, image_id: Digest) -> bytes:
        with open(os.path.join(self._images, image_id.hex, "config.json"), "rb") as f:
            return f.read()

    def image_ids(self) -> list[Digest]:
        try:
            names = os.listdir(self._images)
        except FileNotFoundError:
            return []
        return sorted(Digest(n) for n in names if is_hex_digest(n))

    def tags(self) -> dict[str, Digest]:
        try:
            with open(self._tags) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise RunError(f"image store: unreadable {self._tags}: {err}") from err
        return {name: parse_digest(i, self._tags) for name, i in doc.items()}

    def tags_of(self, image_id: Digest) -> list[str]:
        return sorted(name for name, i in self.tags().items() if i == image_id)

    def find(self, ref: str) -> tuple[Digest, str]:
        """The id ``ref`` names, and the name it matched ("" for an id): a name
        (``refs.candidates``), an id or a unique prefix of one (at least 4 hex digits)."""
        tags = self.tags()
        with contextlib.suppress(RunError):  # not a valid name: maybe an id
            for name in refs.candidates(ref):
                if name in tags:
                    return tags[name], name
        wanted = ref.removeprefix("sha256:")
        if len(wanted) >= _MIN_ID_PREFIX and all(c in "0123456789abcdef" for c in wanted):
            found = [i for i in self.image_ids() if i.hex.startswith(wanted)]
            if len(found) == 1:
                return found[0], ""
            if found:
                raise RunError(f"image id prefix {ref} is ambiguous")
        raise RunError(f"no such image: {ref}")

    # ------------------------------------------------------------------ loading

    @contextlib.contextmanager
    def staging(self) -> Iterator[str]:
        """A private temporary directory for one load, flock'ed while it lives; gone after."""
        with self.locked(exclusive=True):
            os.makedirs(self._tmp, mode=0o700, exist_ok=True)
            self._sweep()
            path = tempfile.mkdtemp(prefix="load-", dir=self._tmp)
            lock = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                           0o600)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            os.close(lock)

    def _sweep(self) -> None:
        """What a killed load or removal left in tmp/ (a live load holds its flock)."""
        for name in os.listdir(self._tmp):
            path = os.path.join(self._tmp, name)
            try:
                fd = os.open(os.path.join(path, ".lock"), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                shutil.rmtree(path, ignore_errors=True)  # a removal's leftovers
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
            shutil.rmtree(path, ignore_errors=True)

    def _new_link(self) -> str:
        while True:
            name = "".join(_LINK_ALPHABET[b % 32] for b in os.urandom(_LINK_LENGTH))
            if not os.path.lexists(os.path.join(self.links_dir, name)):
                return name

    def _install_layer(self, layer: StagedLayer) -> tuple[str, int]:
        """Rename a staged layer into place (under the exclusive lock); its link and size."""
        if self.has_layer(layer.chain_id):
            doc = self._layer_doc(layer.chain_id)
            return str(doc["link"]), int(doc["size"])
        if not layer.directory:
            raise RunError(f"layer {layer.chain_id} was removed while this load ran: "
                           "load the archive again")
        link = self._new_link()
        doc = {"chain_id": str(layer.chain_id), "diff_id": str(layer.diff_id),
               "digest": str(layer.digest) if layer.digest else "", "size": layer.size,
               "link": link}
        atomicfile.write(os.path.join(layer.directory, "layer.json"), json.dumps(doc).encode())
        os.makedirs(self._layers, mode=0o700, exist_ok=True)
        os.makedirs(self.links_dir, mode=0o700, exist_ok=True)
        os.rename(layer.directory, self.layer_dir(layer.chain_id))
        os.symlink(f"../layers/{layer.chain_id.hex}/diff", os.path.join(self.links_dir, link))
        return link, layer.size

    def _install_image(self, image: StagedImage, staging: str) -> None:
        installed = [self._install_layer(layer) for layer in image.layers]
        if self.image(image.id) is not None:
            return
        record = ImageRecord(id=image.id, layers=tuple(x.chain_id for x in image.layers),
                             links=tuple(link for link, _ in installed),
                             size=sum(size for _, size in installed), loaded=time.time())
        directory = tempfile.mkdtemp(prefix="image-", dir=staging)
        with open(os.path.join(directory, "config.json"), "wb") as f:
            f.write(image.config)
        atomicfile.write(os.path.join(directory, "image.json"), record.to_json().encode())
        os.makedirs(self._images, mode=0o700, exist_ok=True)
        os.rename(directory, os.path.join(self._images, image.id.hex))

    def commit(self, images: Sequence[StagedImage], staging: str) -> None:
        """Put every image of one load in place at once: new layers, records, names."""
        with self.locked(exclusive=True):
            for image in images:
                self._install_image(image, staging)
            tags = self.tags()
            for image in images:
                tags.update(dict.fromkeys(image.names, image.id))
            self._set_tags(tags)

    def _set_tags(self, tags: dict[str, Digest]) -> None:
        doc = {name: str(image_id) for name, image_id in sorted(tags.items())}
        atomicfile.write(self._tags, json.dumps(doc).encode())

    # ------------------------------------------------------------------ removing

    def untag(self, names: Sequence[str]) -> None:
        """(Under the exclusive lock.)"""
        self._set_tags({n: i for n, i in self.tags().items() if n not in names})

    def _discard(self, path: str) -> None:
        """Out of sight at once (a rename), then removed."""
        os.makedirs(self._tmp, mode=0o700, exist_ok=True)
        gone = os.path.join(self._tmp, f"gone-{os.urandom(8).hex()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, gone)
            shutil.rmtree(gone, ignore_errors=True)

    def remove_image(self, image_id: Digest) -> list[Digest]:
        """(Under the exclusive lock.) The image, its names, and every layer no other image
        uses; the chain ids removed."""
        self._set_tags({n: i for n, i in self.tags().items() if i != image_id})
        self._discard(os.path.join(self._images, image_id.hex))
        return self.collect_garbage()

    def collect_garbage(self) -> list[Digest]:
        used = {c for i in self.image_ids() if (rec := self.image(i)) for c in rec.layers}
        removed = []
        for name in sorted(os.listdir(self._layers)) if os.path.isdir(self._layers) else []:
            chain = Digest(name) if is_hex_digest(name) else None
            if chain is None or chain in used:
                continue
            with contextlib.suppress(OSError, KeyError, ValueError):
                os.unlink(os.path.join(self.links_dir, str(self._layer_doc(chain)["link"])))
            self._discard(self.layer_dir(chain))
            removed.append(chain)
        return removed
