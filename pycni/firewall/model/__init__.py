"""What plugins hand to a firewall driver: plain frozen dataclasses, nothing else, one module
per feature (``masquerade``, ``forward``, ``portmap``, ``macspoof``), each imported when first
named; the attachment key and the tags every feature labels its state with live here.

Drivers key every host-side artifact by the attachment ``(network, container id, ifname)``,
never by live addresses (which may be gone at DEL time: field failure #3). Names and comments
that reach the kernel are short hex tags derived here, so they are always safe in nft and
iptables syntax whatever the network name contains.

Tags (stable across versions; changing them would orphan existing rules):

- ``network_tag(net)`` = first 16 hex chars of ``sha256('["network","<net>"]')``;
- ``AttachmentKey.tag`` = first 16 hex chars of
  ``sha256('["attachment","<net>","<container id>","<ifname>"]')``;
- ``AttachmentKey.label`` = ``"<network tag>-<attachment tag>"`` (33 chars): the comment every
  rule or element of the attachment carries, so DEL finds it by key and GC finds every
  attachment of one network by the prefix;
- each feature's per-network chain is named by a ``chain_tag`` hashed from a layout word
  (``masq-v1``, ``fwd-v1``, ``hostport-v1``, bumped if a chain's contents ever change, so new
  chains get new names and old ones stay intact for attachments made before), the network and
  whatever decides the chain's rules: the name alone determines the contents.

The strings hashed are compact JSON arrays (``json.dumps(..., separators=(",", ":"))``), which
makes the encoding unambiguous for any strings; the first word separates the hash domains.
64 bits make an accidental collision negligible at any realistic number of containers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.digest import sha256_hex

if TYPE_CHECKING:
    from pycni.firewall.model.forward import (
        FORWARD_MARK,
        HOLE_COMMENT,
        INGRESS_POLICIES,
        Forward,
    )
    from pycni.firewall.model.macspoof import MacSpoofCheck
    from pycni.firewall.model.masquerade import Masquerade
    from pycni.firewall.model.portmap import PROTOCOLS, DnatTarget, PortMap, PortMapping

__all__ = [
    "FORWARD_MARK",
    "HOLE_COMMENT",
    "INGRESS_POLICIES",
    "PROTOCOLS",
    "TAG_LEN",
    "AttachmentKey",
    "DnatTarget",
    "Forward",
    "MacSpoofCheck",
    "Masquerade",
    "PortMap",
    "PortMapping",
    "bad",
    "digest",
    "network_tag",
    "parse_label",
]

TAG_LEN: Final = 16
# Each model costs its frozen dataclasses' creation (~0.5 ms each here): a plugin imports the
# ones it names only.
_FEATURES: Final = {
    "FORWARD_MARK": "forward", "HOLE_COMMENT": "forward", "INGRESS_POLICIES": "forward",
    "Forward": "forward", "MacSpoofCheck": "macspoof", "Masquerade": "masquerade",
    "PROTOCOLS": "portmap", "DnatTarget": "portmap", "PortMap": "portmap",
    "PortMapping": "portmap",
}


def digest(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True)
    return sha256_hex(raw.encode("ascii"))[:TAG_LEN]


def network_tag(network: str) -> str:
    """The short, name-safe tag of a network (16 lowercase hex chars)."""
    return digest("network", network)


def parse_label(label: str) -> tuple[str, str] | None:
    """Split a ``"<network tag>-<attachment tag>"`` label; None if it is not one of ours."""
    net, sep, att = label.partition("-")
    if not sep or not _is_tag(net) or not _is_tag(att):
        return None
    return net, att


def _is_tag(text: str) -> bool:
    return len(text) == TAG_LEN and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class AttachmentKey:
    """One attachment of a container to a network: what every host-side artifact is keyed by."""

    network: str
    container_id: str
    ifname: str

    @property
    def tag(self) -> str:
        return digest("attachment", self.network, self.container_id, self.ifname)

    @property
    def network_tag(self) -> str:
        return network_tag(self.network)

    @property
    def label(self) -> str:
        """The comment carried by this attachment's rules and elements."""
        return f"{self.network_tag}-{self.tag}"


def bad(feature: str, what: str, value: object) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{feature}: invalid {what} {value!r}")


if not TYPE_CHECKING:  # mypy sees the imports above, so a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        """A feature's model, imported on first use (PEP 562)."""
        if name not in _FEATURES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        # __import__, not importlib.import_module: -X importtime sees only the former
        return getattr(__import__(f"{__name__}.{_FEATURES[name]}", fromlist=[name]), name)
