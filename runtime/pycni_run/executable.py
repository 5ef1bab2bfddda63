"""The ``pycni-run`` executable: ``#!python -IS``, the import path pinned, the client.

A pip console script starts the interpreter with ``site`` (this venv's ``.pth`` hooks alone
cost ~13 ms here) and imports ``re``; the client is there to avoid exactly that. This renders
the same entry the way ``pycni install`` renders plugin executables: the interpreter with
``-IS`` and the package roots first on ``sys.path``. The client adds ``site`` back itself
when it has to run in-process.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["install_client", "render_client"]

_REPO: Final = Path(__file__).resolve().parents[2]


def render_client(interpreter: str, import_path: tuple[str, ...]) -> str:
    # One flag word: Linux passes everything after the interpreter as a single argument.
    return (
        f"#!{interpreter} -IS\n"
        "# pycni-run: the import-light client (`pycni-run install-client` renders it).\n"
        f"import sys\nsys.path[:0] = {list(import_path)!r}\n"
        "from pycni_run.client import main\n\nmain()\n"
    )


def install_client(directory: str) -> str:
    """Write ``<directory>/pycni-run`` atomically; its path."""
    roots = (str(_REPO), str(_REPO / "runtime"), sysconfig.get_paths()["purelib"])
    text = render_client(sys.executable, tuple(dict.fromkeys(roots)))
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "pycni-run")
    fd, tmp = tempfile.mkstemp(prefix=".pycni-run-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)  # noqa: S103 - an executable for every user (it needs root anyway)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target
