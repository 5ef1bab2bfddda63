"""The main job of `make run`: a container network namespace taken through the CNI verbs.

It installs the plugin executables into a scratch directory, creates a network namespace,
and runs ADD, CHECK, STATUS, DEL and GC on the default networks through ``pycni.cni.invoke``,
exactly as a CNI runtime would, then removes everything it made.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from pycni.cni.conf import find_conflist
from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.install import CONF_SOURCE, install
from pycni.net import netns


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> int:
    scratch = tempfile.mkdtemp(prefix="pycni-demo-")
    ns_path = os.path.join(netns.NETNS_RUN_DIR, f"pycni-demo-{os.getpid()}")
    try:
        bin_dir = os.path.join(scratch, "bin")
        install(bin_dir=bin_dir, conf_dir=None)
        invoker = Invoker(path=(bin_dir,), cache_dir=os.path.join(scratch, "cache"))
        netns.create(ns_path)
        network = find_conflist(str(CONF_SOURCE), "none")
        rt = RuntimeConf(container_id="demo", netns=ns_path, ifname="eth0")
        _step(f"ADD network {network.name!r} to {ns_path}")
        print(json.dumps(invoker.add(network, rt).to_dict(), indent=2))
        _step("CHECK")
        invoker.check(network, rt)
        print("ok")
        _step("STATUS")
        invoker.status(network)
        print("ok")
        _step("DEL, then GC with no valid attachments")
        invoker.delete(network, rt)
        invoker.gc(network, [])
        print("ok: cache", os.listdir(os.path.join(scratch, "cache", "results")) or "empty")
    finally:
        netns.remove(ns_path)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
