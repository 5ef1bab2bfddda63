"""Kept only for `pycni serve`'s warm-up (``pycni/server/main.py``, which this change leaves to
the warm-fork kit's round): ``detect()`` under its old masquerade-only shape. That round calls
``pycni.firewall.detect()`` and its facets directly and deletes this module.
"""

from __future__ import annotations

from pycni.firewall import driver
from pycni.firewall.model import AttachmentKey
from pycni.firewall.model.masquerade import Masquerade

__all__ = ["detect"]


class _WarmUp:
    """The detected driver with every facet loaded (what a worker would otherwise import on
    its first call), answering the two masquerade calls the warm-up makes."""

    def __init__(self, fw: driver.Firewall) -> None:
        self._fw = fw
        self.facets = (fw.masquerade, fw.forward, fw.portmap, fw.macspoof)

    def setup_masquerade(self, m: Masquerade) -> None:
        self._fw.masquerade.setup(m)

    def teardown_masquerade(self, key: AttachmentKey) -> None:
        self._fw.masquerade.teardown(key)


def detect() -> _WarmUp:
    return _WarmUp(driver.detect())
