"""A sandboxed bridge network for e2e tests: conf dir, invoker, containers, an outside host."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from pycni.cni.conf import find_conflist
from pycni.cni.invoke import Invoker, RuntimeConf
from pycni.cni.types import Result
from pycni.net import netns
from pycni.plugins.runner import FORKED

REFERENCE_BIN = Path("/usr/lib/cni")


def bridge_conflist(
    *,
    name: str = "testnet",
    data_dir: Path,
    ranges: list[list[dict[str, Any]]] | None = None,
    bridge: str = "pycni0",
    version: str = "1.1.0",
    **bridge_keys: Any,
) -> dict[str, Any]:
    ipam = {
        "type": "host-local",
        "ranges": ranges or [[{"subnet": "10.99.0.0/24"}]],
        "dataDir": str(data_dir),
    }
    plugin = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": True,
        "ipam": ipam,
        **bridge_keys,
    }
    return {"cniVersion": version, "name": name, "plugins": [plugin]}


def nsexec(path: str, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a command inside a netns (tests only; the product never shells out to ip)."""
    return subprocess.run(
        ["nsenter", f"--net={path}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ping(path: str, address: str, *, count: int = 1, wait: int = 2) -> bool:
    return nsexec(path, "ping", "-c", str(count), "-W", str(wait), "-n", address).returncode == 0


def ip_json(path: str, *args: str) -> Any:
    out = nsexec(path, "ip", "-j", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout or "[]")


def link_names(path: str) -> set[str]:
    with netns.enter(path), IPRoute() as ipr:
        return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}


@dataclass
class Sandbox:
    """One sandbox host netns with a network config and an invoker running there."""

    host_ns: str
    conf_dir: Path
    cache_dir: Path
    data_dir: Path
    bin_dir: Path
    make_netns: Callable[..., str]
    network: str = "testnet"
    containers: dict[str, str] = field(default_factory=dict)

    def write_conf(self, conflist: Mapping[str, Any], filename: str = "10-test.conflist") -> None:
        (self.conf_dir / filename).write_text(json.dumps(conflist))

    def invoker(self, bin_dir: Path | None = None) -> Invoker:
        return Invoker(
            path=(str(bin_dir or self.bin_dir),), cache_dir=str(self.cache_dir), timeout=60,
            runner=FORKED,
        )

    def runtime_conf(self, cid: str, **kw: Any) -> RuntimeConf:
        if cid not in self.containers:
            self.containers[cid] = self.make_netns(cid, lo_up=False)
        return RuntimeConf(container_id=cid, netns=self.containers[cid], ifname="eth0", **kw)

    def add(
        self, cid: str, *, network: str | None = None, bin_dir: Path | None = None, **kw: Any
    ) -> Result:
        conf = find_conflist(str(self.conf_dir), network or self.network)
        rt = self.runtime_conf(cid, **kw)
        with netns.enter(self.host_ns):
            return self.invoker(bin_dir).add(conf, rt)

    def delete(
        self, cid: str, *, network: str | None = None, bin_dir: Path | None = None, **kw: Any
    ) -> None:
        conf = find_conflist(str(self.conf_dir), network or self.network)
        rt = self.runtime_conf(cid, **kw)
        with netns.enter(self.host_ns):
            self.invoker(bin_dir).delete(conf, rt)

    def check(self, cid: str, *, network: str | None = None) -> None:
        conf = find_conflist(str(self.conf_dir), network or self.network)
        with netns.enter(self.host_ns):
            self.invoker().check(conf, self.runtime_conf(cid))

    def allocations(self, network: str | None = None) -> list[str]:
        directory = self.data_dir / (network or self.network)
        if not directory.exists():
            return []
        names = [p.name for p in directory.iterdir() if p.is_file()]
        return sorted(n for n in names if n[0].isdigit() or ":" in n)

    def host_veths(self) -> set[str]:
        return {n for n in link_names(self.host_ns) if n.startswith("veth")}

    def nft_ruleset(self) -> str:
        out = nsexec(self.host_ns, "nft", "list", "ruleset")
        assert out.returncode == 0, out.stderr
        return out.stdout

    def connect_outside(
        self, *, host_cidr: str = "10.200.0.1/24", outside_cidr: str = "10.200.0.2/24"
    ) -> str:
        """An "outside" netns reachable from the host over a veth, with no route back to the
        container subnet: only masqueraded traffic can get an answer."""
        outside = self.make_netns("outside")
        with netns.enter(self.host_ns), IPRoute() as ipr:
            fd = netns.open_netns(outside)
            try:
                ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "wan0", "net_ns_fd": fd})
            finally:
                os.close(fd)
            idx = ipr.link_lookup(ifname="up0")[0]
            host_ip, plen = host_cidr.split("/")
            ipr.addr("add", index=idx, address=host_ip, prefixlen=int(plen))
            ipr.link("set", index=idx, state="up")
        with netns.enter(outside), IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="wan0")[0]
            out_ip, plen = outside_cidr.split("/")
            ipr.addr("add", index=idx, address=out_ip, prefixlen=int(plen))
            ipr.link("set", index=idx, state="up")
        return outside
