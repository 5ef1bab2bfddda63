"""What a warm process that runs plugins (the fork server, the runtime daemon) imports and
runs once, so that none of its workers pays for it."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import time
from typing import Final

from pycni import firewall
from pycni.linux import nscalls
from pycni.net import addrs, bridge_ports, links, veth_pair
from pycni.net.ipr import open_ipr
from pycni.plugins import PLUGINS

__all__ = ["preload", "warm_up"]

# What the plugins import lazily (firewall backends are chosen at run time): import it all once
# here so no worker pays for it. Missing optional modules are skipped.
_WARM_MODULES: Final = (
    "pyroute2",
    "netaddr",
    "pycni.cni.delegate",
    "pycni.cni.runner",
    "pycni.plugins.runner",
    "pycni.plugins.forked",
    "pycni.plugins.bridge_del",
    "pycni.plugins.bridge_check",
    "pycni.firewall.nftables.engine",
    "pycni.firewall.nftables.masquerade",
    "pycni.firewall.nftables.forward",
    "pycni.firewall.nftables.portmap",
    "pycni.firewall.nftables.macspoof",
    "pycni.firewall.iptables",
    "pycni.firewall.none",
)

def preload(log: logging.Logger) -> float:
    """Import every plugin module and its heavy dependencies, run their first-use paths
    (``warm_up``) and freeze the warm heap; seconds spent. What fails is said on ``log``."""
    started = time.monotonic()
    for name in (*_WARM_MODULES, *(info.module for info in PLUGINS.values())):
        try:
            module = importlib.import_module(name)
            if name == "pyroute2":  # run its __init__ here even if it was deferred
                getattr(module, "IPRoute", None)  # (pycni.net.pyroute2_import)
        except ImportError as err:
            log.warning("not preloaded: %s (%s)", name, err)
    try:
        warm_up()
    except Exception as err:  # a cold worker is slower, not wrong
        log.warning("warm-up skipped: %s", err)
    gc.collect()
    gc.freeze()  # keep the warm heap out of every worker's collections (fewer copied pages)
    return time.monotonic() - started


def warm_up() -> None:
    """Run the plugins' first-use paths once, so every worker inherits them warm: pyroute2's
    lazily compiled message classes (link, veth, bridge port, address, route) and its event
    loop, libnftables loaded and the masquerade batch path run, the firewall backend detected
    (its status probe is an nft call a worker would otherwise pay on every call).

    It all happens in a private network namespace made for it and dropped at once (with all
    it holds): the server's own namespace, the host's, is never touched. The server is
    single-threaded, so the setns back is always allowed.
    """
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nscalls.unshare(nscalls.CLONE_NEWNET)
        try:
            _warm_netlink()
            _warm_firewall()
        finally:
            nscalls.setns(home, nscalls.CLONE_NEWNET)
    finally:
        os.close(home)


def _warm_netlink() -> None:
    with open_ipr() as ipr:
        bridge = links.ensure_bridge(ipr, "pycniwarm0", pin_mac=True)
        pair = veth_pair.create_veth(ipr, host_ifname="pycniwarm1", container_ifname="pycniwarm2",
                                 container_netns="/proc/self/ns/net", container_ipr=ipr)
        links.set_master(ipr, pair.host.index, bridge.index, up=True)
        bridge_ports.set_bridge_port(ipr, pair.host.index, hairpin=False, isolated=False)
        addrs.add_address(ipr, bridge.index, "10.255.255.1/24", nodad=True)
        addrs.list_addresses(ipr, bridge.index)
        addrs.add_address(ipr, pair.container.index, "10.255.255.2/24")
        links.set_up(ipr, pair.container.index)
        addrs.add_route(ipr, dst="0.0.0.0/0", gateway="10.255.255.1", index=pair.container.index)
        addrs.list_routes(ipr)
        links.delete_link(ipr, pair.host.name)


def _warm_firewall() -> None:
    fw = firewall.detect()
    # Every facet of the detected driver (lazy properties) loaded, as a worker would on its
    # first call; then the masquerade batch path run once.
    _ = (fw.masquerade, fw.forward, fw.portmap, fw.macspoof)
    key = firewall.AttachmentKey(network="pycni-warm", container_id="warm", ifname="eth0")
    fw.masquerade.setup(firewall.Masquerade(key=key, network_subnets=("10.255.255.0/24",),
                                            sources=("10.255.255.2",)))
    fw.masquerade.teardown(key)
