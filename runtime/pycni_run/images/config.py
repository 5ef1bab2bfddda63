"""An image's config (the JSON its id is the digest of) and what ``run`` takes from it.

Docker's rules for merging it with the command line: ``--entrypoint`` replaces the image's
Entrypoint and drops its Cmd; CMD arguments replace its Cmd; ``-e`` overrides its Env; ``-w``
its WorkingDir; ``--user`` its User. The command is Entrypoint + Cmd.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Final

from pycni_run.errors import RunError
from pycni_run.images.digests import Digest, parse_digest
from pycni_run.spec import ContainerSpec

__all__ = ["BUILTIN", "ExposedPort", "ImageConfig", "apply_config", "parse_config"]

_PORT_RE: Final = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?")
_MAX_EXPOSED: Final = 1024  # a range "1-65535" is a mistake, not 65535 mappings


@dataclass(frozen=True, slots=True, order=True)
class ExposedPort:
    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    exposed: tuple[ExposedPort, ...] = ()
    diff_ids: tuple[Digest, ...] = ()
    created: str = ""
    architecture: str = ""
    os: str = ""


BUILTIN: Final = ImageConfig()  # busybox and --rootfs: `sh` comes from the command line


def _strings(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RunError(f"image config: {what} must be a list of strings")
    return tuple(value)


def _string(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RunError(f"image config: {what} must be a string")
    return value


def _env(value: object) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for item in _strings(value, "Env"):
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise RunError(f"image config: Env entry {item!r} is not KEY=VALUE")
        out[key] = val
    return tuple(out.items())


def _exposed(value: object) -> tuple[ExposedPort, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise RunError("image config: ExposedPorts must be an object")
    found: set[ExposedPort] = set()
    for key in value:
        match = _PORT_RE.fullmatch(key)
        first, last = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
        if not match or not 1 <= first <= last <= 65535 or last - first >= _MAX_EXPOSED:
            raise RunError(f"image config: bad ExposedPorts entry {key!r}")
        found.update(ExposedPort(p, match[3] or "tcp") for p in range(first, last + 1))
    if len(found) > _MAX_EXPOSED:
        raise RunError(f"image config: more than {_MAX_EXPOSED} ExposedPorts")
    return tuple(sorted(found))


def _diff_ids(doc: dict[str, Any]) -> tuple[Digest, ...]:
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise RunError('image config: rootfs must be {"type": "layers", "diff_ids": [...]}')
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list):
        raise RunError("image config: rootfs.diff_ids must be a list")
    return tuple(parse_digest(d, f"image config: rootfs.diff_ids[{i}]") for i, d in enumerate(ids))


def parse_config(data: bytes) -> ImageConfig:
    """The config blob, validated (types, ports, diff ids); RunError naming what is wrong."""
    try:
        doc = json.loads(data)
    except ValueError as err:
        raise RunError(f"image config is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise RunError("image config must be a JSON object")
    if doc.get("os", "linux") != "linux":
        raise RunError(f"image config: os {doc.get('os')!r} is not linux")
    run = doc.get("config") or {}
    if not isinstance(run, dict):
        raise RunError("image config: config must be an object")
    return ImageConfig(
        entrypoint=_strings(run.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(run.get("Cmd"), "Cmd"),
        env=_env(run.get("Env")),
        workdir=_string(run.get("WorkingDir"), "WorkingDir"),
        user=_string(run.get("User"), "User"),
        exposed=_exposed(run.get("ExposedPorts")),
        diff_ids=_diff_ids(doc),
        created=_string(doc.get("created"), "created"),
        architecture=_string(doc.get("architecture"), "architecture"),
        os=_string(doc.get("os"), "os"),
    )


def apply_config(spec: ContainerSpec, config: ImageConfig) -> ContainerSpec:
    """The spec with the image's defaults filled in where the command line left them."""
    if spec.entrypoint is not None:
        command = (*spec.entrypoint, *spec.command)
    else:
        command = (*config.entrypoint, *(spec.command or config.cmd))
    if not command:
        raise RunError(
            f"no command specified: image {spec.image} has no Entrypoint or Cmd and none was given"
        )
    env = dict(config.env)
    env.update(spec.env)
    workdir = spec.workdir or config.workdir or "/"
    if not workdir.startswith("/"):
        workdir = "/" + workdir  # Docker reads a relative WorkingDir from /
    return replace(
        spec,
        command=command,
        entrypoint=None,
        env=tuple(env.items()),
        workdir=workdir,
        user=spec.user or config.user,
    )
