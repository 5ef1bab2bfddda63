"""The systemd unit for `pycni serve`: render it, install it, enable it where systemd runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = ["UNIT_NAME", "install_service", "render_unit", "systemd_running"]

UNIT_NAME: Final = "pycni-server.service"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
UNIT_SOURCE: Final = REPO_ROOT / "conf" / UNIT_NAME


def render_unit(*, interpreter: str = sys.executable) -> str:
    text = UNIT_SOURCE.read_text()
    return text.replace("@PYTHON@", interpreter).replace("@REPO@", str(REPO_ROOT))


def systemd_running() -> bool:
    """sd_booted(): systemd is PID 1 exactly when this directory exists."""
    return os.path.isdir("/run/systemd/system")


def install_service(
    *, unit_dir: str = "/etc/systemd/system", interpreter: str = sys.executable
) -> list[str]:
    """Write the unit; enable and start it under systemd. Lines to print, in order."""
    target = Path(unit_dir) / UNIT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{UNIT_NAME}.tmp")
    tmp.write_text(render_unit(interpreter=interpreter))
    os.replace(tmp, target)
    lines = [f"installed {target}"]
    if not systemd_running():
        lines.append("systemd is not running here; start the server in the foreground with:")
        lines.append(f"  {interpreter} -I -m pycni.cli serve &")
        return lines
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT_NAME]):
        subprocess.run(argv, check=True)
    lines.append(f"enabled and started {UNIT_NAME}")
    return lines
