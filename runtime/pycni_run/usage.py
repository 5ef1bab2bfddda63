"""The argument parser every ``pycni-run`` command uses: a usage error is Docker's 125."""

from __future__ import annotations

import argparse
from typing import NoReturn

from pycni_run.errors import RunError

__all__ = ["UsageParser"]


class UsageParser(argparse.ArgumentParser):
    """argparse that reports a usage error as Docker does: status 125."""

    def error(self, message: str) -> NoReturn:
        raise RunError(f"{self.prog}: {message}")
