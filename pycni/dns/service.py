"""The resolver's control socket, served in its event loop (the protocol is ``control``'s).

Root peers only (SO_PEERCRED, on top of the 0700 directory and 0600 socket). One request per
connection: read it (with at most one descriptor), act on the registry, reply, close. A
refusal carries its CNI code back to the plugin, which reports it as its own error.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from pycni.cni.errors import CNIError, ErrorCode
from pycni.dns.control import MAX_MESSAGE, decode, encode
from pycni.dns.loop import Loop
from pycni.dns.registry import Registry
from pycni.firewall.model import parse_label
from pycni.warmfork import listener
from pycni.warmfork.peer import peer_uid, received_fds

__all__ = ["ControlServer"]

log = logging.getLogger("pycni.dns")


class ControlServer:
    def __init__(self, path: str, loop: Loop, registry: Registry) -> None:
        self.path, self.loop, self.registry = path, loop, registry
        self.sock = listener.bind(path, log)
        loop.register(self.sock, self._accept)

    def close(self) -> None:
        listener.close(self.loop.selector, self.sock, self.path)

    def _accept(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        pid, uid = peer_uid(conn)
        if uid not in (0, os.geteuid()):
            log.warning("refused a control connection from pid %d (uid %d)", pid, uid)
            conn.close()
            return
        conn.setblocking(False)
        self.loop.register(conn, self._request)
        self._request(conn)  # the plugin sends right after connecting: usually it is here

    def _request(self, conn: socket.socket) -> None:
        """Read the one request, answer it, close (wait if it has not arrived yet)."""
        try:
            data, ancdata, flags, _ = conn.recvmsg(
                MAX_MESSAGE, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return  # not yet: the loop calls again when it is readable
        except OSError as err:
            log.debug("control connection: %s", err)
            data, ancdata, flags = b"", [], 0
        fds = received_fds(ancdata)
        try:
            if data:
                truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))
                conn.send(encode(self._handle(data, fds, truncated=truncated)))
        except OSError as err:
            log.debug("control connection: %s", err)
        finally:
            for fd in fds:
                os.close(fd)
            self.loop.unregister(conn)

    def _handle(self, data: bytes, fds: list[int], *, truncated: bool) -> dict[str, Any]:
        try:
            if truncated:
                raise CNIError(ErrorCode.DECODING_FAILURE, "control request too large")
            try:
                request = decode(data)
            except (ValueError, TypeError) as err:
                raise CNIError(ErrorCode.DECODING_FAILURE, "bad control request",
                               str(err)) from err
            return {"ok": True, **(self._dispatch(request, fds) or {})}
        except CNIError as err:
            return {"ok": False, "code": err.code, "msg": err.msg, "details": err.details}
        except Exception as err:  # the loop serves every container: it must not die here
            log.exception("control request failed")
            return {"ok": False, "code": int(ErrorCode.INTERNAL),
                    "msg": "name resolver failed", "details": f"{type(err).__name__}: {err}"}

    def _dispatch(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
        op = request.get("op")
        label = request.get("label")
        if label is not None and (not isinstance(label, str) or parse_label(label) is None):
            raise CNIError(ErrorCode.DECODING_FAILURE, "bad control request",
                           f"{label!r} is not an attachment label")  # it names a file
        if op == "attach" and isinstance(label, str) and len(fds) == 1:
            self.registry.attach(label, fds[0])
        elif op == "detach" and isinstance(label, str):
            self.registry.detach(label)
        elif op == "sync" and isinstance(request.get("network"), str):
            self.registry.sync(request["network"])
        elif op == "status" and (label is None or isinstance(label, str)):
            return self.registry.status(label)
        else:
            raise CNIError(ErrorCode.DECODING_FAILURE, "bad control request",
                           f"{op!r} with {len(fds)} descriptors")
        return None
