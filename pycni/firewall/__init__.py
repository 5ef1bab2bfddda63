"""The firewall layer: plugins hand plain dataclasses to one backend chosen once.

``select(name)`` gives a ``FirewallBackend`` (nftables by default, iptables where nftables is
absent, or none); the backend modules themselves are imported only when chosen. Backends never
call netlink and plugins never build rule text.
"""

from pycni.firewall.base import BACKEND_NAMES, FirewallBackend, select, validate_backend_name
from pycni.firewall.model import AttachmentKey, Masquerade

__all__ = [
    "BACKEND_NAMES",
    "AttachmentKey",
    "FirewallBackend",
    "Masquerade",
    "select",
    "validate_backend_name",
]
