"""A pycni plugin executable: its text (``pycni install`` writes it), and telling one apart.

CNI runtimes exec plugins with a bare environment, so each executable names its interpreter
by absolute path and carries its own import path; ``-I -S`` keeps start-up free of site
processing (every plugin call pays it). It calls ``pycni.launcher``, imported as the one module
``pycni install`` writes of it and what it imports (``pycni.launcher_flat``), or the usual way
when that is missing or out of date.

``is_ours`` reads an executable found on CNI_PATH back: the very text rendered here for this
code (its import path starts with this checkout). Such an executable would start an
interpreter only to run ``skel.run`` of our code, which a caller of ours may run without the
exec (``pycni.plugins.runner``). Light: a plugin's delegate call asks it.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["FLAT_NAME", "OUR_ROOT", "is_ours", "render_executable"]

# The package root a rendered executable puts first on sys.path: ours, or not ours.
OUR_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MAX_EXECUTABLE: Final = 4096
_FORCE_EXEC_ENV: Final = "PYCNI_DELEGATE_EXEC"  # set: even ours are exec'd
# The module `pycni install` writes at OUR_ROOT for the executables (``pycni.launcher_flat``).
FLAT_NAME: Final = "pycni_launcher_flat"


def _tail(name: str) -> str:
    return (
        f"\ntry:  # pycni.launcher and what it imports, as one module (pycni/launcher_flat.py)\n"
        f"    from {FLAT_NAME} import launch\n"
        f"except Exception:  # not written, out of date, or broken: the modules themselves\n"
        f"    from pycni.launcher import launch\n"
        f'\nlaunch("{name}")\n'
    )


def render_executable(
    name: str, *, interpreter: str = "", import_path: tuple[str, ...] = ()
) -> str:
    """The text of plugin executable ``name``; without an interpreter, the repo's portable form."""
    if interpreter:
        # One combined flag word: Linux hands everything after the interpreter path to it as a
        # single argument, and python refuses "-I -S" ("Unknown option: - "); "-IS" is -I -S.
        head = f"#!{interpreter} -IS\n"
        head += f"import sys\nsys.path[:0] = {list(import_path)!r}\n"
    else:
        head = "#!/usr/bin/env python3\n"
    return (
        head
        + f"# CNI plugin `{name}` (pycni). "
        + "`pycni install` pins the interpreter and import path here."
        + _tail(name)
    )


def is_ours(binary: str, kind: str) -> bool:
    """True for ``render_executable(kind)`` pinned to an import path that starts with this
    code (unless ``PYCNI_DELEGATE_EXEC`` is set: then every executable is exec'd)."""
    if os.environ.get(_FORCE_EXEC_ENV):
        return False
    try:
        with open(binary, "rb") as f:
            head = f.read(_MAX_EXECUTABLE + 1)
    except OSError:
        return False
    text = head.decode(errors="replace")
    return (
        len(head) <= _MAX_EXECUTABLE
        and f"\nsys.path[:0] = [{OUR_ROOT!r}" in text
        and text.endswith(_tail(kind))
    )
