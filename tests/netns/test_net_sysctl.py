"""pycni.net.sysctl on real /proc/sys/net, only ever inside throwaway namespaces.

/proc/sys/net follows the network namespace of the thread that opens the file, so every call
here is wrapped in ``netns.enter``; ``sysctl -n`` run inside the namespace is the oracle.
"""

from __future__ import annotations

import subprocess

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.net import netns, sysctl
from pycni.net.ipr import open_ipr
from tests.conftest import MakeNetNS


def sysctl_n(ns: str, key: str) -> str:
    with netns.enter(ns):
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_ensure_ip_forward_in_namespace_only(make_netns: MakeNetNS) -> None:
    ns, bystander = make_netns("a"), make_netns("b")
    root_before = sysctl.read("net.ipv4.ip_forward")  # read-only look at the root netns
    with netns.enter(ns):
        assert sysctl.read("net.ipv4.ip_forward") == "0"
        assert sysctl.ensure("net.ipv4.ip_forward", 1) is True
        assert sysctl.ensure("net.ipv4.ip_forward", "1") is False
        assert sysctl.read("net/ipv4/ip_forward") == "1"
    assert sysctl_n(ns, "net.ipv4.ip_forward") == "1"
    assert sysctl_n(bystander, "net.ipv4.ip_forward") == "0"
    assert sysctl.read("net.ipv4.ip_forward") == root_before


def test_ipv6_forwarding_write_read(host_ns: str) -> None:
    with netns.enter(host_ns):
        sysctl.write("net.ipv6.conf.all.forwarding", "1")
        assert sysctl.read("net.ipv6.conf.all.forwarding") == "1"
    assert sysctl_n(host_ns, "net.ipv6.conf.all.forwarding") == "1"


def test_per_interface_key_with_dotted_ifname(host_ns: str) -> None:
    with open_ipr(host_ns) as ipr:
        ipr.link("add", ifname="v0.100", kind="veth", peer="v1.100")
    path_key = sysctl.conf_key("ipv6", "v0.100", "accept_ra")
    with netns.enter(host_ns):
        assert sysctl.ensure(path_key, 0) is True
        assert sysctl.read("net.ipv6.conf.v0/100.accept_ra") == "0"  # sysctl(8) dotted form
        sysctl.write("net/ipv4/conf/v0.100/arp_notify", 1)
        assert sysctl.read(sysctl.conf_key("ipv4", "v0.100", "arp_notify")) == "1"
    assert sysctl_n(host_ns, "net/ipv6/conf/v0.100/accept_ra") == "0"
    assert sysctl_n(host_ns, "net/ipv4/conf/v0.100/arp_notify") == "1"


def test_kernel_rejection_surfaces_as_cni_error(host_ns: str) -> None:
    with netns.enter(host_ns):
        with pytest.raises(CNIError) as bad_value:
            sysctl.write("net.ipv4.ip_forward", "not-a-number")
        assert bad_value.value.code == ErrorCode.IO_FAILURE
        assert isinstance(bad_value.value.__cause__, OSError)
        assert sysctl.read("net.ipv4.ip_forward") == "0"
        with pytest.raises(CNIError) as missing:
            sysctl.read("net.ipv4.conf.nosuchdev.rp_filter")
        assert missing.value.code == ErrorCode.IO_FAILURE
