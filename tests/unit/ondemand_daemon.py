"""A stand-in daemon for tests/unit/test_ondemand.py: it reports what it inherited.

``python -m tests.unit.ondemand_daemon SOCKET``: prints "started PID" first thing (a second
instance shows in the log even though it cannot bind), then answers each SEQPACKET connection
with its pid, parent, session, cwd, open descriptors and environment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def state() -> dict[str, object]:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, already closed
    return {"pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "cwd": os.getcwd(),
            "fds": fds, "env": dict(os.environ)}


def main() -> None:
    print(f"started {os.getpid()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(sys.argv[1])
    server.listen(16)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.send(json.dumps(state()).encode())


if __name__ == "__main__":
    main()
