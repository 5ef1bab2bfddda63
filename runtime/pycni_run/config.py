"""Runtime settings: built-in defaults < ``pycni.yaml`` (``runtime:`` section) < flags.

The file is ``$PYCNI_RUN_CONFIG`` if set, else ``/etc/pycni/pycni.yaml`` if present, else the
repository's ``conf/pycni.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from pycni_run.errors import RunError

__all__ = ["CONFIG_ENV", "RuntimeConfig", "find_config_file", "load_config"]

CONFIG_ENV: Final = "PYCNI_RUN_CONFIG"
_ETC_CONFIG: Final = Path("/etc/pycni/pycni.yaml")
_REPO_CONFIG: Final = Path(__file__).resolve().parents[2] / "conf" / "pycni.yaml"
# libyaml's safe loader when PyYAML was built with it (~10x faster: ~1 ms of every run), the
# pure-Python one otherwise; both construct the same safe types.
_SAFE_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConfig:
    state_dir: str = "/run/pycni"
    storage_dir: str = "/var/lib/pycni/containers"
    image_store: str = "/var/lib/pycni/images"
    netns_dir: str = "/run/netns"
    cni_path: tuple[str, ...] = ("/opt/cni/bin",)
    conf_dir: str = "/etc/cni/net.d"
    cni_cache_dir: str = "/var/lib/cni"
    cgroup_parent: str = "pycni"
    stop_timeout: float = 10.0

    @property
    def containers_dir(self) -> str:
        return os.path.join(self.state_dir, "containers")

    def with_overrides(self, overrides: Mapping[str, Any]) -> RuntimeConfig:
        return _build(self, overrides, "command line")


def _build(base: RuntimeConfig, values: Mapping[str, Any], where: str) -> RuntimeConfig:
    known = {f.name for f in dataclasses.fields(RuntimeConfig)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key not in known:
            raise RunError(f"{where}: unknown runtime setting {key!r}")
        if key == "cni_path":
            items = value.split(os.pathsep) if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(p, str) for p in items):
                raise RunError(f"{where}: cni_path must be a list of directories")
            changes[key] = tuple(p for p in items if p)
        elif key == "stop_timeout":
            if not isinstance(value, int | float) or value < 0:
                raise RunError(f"{where}: stop_timeout must be a number of seconds >= 0")
            changes[key] = float(value)
        elif not isinstance(value, str) or not value:
            raise RunError(f"{where}: {key} must be a non-empty string")
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def find_config_file() -> Path | None:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    for candidate in (_ETC_CONFIG, _REPO_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None = None) -> RuntimeConfig:
    """Defaults overlaid with the ``runtime`` section of the config file, if there is one."""
    path = path if path is not None else find_config_file()
    if path is None:
        return RuntimeConfig()
    try:
        doc = yaml.load(path.read_text(), Loader=_SAFE_LOADER) or {}  # noqa: S506 - safe loader
    except (OSError, yaml.YAMLError) as err:
        raise RunError(f"cannot read config {path}: {err}") from err
    section = doc.get("runtime", {}) if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        raise RunError(f"{path}: the runtime section must be a mapping")
    return _build(RuntimeConfig(), section, str(path))
