"""A DNS load client for bench_dns: ``python -m bench.dns_client SERVER NAME SECONDS WINDOW``.

Run inside a container's netns. Keeps WINDOW queries for NAME (type A) in flight to SERVER:53
over one connected UDP socket for SECONDS, each with its own id, and prints one JSON line:
answered, lost (no reply within a second) and every answer's latency in microseconds. The
query is built once by dnspython; only its id changes.
"""

from __future__ import annotations

import json
import socket
import sys
import time

import dns.message


def run(server: str, name: str, seconds: float, window: int) -> dict[str, object]:
    wire = bytearray(dns.message.make_query(name, "A").to_wire())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, 53))
    sock.settimeout(1.0)
    sent_at: dict[int, float] = {}
    latencies: list[int] = []
    lost = 0
    next_id = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        while len(sent_at) < window:
            next_id = (next_id + 1) & 0xFFFF
            wire[0:2] = next_id.to_bytes(2, "big")
            sent_at[next_id] = time.perf_counter()
            sock.send(wire)
        try:
            reply = sock.recv(4096)
        except TimeoutError:
            lost += len(sent_at)
            sent_at.clear()
            continue
        started = sent_at.pop(int.from_bytes(reply[:2], "big"), None)
        if started is not None:
            latencies.append(round((time.perf_counter() - started) * 1e6))
    return {"answered": len(latencies), "lost": lost, "seconds": seconds,
            "latencies_us": latencies}


if __name__ == "__main__":
    server, name, seconds, window = sys.argv[1:5]
    print(json.dumps(run(server, name, float(seconds), int(window))))
