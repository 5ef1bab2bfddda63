"""The resolver's control socket: what the plugin says to it, and how it starts it.

One ``SOCK_SEQPACKET`` connection per request, root only (a 0700 directory, a 0600 socket,
SO_PEERCRED checked). A request is one JSON object; ``attach`` carries the container's netns as
an open descriptor (SCM_RIGHTS), so the resolver enters exactly the namespace the plugin
opened, whatever happens to the path meanwhile. The reply is one JSON object: ``{"ok": true,
...}`` or ``{"ok": false, "code": N, "msg": ..., "details": ...}`` (a CNI error).

    attach {label} + netns fd   serve the attachment whose record the plugin just wrote
    detach {label}              stop serving it (its record is already removed)
    sync {network}              re-read that network's records (after GC removed some)
    status {label?}             {"serving": bool, "netnsID": "dev:ino"} of that attachment
"""

from __future__ import annotations

import array
import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Final

from pycni.cni.errors import CNIError, ErrorCode
from pycni.dns.records import DEFAULT_RUN_DIR
from pycni.warmfork import ondemand

__all__ = [
    "CONTROL_SOCKET",
    "DEFAULT_RESOLV_CONF",
    "LOG_FILE",
    "MAX_MESSAGE",
    "PID_FILE",
    "Resolver",
    "decode",
    "encode",
]

CONTROL_SOCKET: Final = "control.sock"
PID_FILE: Final = "resolver.pid"
LOG_FILE: Final = "resolver.log"
DEFAULT_RESOLV_CONF: Final = "/etc/resolv.conf"
MAX_MESSAGE: Final = 64 * 1024
REPLY_TIMEOUT: Final = 10.0


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise TypeError("a control message is a JSON object")
    return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolver:
    """The resolver serving one run dir, as the plugin reaches it."""

    run_dir: str = DEFAULT_RUN_DIR
    resolv_conf: str = DEFAULT_RESOLV_CONF

    @property
    def service(self) -> ondemand.Service:
        return ondemand.Service(
            name="pycni-dns",
            socket_path=os.path.join(self.run_dir, CONTROL_SOCKET),
            argv=ondemand.python_argv("pycni.dns", "--run-dir", self.run_dir,
                                      "--resolv-conf", self.resolv_conf),
            log_path=os.path.join(self.run_dir, LOG_FILE),
        )

    def request(self, doc: dict[str, Any], *, netns_fd: int | None = None,
                start: bool = True) -> dict[str, Any] | None:
        """Send one request, starting the resolver first if ``start``; its reply. None when
        the resolver is down and ``start`` is false. CNIError (its code) on a refusal,
        code 50 when it cannot be reached."""
        sock = self._open(start)
        if sock is None:
            return None
        with sock:
            try:
                sock.settimeout(REPLY_TIMEOUT)
                rights = [] if netns_fd is None else [
                    (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [netns_fd]).tobytes())]
                sock.sendmsg([encode(doc)], rights)
                reply = decode(sock.recv(MAX_MESSAGE))
            except (OSError, ValueError, TypeError) as err:
                raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE,
                               "no answer from the name resolver", str(err)) from err
        if not reply.get("ok"):
            raise CNIError(int(reply.get("code", ErrorCode.INTERNAL)),
                           str(reply.get("msg", "the name resolver refused")),
                           str(reply.get("details", "")))
        return reply

    def _open(self, start: bool) -> socket.socket | None:
        if not start:
            return ondemand.connect(self.service)
        try:
            return ondemand.ensure(self.service)
        except ondemand.StartError as err:
            raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "the name resolver is down",
                           str(err)) from err
