"""The README's main job, as a function the Makefile can call (`make run`).

Starts ``busybox httpd`` in a bridge container, fetches its page (through ``-p 8080:80`` when
the pycni network has a portMappings plugin, directly from the container's IP until then),
shows ``inspect``, walks through the seeds' manual steps (find the PID, link the netns,
``ip netns exec``) and removes the container; the host is left as before, except the bridge.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable

from pycni_run import network
from pycni_run.config import load_config
from pycni_run.errors import RunError
from pycni_run.spec import DEFAULT_NETWORK, NetworkRequest

__all__ = ["demo"]

PAGE = "hello from pycni"
NAME = "web"


def _cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pycni_run.cli", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RunError(f"pycni-run {' '.join(args)}: {proc.stderr.strip()}", proc.returncode)
    return proc.stdout


def _publishes_ports() -> bool:
    try:
        network.check_networks(load_config(), "demo", [NetworkRequest(name=DEFAULT_NETWORK)],
                               ports=True)
    except RunError:
        return False
    return True


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - a fixed http URL
        return str(reply.read().decode())


def demo(say: Callable[[str], None] = print) -> int:
    """Run the walkthrough; 0 when the page came back."""
    published = _publishes_ports()
    server = f"mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p 80 -h /www"
    ports = ["-p", "8080:80"] if published else []
    say(f"$ pycni-run run -d --name {NAME} {' '.join(ports)} busybox sh -c '...httpd -f -p 80'")
    say(_cli("run", "-d", "--name", NAME, *ports, "busybox", "sh", "-c", server).strip())
    try:
        doc = json.loads(_cli("inspect", NAME))
        ip = doc["NetworkSettings"]["IPAddress"]
        url = "http://127.0.0.1:8080/" if published else f"http://{ip}:80/"
        if not published:
            say("(no portmap plugin yet: fetching from the container's IP instead of -p 8080:80)")
        say(f"$ curl {url}")
        page = _fetch(url)
        say(page.rstrip())
        say(f"$ pycni-run inspect {NAME}")
        say(json.dumps(doc, indent=2))
        _seed_steps(say)
    finally:
        say(f"$ pycni-run rm -f {NAME}")
        say(_cli("rm", "-f", NAME).strip())
    return 0 if page.strip() == PAGE else 1


def _seed_steps(say: Callable[[str], None]) -> None:
    """The seeds' manual steps: find the PID, link /proc/PID/ns/net, `ip netns exec`."""
    pid = _cli("inspect", "-f", "{{.State.Pid}}", NAME).strip()
    say(f"$ pycni-run inspect -f '{{{{.State.Pid}}}}' {NAME}\n{pid}")
    say(f"$ pycni-run netns link {NAME} seed-{NAME}   # seeds: ln -s /proc/{pid}/ns/net ...")
    say(_cli("netns", "link", NAME, f"seed-{NAME}").strip())
    shown = subprocess.run(
        ["ip", "netns", "exec", f"seed-{NAME}", "ip", "-br", "addr"],
        capture_output=True,
        text=True,
        check=False,
    )
    say(f"$ ip netns exec seed-{NAME} ip -br addr\n{shown.stdout.rstrip()}")
    say(f"$ pycni-run netns unlink seed-{NAME}")
    _cli("netns", "unlink", f"seed-{NAME}")


if __name__ == "__main__":
    sys.exit(demo())
