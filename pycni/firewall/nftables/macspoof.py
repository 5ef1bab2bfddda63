"""`bridge`'s ``macspoofchk`` on nftables: frames a container sends with a source MAC not its own
are dropped. The layout, its builders and checker, and the facet.

::

    table bridge pycni_macspoof {
        set ports   { type ifname; }                  # host veth of each checked port
        set allowed { type ifname . ether_addr; }     # (host veth, container MAC)
        chain prerouting {                            # static: never grows
            type filter hook prerouting priority -300; policy accept;
            iifname @ports iifname . ether saddr != @allowed drop
        }
    }
    elements, each commented with the attachment label:
        ports   { "veth1a2b3c4d" }
        allowed { "veth1a2b3c4d" . 02:42:0a:63:00:02 }

The reference plugin makes two chains and a rule per container (``bridge nat PREROUTING``);
here one container is two set elements and every call is one transaction (plus, for setup and
teardown, one read first). ARP and everything else the container sends is covered: the check is
on the Ethernet header. nftables only: iptables cannot match a bridge port's source MAC in
pycni, so this is every driver's macspoof facet (``ipMasqBackend`` says how masquerade is done,
not this); with iptables alone, ``macspoofchk`` is refused with code 2.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall.model.macspoof import MacSpoofCheck
from pycni.firewall.nftables import nftjson as nj
from pycni.firewall.nftables.engine import NftRunner, default_runner
from pycni.firewall.nftables.feature import Entry, Layout, NftFacet

__all__ = [
    "CHAIN",
    "MACSPOOF",
    "MacSpoofCheck",
    "NftMacspoof",
    "check_state",
    "gc_commands",
    "layout",
    "require_available",
    "setup_commands",
    "spoof_rule",
    "teardown_commands",
]

MACSPOOF: Final = nj.Table("bridge", "pycni_macspoof")
CHAIN: Final = "prerouting"
PORTS: Final = "ports"
ALLOWED: Final = "allowed"
_HOOK: Final = nj.Hook(kind="filter", hook="prerouting", prio=-300)
_SETS: Final = (PORTS, ALLOWED)

Cmd = nj.Cmd


# ---------------------------------------------------------------------------- builders


def spoof_rule() -> list[Any]:
    iifname = {"meta": {"key": "iifname"}}
    pair = {"concat": [iifname, {"payload": {"protocol": "ether", "field": "saddr"}}]}
    return [
        {"match": {"op": "==", "left": iifname, "right": f"@{PORTS}"}},
        {"match": {"op": "!=", "left": pair, "right": f"@{ALLOWED}"}},
        {"drop": None},
    ]


def layout() -> list[Cmd]:
    """Table, sets and the one rule, rewritten whole: idempotent."""
    return [nj.add_table(MACSPOOF),
            nj.add_set(PORTS, key_type="ifname", table=MACSPOOF),
            nj.add_set(ALLOWED, key_type=["ifname", "ether_addr"], table=MACSPOOF),
            *nj.rewrite_chain(CHAIN, [spoof_rule()], hook=_HOOK, table=MACSPOOF)]


def _entries(m: MacSpoofCheck) -> list[Entry]:
    return [(PORTS, m.port, None), (ALLOWED, m.allowed_key, None)]


_LAYOUT: Final = Layout(MACSPOOF, frozenset(_SETS), ensure=lambda _: layout(), entries=_entries,
                        kind="sets")
teardown_commands, gc_commands = _LAYOUT.teardown_commands, _LAYOUT.gc_commands


def _layout_intact(state: nj.TableState) -> bool:
    chain = state.chain(CHAIN)
    return all(s in state.containers for s in _SETS) and chain is not None \
        and list(chain.rules) == [tuple(spoof_rule())]


def _port_of(key: Any) -> str | None:
    if isinstance(key, Mapping) and isinstance(key.get("concat"), list) and key["concat"]:
        return str(key["concat"][0])
    return None


def setup_commands(state: nj.TableState, m: MacSpoofCheck) -> list[Cmd]:
    """From what is there: the layout if it is not intact, away with any element of this port
    or label (a crashed attachment's leftover, an old MAC), then ours."""
    cmds = [] if _layout_intact(state) else layout()
    for e in _LAYOUT.of(state):
        port = e.key if e.container == PORTS else _port_of(e.key)
        if e.comment == m.key.label or port == m.port:
            cmds.append(_LAYOUT.delete(e.container, e.key))
    return cmds + [_LAYOUT.element("add", entry, m.key.label) for entry in _entries(m)]


def check_state(state: nj.TableState, m: MacSpoofCheck) -> list[str]:
    if not _layout_intact(state):
        return [f"macspoofchk: table {MACSPOOF.family} {MACSPOOF.name} missing or altered"]
    problems = []
    ports = [e for e in state.elements_of(PORTS) if e.key == m.port]
    if not ports or ports[0].comment != m.key.label:
        problems.append(f"macspoofchk: port {m.port} is not checked")
    pairs = [e for e in state.elements_of(ALLOWED) if _port_of(e.key) == m.port]
    macs = sorted(str(e.key["concat"][1]) for e in pairs)
    if macs != [m.mac.lower()]:
        problems.append(f"macspoofchk: port {m.port} allows {macs}, expected [{m.mac.lower()}]")
    return problems


# ------------------------------------------------------------------------------ the facet


def require_available(runner: NftRunner | None = None) -> None:
    """Code 2 if nftables (and its bridge family) cannot be used here: before any change."""
    try:
        (runner or default_runner()).run([nj.list_tables()])
    except (OSError, CNIError) as err:
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD,
            "macspoofchk needs nftables",
            f"nftables is not usable here ({err}); iptables cannot filter by source MAC on a "
            "bridge port in pycni",
        ) from err


class NftMacspoof(NftFacet[MacSpoofCheck]):
    """``MacspoofFacet`` on nftables' bridge family: every call is one read and one write."""

    def __init__(self, runner: NftRunner | None = None) -> None:
        super().__init__(_LAYOUT, "macspoofchk", runner)
        self._runner = runner

    def require_available(self) -> None:
        require_available(self._runner)

    def setup(self, m: MacSpoofCheck) -> None:
        self._nft.apply(lambda state: setup_commands(state, m))

    def check(self, m: MacSpoofCheck) -> list[str]:
        return self._nft.check(lambda state: check_state(state, m), who="macspoofchk")

    def gc(self, network: str, valid: Collection[tuple[str, str]]) -> list[str]:
        return self._nft.gc("macspoofchk", network, valid, gc_commands)
