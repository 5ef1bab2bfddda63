"""Image references as a user types them (``two``, ``two:1``, ``localhost/two:1``,
``docker.io/library/alpine:3``, an id or a prefix of one) and the names an archive carries.

Stored names are normalized to ``NAME:TAG`` (``:latest`` when no tag is given). A short name
also matches the same name under ``localhost/`` (podman's prefix for local images) and
``docker.io/library/`` (Docker's for official images), in that order, as podman resolves it.
"""

from __future__ import annotations

import re
from typing import Final

from pycni_run.errors import RunError

__all__ = ["DEFAULT_TAG", "candidates", "normalize", "split"]

DEFAULT_TAG: Final = "latest"
# Docker's grammar, loosely: lowercase path components (a registry host may carry a port),
# then a tag of up to 128 word characters, dots and dashes.
_NAME_RE: Final = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
)
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_NAME: Final = 255


def split(ref: str) -> tuple[str, str]:
    """``NAME[:TAG]`` -> (NAME, TAG); a colon before the last slash is a registry port."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, DEFAULT_TAG
    return name, tag


def normalize(ref: str) -> str:
    """``NAME:TAG`` for a valid reference; RunError naming the reference otherwise."""
    if "@" in ref:
        raise RunError(f"invalid image reference {ref!r}: digests (@sha256:...) are not supported")
    name, tag = split(ref)
    if len(name) > _MAX_NAME or not _NAME_RE.fullmatch(name) or not _TAG_RE.fullmatch(tag):
        raise RunError(f"invalid image reference {ref!r}")
    return f"{name}:{tag}"


def candidates(ref: str) -> list[str]:
    """The stored names ``ref`` may mean, best first: itself, then (for a name without a
    registry) under ``localhost/`` and under Docker Hub's ``docker.io/[library/]``."""
    full = normalize(ref)
    name = split(full)[0]
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return [full]
    hub = "docker.io/" + ("" if "/" in name else "library/")
    return [full, "localhost/" + full, hub + full]
