"""``pycni-run`` in-process: the daemon, or any other command (``cli``).

What the client (``client``) runs when no daemon takes the command, and what
``python -m pycni_run`` runs. ``daemon`` is dispatched here, not by ``cli``: the daemon's
worker runs ``cli.main``, so ``cli`` never imports the daemon (no import circle).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pycni_run import cli
from pycni_run.errors import RunError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``pycni-run [GLOBAL OPTIONS] daemon ...`` serves; anything else is ``cli.main``'s."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _, rest = cli.split_global_options(args)
    except RunError:
        rest = []  # cli.main says what is wrong with them
    if rest[:1] != ["daemon"]:
        return cli.main(args)
    from pycni_run.daemon.main import serve

    try:
        cli.require_privileges()
        return serve(rest[1:])
    except RunError as err:  # as ``cli.main`` says a runtime error
        print(f"pycni-run: {err}", file=sys.stderr)
        return err.code
