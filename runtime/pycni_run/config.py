"""Runtime settings: built-in defaults < ``pycni.yaml`` (``runtime:`` section) < flags.

The file is found by ``pycni.config_file`` (``$PYCNI_RUN_CONFIG``, ``/etc/pycni/pycni.yaml``,
the repository's ``conf/pycni.yaml``), which `pycni network` reads its own section from too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycni.config_file import CONFIG_ENV, ConfigFileError, find_config_file, read_section
from pycni_run.errors import RunError

if TYPE_CHECKING:
    from pycni.cni.runner import PluginRunner

__all__ = ["CONFIG_ENV", "RuntimeConfig", "find_config_file", "load_config"]


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
    # --userns=auto and --uidmap/--gidmap: the subordinate ids of this user (podman's)
    userns_user: str = "containers"
    subuid_file: str = "/etc/subuid"
    subgid_file: str = "/etc/subgid"
    # The file these settings came from ("" for the built-in defaults): `pycni-run network`
    # reads its `network:` section from the same file.
    source: str = dataclasses.field(default="", compare=False)
    # How pycni's own plugins on the CNI path are run (``pycni.plugins.runner``): None forks
    # them. Not a setting of the file: whoever runs the command chooses (the daemon's worker,
    # thrown away after one command, runs them in-process).
    plugin_runner: PluginRunner | None = dataclasses.field(default=None, compare=False)

    @property
    def containers_dir(self) -> str:
        return os.path.join(self.state_dir, "containers")

    def with_overrides(self, overrides: Mapping[str, Any]) -> RuntimeConfig:
        return _build(self, overrides, "command line")


def _build(base: RuntimeConfig, values: Mapping[str, Any], where: str) -> RuntimeConfig:
    known = {f.name for f in dataclasses.fields(RuntimeConfig)} - {"source", "plugin_runner"}
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


def load_config(path: Path | None = None) -> RuntimeConfig:
    """Defaults overlaid with the ``runtime`` section of the config file, if there is one."""
    path = path if path is not None else find_config_file()
    if path is None:
        return RuntimeConfig()
    try:
        section = read_section(path, "runtime")
    except ConfigFileError as err:
        raise RunError(str(err)) from err
    return dataclasses.replace(_build(RuntimeConfig(), section, str(path)), source=str(path))
