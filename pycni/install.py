"""`pycni install`: plugin executables pinned to this interpreter, and the default networks.

The executables' text is ``pycni.plugins.executable``'s. They call ``pycni.launcher``, which
hands the call to `pycni serve` when one is listening and runs it in-process otherwise.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pycni import launcher_flat
from pycni.plugins import PLUGINS
from pycni.plugins.executable import render_executable

__all__ = ["CONF_SOURCE", "InstallReport", "ensure_executables", "install", "render_executable"]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CONF_SOURCE: Final = REPO_ROOT / "conf"


def _import_path() -> tuple[str, ...]:
    roots = [str(REPO_ROOT), str(REPO_ROOT / "runtime"), sysconfig.get_paths()["purelib"]]
    return tuple(dict.fromkeys(roots))


def _write_executable(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)  # atomic: a runtime exec'ing the old file never sees half a file


def ensure_executables(bin_dir: str, *, interpreter: str = sys.executable) -> list[str]:
    """Every plugin executable in ``bin_dir`` as `install` writes it, rewriting only those
    missing or different (another interpreter, a moved checkout); the ones written. The
    launcher's flat module too (``pycni.launcher_flat``), when missing or when an executable
    was written: rendering it costs ~1.6 ms, and a runtime without installed plugins calls
    this for every run. (Out of date, it is not used: `pycni install` writes it anew.)"""
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    written = []
    for name in sorted(PLUGINS):
        target = Path(bin_dir) / name
        text = render_executable(name, interpreter=interpreter, import_path=_import_path())
        try:
            current = target.read_text()
        except OSError:
            current = ""
        if current != text:
            _write_executable(target, text)
            written.append(str(target))
    if written or not launcher_flat.TARGET.exists():
        launcher_flat.ensure()
    return written


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallReport:
    executables: tuple[str, ...]
    confs_written: tuple[str, ...]
    confs_kept: tuple[str, ...]


def install(
    *, bin_dir: str, conf_dir: str | None, interpreter: str = sys.executable
) -> InstallReport:
    launcher_flat.ensure()
    bin_path = Path(bin_dir)
    bin_path.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(PLUGINS):
        target = bin_path / name
        _write_executable(
            target, render_executable(name, interpreter=interpreter, import_path=_import_path())
        )
        written.append(str(target))
    new_confs: list[str] = []
    kept: list[str] = []
    if conf_dir is not None:
        Path(conf_dir).mkdir(parents=True, exist_ok=True)
        for source in sorted(CONF_SOURCE.glob("*.conflist")):
            target = Path(conf_dir) / source.name
            if target.exists():
                kept.append(str(target))  # never overwrite a user's edits
                continue
            shutil.copyfile(source, target)
            new_confs.append(str(target))
    return InstallReport(
        executables=tuple(written), confs_written=tuple(new_confs), confs_kept=tuple(kept)
    )
