"""One pycni nftables table through libnftables: the plumbing every nft backend shares.

A lazily created runner (the library is loaded on first use, in the calling thread's network
namespace), a read of the whole table (listed again when it appeared meanwhile), and
read-build-write, retried when the table changed between the read and the write (an element
deleted meanwhile). A backend owning another table overrides ``_list_table`` and
``_table_exists``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall import nft_json as nj
from pycni.firewall.nft_lib import Doc, NftError, NftRunner, default_runner

__all__ = ["ATTEMPTS", "NftTableClient"]

log = logging.getLogger(__name__)

# Reads and read-then-writes, retried while the table changed in between: with 8 concurrent DELs
# a second attempt could lose the race too (the soak test's "portmap DEL incomplete: No such
# file").
ATTEMPTS: Final = 5


class NftTableClient:
    """Base of the nft backends: ``_run``, ``_read`` and ``_apply`` on one table."""

    def __init__(self, runner: NftRunner | None = None) -> None:
        self._runner = runner

    def _run(self, commands: list[nj.Cmd]) -> Doc:
        if self._runner is None:
            try:
                self._runner = default_runner()
            except OSError as err:
                raise CNIError(ErrorCode.INTERNAL, "nftables is not available", str(err)) from err
        return self._runner.run(commands)

    def _list_table(self) -> nj.Cmd:
        """The listing of the table this backend owns (``inet pycni`` unless overridden)."""
        return nj.list_table()

    def _table_exists(self) -> bool:
        return nj.table_in(self._run([nj.list_tables()]))

    def _read(self) -> nj.TableState:
        """The whole table; empty if it does not exist (nothing was ever set up).

        libnftables gives no errno for a failed listing, so a failure asks whether the table
        exists. If it does, it may have been created by a concurrent ADD between the listing
        and the question (a DEL of nothing on a fresh host raced that way): list again.
        """
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return nj.parse_table(self._run([self._list_table()]))
            except NftError:
                if not self._table_exists():
                    return nj.TableState()
                if attempt == ATTEMPTS:
                    raise
                log.debug("listing failed but the table exists, listing again", exc_info=True)
        raise AssertionError("unreachable")

    def _apply(self, build: Callable[[nj.TableState], list[nj.Cmd]]) -> None:
        """Read, build the commands from what is there, write; again while the write fails."""
        for attempt in range(ATTEMPTS):
            commands = build(self._read())
            if not commands:
                return
            try:
                self._run(commands)
            except NftError:
                if attempt + 1 == ATTEMPTS:
                    raise
                log.debug("nftables write failed, re-reading and retrying", exc_info=True)
            else:
                return
