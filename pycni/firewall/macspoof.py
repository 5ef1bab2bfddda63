"""`bridge`'s ``macspoofchk``: frames a container sends with a source MAC not its own are dropped.

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
on the Ethernet header. nftables only: with iptables alone, ``macspoofchk`` is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.firewall import nft_json as nj
from pycni.firewall.model import AttachmentKey, network_tag
from pycni.firewall.nft_lib import Doc, NftError, NftRunner, default_runner

__all__ = [
    "CHAIN",
    "FAMILY",
    "TABLE",
    "MacSpoofCheck",
    "check",
    "check_state",
    "gc",
    "gc_commands",
    "layout",
    "require_available",
    "setup",
    "setup_commands",
    "spoof_rule",
    "teardown",
    "teardown_commands",
]

FAMILY: Final = "bridge"
TABLE: Final = "pycni_macspoof"
CHAIN: Final = "prerouting"
PORTS: Final = "ports"
ALLOWED: Final = "allowed"
_PRIO: Final = -300
_SETS: Final = (PORTS, ALLOWED)

Cmd = dict[str, Any]


@dataclass(frozen=True)
class MacSpoofCheck:
    """Frames entering the bridge from ``port`` must carry ``mac`` as their source."""

    key: AttachmentKey
    port: str
    mac: str

    @property
    def allowed_key(self) -> dict[str, Any]:
        return {"concat": [self.port, self.mac.lower()]}


# ---------------------------------------------------------------------------- builders


def _where(**fields: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **fields}


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
    return [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"set": _where(name=PORTS, type="ifname")}},
        {"add": {"set": _where(name=ALLOWED, type=["ifname", "ether_addr"])}},
        {"add": {"chain": _where(name=CHAIN, type="filter", hook="prerouting", prio=_PRIO,
                                 policy="accept")}},
        {"flush": {"chain": _where(name=CHAIN)}},
        {"add": {"rule": _where(chain=CHAIN, expr=spoof_rule())}},
    ]


def _element(verb: str, set_name: str, key: Any, comment: str | None = None) -> Cmd:
    elem = {"elem": {"val": key, "comment": comment}} if comment else key
    return {verb: {"element": _where(name=set_name, elem=[elem])}}


def _layout_intact(state: nj.TableState) -> bool:
    chain = state.chain(CHAIN)
    return all(s in state.containers for s in _SETS) and chain is not None \
        and list(chain.rules) == [tuple(spoof_rule())]


def setup_commands(state: nj.TableState, m: MacSpoofCheck) -> list[Cmd]:
    """From what is there: the layout if it is not intact, away with any element of this port
    or label (a crashed attachment's leftover, an old MAC), then ours."""
    cmds = [] if _layout_intact(state) else layout()
    for e in state.elements:
        port = e.key if e.container == PORTS else _port_of(e.key)
        if e.container in _SETS and (e.comment == m.key.label or port == m.port):
            cmds.append(_element("delete", e.container, e.key))
    cmds += [_element("add", PORTS, m.port, m.key.label),
             _element("add", ALLOWED, m.allowed_key, m.key.label)]
    return cmds


def _port_of(key: Any) -> str | None:
    if isinstance(key, Mapping) and isinstance(key.get("concat"), list) and key["concat"]:
        return str(key["concat"][0])
    return None


def teardown_commands(state: nj.TableState, label: str) -> list[Cmd]:
    return [_element("delete", e.container, e.key)
            for e in state.elements if e.container in _SETS and e.comment == label]


def gc_commands(state: nj.TableState, net_tag: str, keep: Collection[str]) -> list[Cmd]:
    ours = f"{net_tag}-"
    return [_element("delete", e.container, e.key) for e in state.elements
            if e.container in _SETS and (e.comment or "").startswith(ours)
            and e.comment not in keep]


def check_state(state: nj.TableState, m: MacSpoofCheck) -> list[str]:
    if not _layout_intact(state):
        return [f"macspoofchk: table {FAMILY} {TABLE} missing or altered"]
    problems = []
    ports = [e for e in state.elements_of(PORTS) if e.key == m.port]
    if not ports or ports[0].comment != m.key.label:
        problems.append(f"macspoofchk: port {m.port} is not checked")
    pairs = [e for e in state.elements_of(ALLOWED) if _port_of(e.key) == m.port]
    macs = sorted(str(e.key["concat"][1]) for e in pairs)
    if macs != [m.mac.lower()]:
        problems.append(f"macspoofchk: port {m.port} allows {macs}, expected [{m.mac.lower()}]")
    return problems


# ---------------------------------------------------------------------------------- I/O


def _runner() -> NftRunner:
    try:
        return default_runner()
    except OSError as err:
        raise CNIError(ErrorCode.INTERNAL, "nftables is not available", str(err)) from err


def _read(runner: NftRunner) -> nj.TableState:
    try:
        return nj.parse_table(runner.run([{"list": {"table": {"family": FAMILY, "name": TABLE}}}]))
    except NftError:
        tables = runner.run([{"list": {"tables": None}}]).get("nftables", [])
        if not any(isinstance(o, Mapping) and o.get("table", {}).get("family") == FAMILY
                   and o["table"].get("name") == TABLE for o in tables):
            return nj.TableState()
        raise


def _apply(runner: NftRunner, build: Callable[[nj.TableState], list[Cmd]]) -> Doc | None:
    """Read, build, write; once more if the table changed in between."""
    for attempt in range(2):
        commands = build(_read(runner))
        if not commands:
            return None
        try:
            return runner.run(commands)
        except NftError:
            if attempt:
                raise
    return None


def require_available(runner: NftRunner | None = None) -> None:
    """Code 2 if nftables (and its bridge family) cannot be used here: before any change."""
    try:
        (runner or default_runner()).run([{"list": {"tables": None}}])
    except (OSError, CNIError) as err:
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD,
            "macspoofchk needs nftables",
            f"nftables is not usable here ({err}); iptables cannot filter by source MAC on a "
            "bridge port in pycni",
        ) from err


def setup(m: MacSpoofCheck, runner: NftRunner | None = None) -> None:
    _apply(runner or _runner(), lambda state: setup_commands(state, m))


def teardown(key: AttachmentKey, runner: NftRunner | None = None) -> None:
    _apply(runner or _runner(), lambda state: teardown_commands(state, key.label))


def check(m: MacSpoofCheck, runner: NftRunner | None = None) -> list[str]:
    try:
        return check_state(_read(runner or _runner()), m)
    except CNIError as err:
        return [f"macspoofchk: cannot read table {FAMILY} {TABLE}: {err}"]


def gc(network: str, valid: Collection[tuple[str, str]],
       runner: NftRunner | None = None) -> list[str]:
    keep = {AttachmentKey(network, cid, ifname).label for cid, ifname in valid}
    try:
        _apply(runner or _runner(), lambda state: gc_commands(state, network_tag(network), keep))
    except CNIError as err:
        return [f"macspoofchk GC of network {network!r}: {err}"]
    return []
