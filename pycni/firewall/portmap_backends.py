"""Port-mapping backends behind one Protocol, chosen exactly as the masquerade backend is.

``select_portmap(name)`` gives the backend of that name, or, for None, the one of the same
name as ``base.select(None)`` detects: pycni never writes port mappings to nftables and
iptables at once, and never to a different one than its masquerade rules (field failure #9).
The iptables module is imported only when chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Protocol

from pycni.cni.errors import CNIError
from pycni.firewall import base
from pycni.firewall import nft_json as nj
from pycni.firewall import nft_portmap as npm
from pycni.firewall.model import AttachmentKey, network_tag
from pycni.firewall.nft_lib import NftError
from pycni.firewall.nft_table import NftTableClient
from pycni.firewall.portmap_model import PortMap

__all__ = [
    "NftPortmapBackend",
    "NonePortmapBackend",
    "PortmapBackend",
    "make_portmap_backend",
    "select_portmap",
]

log = logging.getLogger(__name__)



class PortmapBackend(Protocol):
    """What every port-mapping backend offers. Each call is idempotent and one transaction
    (per IP version for iptables)."""

    @property
    def name(self) -> str: ...

    def setup_portmap(self, pm: PortMap) -> None:
        """Publish ``pm``; a repeated call (a retried ADD) adds nothing."""

    def teardown_portmap(self, key: AttachmentKey, hint: PortMap | None = None) -> None:
        """Remove everything of ``key``. ``hint`` (what was published, if known) lets a
        backend delete exactly that without reading; it falls back to finding by key."""

    def check_portmap(self, pm: PortMap) -> list[str]:
        """Problems with the state ``setup_portmap(pm)`` makes; empty when intact."""
        ...

    def gc_portmap(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        """Remove every attachment of ``network`` whose (container id, ifname) is not valid;
        the errors met, continuing past them."""
        ...

    def status(self) -> str | None:
        """None if usable here, else why not."""
        ...


class NftPortmapBackend(NftTableClient):
    """Port mappings as map elements in ``inet pycni_portmap`` (layout: ``nft_portmap``).

    ``setup_portmap`` escalates as the masquerade backend does: pure inserts (~0.5 ms, any
    ADD on a host where the network has published before); else the whole layout plus
    add-delete-add of each element (first ADD, or a retried one); else read the table and
    delete exactly what holds our keys. Acts in the calling thread's network namespace.
    """

    name = "nftables"

    def _list_table(self) -> nj.Cmd:
        return npm.list_table()

    def _table_exists(self) -> bool:
        return npm.table_in(self._run([npm.list_tables()]))

    def setup_portmap(self, pm: PortMap) -> None:
        if not pm.targets():
            return
        for step, build in (("insert", npm.create_elements), ("replace", npm.setup_blind)):
            try:
                self._run(build(pm))
            except NftError as err:
                log.debug("portmap %s for %s failed: %s", step, pm.key.label, err.details)
            else:
                return
        self._run(npm.setup_informed(pm, self._read()))

    def teardown_portmap(self, key: AttachmentKey, hint: PortMap | None = None) -> None:
        if hint is not None and hint.key == key and hint.targets():
            try:
                self._run(npm.delete_elements(hint))
            except NftError as err:
                log.debug("exact portmap delete for %s failed: %s", key.label, err.details)
            else:
                return
        self._apply(lambda state: npm.teardown_commands(state, key.label))

    def check_portmap(self, pm: PortMap) -> list[str]:
        if not pm.targets():
            return []
        try:
            state = self._read()
        except CNIError as err:
            return [f"nftables: cannot read table {npm.FAMILY} {npm.TABLE}: {err}"]
        return npm.check_state(state, pm)

    def gc_portmap(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        keep = {AttachmentKey(network, cid, ifname).label for cid, ifname in valid}
        try:
            self._apply(lambda state: npm.gc_commands(state, network_tag(network), keep))
        except CNIError as err:
            return [f"nftables portmap GC of network {network!r}: {err}"]
        return []

    def status(self) -> str | None:
        try:
            self._run([npm.list_tables()])
        except CNIError as err:
            return str(err)
        return None


class NonePortmapBackend:
    """No firewall changes at all (host ports are still reserved by the plugin)."""

    name = "none"

    def setup_portmap(self, pm: PortMap) -> None:
        del pm

    def teardown_portmap(self, key: AttachmentKey, hint: PortMap | None = None) -> None:
        del key, hint

    def check_portmap(self, pm: PortMap) -> list[str]:
        del pm
        return []

    def gc_portmap(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        del network, valid
        return []

    def status(self) -> str | None:
        return None


def make_portmap_backend(name: str) -> PortmapBackend:
    base.validate_backend_name(name, field="backend")
    if name == "nftables":
        return NftPortmapBackend()
    if name == "iptables":
        from pycni.firewall.ipt_portmap import IptPortmapBackend

        return IptPortmapBackend()
    return NonePortmapBackend()


def select_portmap(name: str | None = None) -> PortmapBackend:
    """The backend named, or the one named like ``base.select(None)``'s auto-detected one."""
    chosen = base.validate_backend_name(name, field="backend")
    return make_portmap_backend(chosen if chosen is not None else base.detect().name)
