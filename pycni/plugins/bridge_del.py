"""bridge DEL: release the IPAM address, remove the firewall entries and the veth, keyed by
(network, container id, ifname); everything already gone is success.

Two kernel waits would dominate a DEL:

- deleting a link: the kernel unlists it (and its veth peer) at once, ~1 ms, then waits for
  an RCU barrier before freeing it, 18-30 ms more, inside the very request;
- closing the netfilter socket of an nft batch that deleted anything waits for an RCU grace
  period, 5-15 ms (the commit itself takes ~0.4 ms): a worker that reports before it exits
  keeps its sockets until then (``pycni.firewall.nftables.engine``).

So the veth deletion runs in a thread of its own, started first, while this thread does the
IPAM DEL and the firewall teardown. Started first matters: a link's unregistration notifies
nf_tables, which takes the nft commit mutex, so a link deletion that began during an nft
commit would queue behind it. When the firewall is done, the DEL is done once both veth ends
are verifiably gone from their namespaces; the thread may still be inside the kernel's
barrier then, and the process's exit waits for it, but the caller (told the status by the
fork server, or by a forked plugin's status pipe, before the exit) does not.
"""

from __future__ import annotations

import threading

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.failpoints import failpoint
from pycni.firewall import select
from pycni.net import links
from pycni.net.ipr import open_ipr
from pycni.plugins.bridge_conf import BridgeConfig, parse_bridge_config
from pycni.plugins.bridge_keys import attachment, collect, delegate_ipam, host_veth_name

__all__ = ["cmd_del"]


def _delete_veth(args: CmdArgs) -> None:
    """Delete the host end, named from the attachment: that takes its peer, the container
    end, along, and needs no entry into the container's netns. Nothing else, ever: a veth's
    two ends die together, so with ours gone whatever is called CNI_IFNAME in the container
    is someone else's (another attachment's ``eth0``, whose second ADD in that netns failed
    on the name and is being rolled back: the reference deletes it by name here)."""
    with open_ipr() as host:
        links.delete_link(host, host_veth_name(args))


def _veth_gone(args: CmdArgs) -> bool:
    """The host end is not listed any more: the kernel unlists both ends at once."""
    with open_ipr() as host:
        return not links.link_exists(host, host_veth_name(args))


class _VethDeletion:
    """``_delete_veth`` in a daemon thread (it starts in the caller's, the host's, netns;
    entering a netns is per thread)."""

    def __init__(self, args: CmdArgs) -> None:
        self._args = args
        self._errors: list[str] = []
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bridge-del-veth", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            collect(self._errors, "veth", lambda: _delete_veth(self._args))
        except BaseException as err:  # re-raised in the caller's thread by result()
            self._failure = err

    def result(self) -> list[str]:
        """Its errors once it is done, or none at all as soon as both ends are gone."""
        if self._thread.is_alive():
            try:
                if _veth_gone(self._args):
                    return []  # only the kernel's barrier is left in that thread
            except CNIError:
                pass  # cannot tell: wait for the deletion itself
            self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._errors


def _start_veth_deletion(args: CmdArgs) -> _VethDeletion | None:
    """The veth's deletion under way, or None when there is no veth to delete. DEL deletes
    only the host end (its peer goes with it), so one lookup says whether there is anything
    to do: containerd's second DEL at RemovePodSandbox, and any DEL after a container is
    gone, starts no thread."""
    try:
        with open_ipr() as host:
            if not links.link_exists(host, host_veth_name(args)):
                return None
    except CNIError:
        pass  # cannot tell: the deletion says what it finds
    return _VethDeletion(args)


def _teardown_firewall(conf: BridgeConfig, args: CmdArgs) -> list[str]:
    errors: list[str] = []
    if conf.ip_masq:
        collect(
            errors,
            "masquerade",
            lambda: select(conf.ip_masq_backend).masquerade.teardown(attachment(args)),
        )
    failpoint("bridge.del.after_masquerade")
    if conf.mac_spoof_check:  # macspoofchk: by attachment key
        collect(errors, "macspoofchk",
                lambda: select(conf.ip_masq_backend).macspoof.teardown(attachment(args)))
    return errors


def cmd_del(args: CmdArgs) -> None:
    conf = parse_bridge_config(args)
    veth = _start_veth_deletion(args)
    errors: list[str] = []
    try:
        if conf.ipam_type:
            collect(errors, "IPAM DEL", lambda: delegate_ipam(conf, args, "DEL"))
        failpoint("bridge.del.after_ipam")
        errors += _teardown_firewall(conf, args)
    finally:
        errors += veth.result() if veth is not None else []
    failpoint("bridge.del.after_veth")
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "bridge DEL incomplete", "; ".join(errors))
