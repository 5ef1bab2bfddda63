"""The resolver's state: records -> zones (per network) and sandboxes (per container netns).

Attachments are keyed by their label (network, container id, ifname), sandboxes by the netns
identity (``dev:inode``): a container on two networks is one netns with two attachments, one
pair of sockets, and a view of both networks. The records on disk are the truth: ``attach``
reads the record the plugin has just written, ``rebuild`` (at start) and ``sync`` (after GC)
read the directory, and a record's netns is re-opened from its path only when that path still
names the namespace recorded at ADD.

A sandbox whose netns path is gone or names another namespace (its container died and no DEL
came) is stale: ``sweep`` closes its sockets, which would otherwise keep the dead namespace
alive. Its names stay until DEL or GC removes the record, as the records say.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from pycni.cni.errors import CNIError, ErrorCode, NetNSNotFound
from pycni.dns.loop import Loop
from pycni.dns.records import RecordStore, Registration, netns_identity
from pycni.dns.sandbox import Sandbox, open_listeners
from pycni.dns.upstream import Forwarder
from pycni.dns.zone import View, Zone
from pycni.net.netns import open_netns

__all__ = ["Registry"]

log = logging.getLogger("pycni.dns")


class Registry:
    def __init__(self, store: RecordStore, loop: Loop, forwarder: Forwarder) -> None:
        self.store, self.loop, self.forwarder = store, loop, forwarder
        self.regs: dict[str, Registration] = {}
        self.zones: dict[str, Zone] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.views: dict[frozenset[str], View] = {}

    # -------------------------------------------------------------------- control requests

    def attach(self, label: str, netns_fd: int) -> None:
        """Serve the attachment whose record the plugin wrote, in the netns it passed."""
        reg = self.store.load(label)
        if reg is None:
            raise CNIError(ErrorCode.UNKNOWN_CONTAINER, "no DNS record", f"label {label}")
        if netns_identity(netns_fd) != reg.netns_id:
            raise CNIError(ErrorCode.INVALID_NETNS, "the netns passed is not the recorded one",
                           reg.describe())
        self._serve(reg, netns_fd)
        log.info("attached %s: %s -> %s", reg.describe(), ", ".join(reg.names) or "(no names)",
                 ", ".join(reg.ips))

    def detach(self, label: str) -> None:
        reg = self._forget(label)
        if reg is not None:
            log.info("detached %s", reg.describe())

    def sync(self, network: str) -> None:
        """Make the network's attachments what its records on disk are."""
        on_disk = set(self.store.labels(network))
        for label in [lb for lb, r in self.regs.items() if r.network == network]:
            if label not in on_disk:
                self.detach(label)
        for label in on_disk - set(self.regs):
            self._restore(label)

    def status(self, label: str | None) -> dict[str, Any]:
        if label is None:
            return {"attachments": len(self.regs), "sandboxes": len(self.sandboxes),
                    "pid": os.getpid()}
        reg = self.regs.get(label)
        netns_id = reg.netns_id if reg is not None else ""
        sandbox = self.sandboxes.get(netns_id)
        return {"serving": bool(sandbox and sandbox.serving and label in self.regs),
                "netnsID": netns_id}

    # ------------------------------------------------------------------ start and sweeping

    def rebuild(self) -> None:
        """At start: every record on disk, its netns re-opened where it still exists."""
        for label in self.store.labels():
            self._restore(label)
        log.info("rebuilt %d attachments in %d namespaces from %s", len(self.regs),
                 sum(1 for s in self.sandboxes.values() if s.serving), self.store.dir)

    def sweep(self) -> None:
        """Close the sockets of sandboxes whose netns is gone."""
        for sandbox in self.sandboxes.values():
            if sandbox.serving and not _same_netns(sandbox.netns_path, sandbox.netns_id):
                log.info("netns %s (%s) is gone: closing its sockets", sandbox.netns_path,
                         sandbox.netns_id)
                sandbox.close()

    def close(self) -> None:
        for sandbox in self.sandboxes.values():
            sandbox.close()

    # ------------------------------------------------------------------------- internals

    def _restore(self, label: str) -> None:
        try:
            reg = self.store.load(label)
        except CNIError as err:
            log.warning("skipping record %s: %s", label, err)
            return
        if reg is None:
            return
        try:
            fd = open_netns(reg.netns)
        except NetNSNotFound:
            self._serve(reg, None)  # its names stay until DEL or GC; no sockets to open
            return
        try:
            same = netns_identity(fd) == reg.netns_id
            self._serve(reg, fd if same else None)
        except CNIError as err:
            log.warning("cannot listen for %s again: %s", reg.describe(), err)
            self._serve(reg, None)  # its names still resolve for the others
        finally:
            os.close(fd)

    def _serve(self, reg: Registration, netns_fd: int | None) -> None:
        self._forget(reg.label)  # a repeated ADD, maybe from another netns
        sandbox = self.sandboxes.get(reg.netns_id)
        if sandbox is None:
            sandbox = Sandbox(netns_id=reg.netns_id, netns_path=reg.netns, loop=self.loop,
                              forwarder=self.forwarder, view=View(zones=()))
        if netns_fd is not None and not sandbox.serving:
            sandbox.serve(*open_listeners(netns_fd, f"netns {reg.netns}"))
        self.sandboxes[reg.netns_id] = sandbox
        self.regs[reg.label] = reg
        self.zones.setdefault(reg.network, Zone(reg.network)).put(reg)
        sandbox.netns_path = reg.netns or sandbox.netns_path
        sandbox.labels.add(reg.label)
        self._changed(reg.network, sandbox)

    def _forget(self, label: str) -> Registration | None:
        reg = self.regs.pop(label, None)
        if reg is None:
            return None
        self.zones[reg.network].drop(label)
        sandbox = self.sandboxes.get(reg.netns_id)
        if sandbox is not None:
            sandbox.labels.discard(label)
            if not sandbox.labels:
                sandbox.close()
                del self.sandboxes[sandbox.netns_id]
        self._changed(reg.network, sandbox)
        return reg

    def _changed(self, network: str, sandbox: Sandbox | None) -> None:
        """A zone changed: drop cached answers that may show it; re-pick the sandbox's view."""
        for view in self.views.values():
            if network in view.networks:
                view.forget()
        if sandbox is not None and sandbox.labels:
            networks = frozenset(self.regs[label].network for label in sandbox.labels)
            found = self.views.get(networks)
            if found is None:
                found = View(zones=tuple(self.zones[n] for n in sorted(networks)))
                self.views[networks] = found
            sandbox.view = found


def _same_netns(path: str, netns_id: str) -> bool:
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return f"{st.st_dev}:{st.st_ino}" == netns_id
    return False
