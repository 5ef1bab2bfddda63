"""What names a bridge attachment, derived from (network, container id, ifname) alone: so DEL,
CHECK and a retried ADD find what ADD made without any state of their own."""

from __future__ import annotations

from collections.abc import Callable

from pycni.cni.delegate import delegate
from pycni.cni.errors import CNIError, NetNSNotFound
from pycni.cni.skel import CmdArgs
from pycni.digest import sha256_hex
from pycni.firewall import AttachmentKey
from pycni.plugins.bridge_conf import BridgeConfig
from pycni.plugins.runner import DELEGATES

__all__ = ["attachment", "collect", "delegate_ipam", "host_veth_name"]


def host_veth_name(args: CmdArgs) -> str:
    """Derived from the attachment, so DEL and a retried ADD find it without any state."""
    return "veth" + sha256_hex(f"{args.network}\0{args.container_id}\0{args.ifname}".encode())[:8]


def attachment(args: CmdArgs) -> AttachmentKey:
    return AttachmentKey(network=args.network, container_id=args.container_id, ifname=args.ifname)


def collect(errors: list[str], what: str, step: Callable[[], object]) -> None:
    """Run one best-effort DEL/GC step: its failure is noted in ``errors``, never raised."""
    try:
        step()
    except NetNSNotFound:
        pass  # the container is gone: what lived in it is gone too
    except CNIError as err:
        errors.append(f"{what}: {err}")


def delegate_ipam(conf: BridgeConfig, args: CmdArgs, command: str) -> bytes:
    """The IPAM delegate for ``command``, with this call's stdin, environment and CNI_PATH."""
    return delegate(conf.ipam_type, command=command, stdin=args.stdin, env=args.env,
                    path=args.path, runner=DELEGATES)
