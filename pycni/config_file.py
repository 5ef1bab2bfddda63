"""Where ``pycni.yaml`` is, and one section of it: shared by `pycni-run` and `pycni network`.

The file is ``$PYCNI_RUN_CONFIG`` if set, else ``/etc/pycni/pycni.yaml`` if present, else the
repository's ``conf/pycni.yaml``. Each reader takes its own section (``runtime:``,
``network:``) and validates it; this module only finds and decodes the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

__all__ = ["CONFIG_ENV", "ConfigFileError", "find_config_file", "is_repo_defaults", "read_section"]

CONFIG_ENV: Final = "PYCNI_RUN_CONFIG"
_ETC_CONFIG: Final = Path("/etc/pycni/pycni.yaml")
_REPO_CONFIG: Final = Path(__file__).resolve().parents[1] / "conf" / "pycni.yaml"


class ConfigFileError(Exception):
    """The file cannot be read or decoded, or the section is not a mapping."""


def find_config_file() -> Path | None:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    for candidate in (_ETC_CONFIG, _REPO_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def is_repo_defaults(path: Path) -> bool:
    """``path`` is the repository's ``conf/pycni.yaml``: the built-in defaults written out
    (the unit tests hold each reader's defaults equal to it), so a reader that needs no more
    than its defaults may skip parsing it."""
    return path == _REPO_CONFIG


def read_section(path: Path, section: str) -> dict[str, Any]:
    """The mapping under ``section`` (empty when the file or the section has none)."""
    import yaml  # ~15 ms: only when a config file is actually read

    # libyaml's safe loader when PyYAML was built with it (~10x faster), else the pure one;
    # both construct the same safe types.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(path.read_text(), Loader=loader) or {}  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as err:
        raise ConfigFileError(f"cannot read config {path}: {err}") from err
    found = doc.get(section, {}) if isinstance(doc, dict) else None
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise ConfigFileError(f"{path}: the {section} section must be a mapping")
    return found
