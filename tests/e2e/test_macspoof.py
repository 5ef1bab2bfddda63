"""`bridge` with ``macspoofchk: true``: a container that changes its MAC is cut off.

Proven with packets in sandbox namespaces; the nftables state is read back with ``nft``.
"""

from __future__ import annotations

import pytest

from pycni.cni.conf import find_conflist
from pycni.cni.errors import CNIError
from pycni.firewall.model import AttachmentKey
from pycni.net import netns
from tests.e2e.bridge_support import Sandbox, bridge_conflist, nsexec, ping

GATEWAY = "10.99.0.1"


def _macspoof_table(sandbox: Sandbox) -> str:
    out = nsexec(sandbox.host_ns, "nft", "list", "table", "bridge", "pycni_macspoof")
    assert out.returncode == 0, out.stderr
    return out.stdout


def _label(cid: str) -> str:
    return AttachmentKey("testnet", cid, "eth0").label


def test_a_container_that_changes_its_mac_is_cut_off(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, macspoofchk=True))
    sandbox.add("a")
    b = sandbox.add("b")
    ca, cb = sandbox.containers["a"], sandbox.containers["b"]
    assert ping(ca, GATEWAY)
    assert ping(ca, b.ips[0].ip)
    sandbox.check("a")
    table = _macspoof_table(sandbox)
    assert _label("a") in table
    assert _label("b") in table
    # a spoofs: every frame it sends now carries a source MAC not its own
    assert nsexec(ca, "ip", "link", "set", "eth0", "address", "02:de:ad:be:ef:01").returncode == 0
    assert nsexec(ca, "ip", "neigh", "flush", "all").returncode == 0
    assert not ping(ca, GATEWAY, wait=1)
    assert not ping(ca, b.ips[0].ip, wait=1)
    assert ping(cb, GATEWAY)  # b kept its MAC
    with pytest.raises(CNIError, match="MAC"):
        sandbox.check("a")
    sandbox.delete("a")
    table = _macspoof_table(sandbox)
    assert _label("a") not in table
    assert _label("b") in table
    sandbox.delete("b")
    assert "comment" not in _macspoof_table(sandbox)


def test_without_macspoofchk_a_changed_mac_still_works(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir))
    sandbox.add("a")
    ca = sandbox.containers["a"]
    assert nsexec(ca, "ip", "link", "set", "eth0", "address", "02:de:ad:be:ef:01").returncode == 0
    assert ping(ca, GATEWAY)
    assert "pycni_macspoof" not in sandbox.nft_ruleset()


def test_del_after_the_netns_is_gone_and_gc_remove_elements(sandbox: Sandbox) -> None:
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, macspoofchk=True))
    sandbox.add("a")
    sandbox.add("b")
    sandbox.add("c")
    netns.remove(sandbox.containers["a"])
    sandbox.delete("a")
    (sandbox.cache_dir / "results" / "testnet-b-eth0").unlink()  # the runtime forgot b
    conf = find_conflist(str(sandbox.conf_dir), "testnet")
    with netns.enter(sandbox.host_ns):
        sandbox.invoker().gc(conf, [("c", "eth0")])
    table = _macspoof_table(sandbox)
    assert _label("a") not in table
    assert _label("b") not in table
    assert _label("c") in table
    sandbox.check("c")


def test_an_add_failing_after_the_port_is_checked_leaves_no_element(sandbox: Sandbox) -> None:
    """The gateway step fails (the bridge holds another address in the subnet): the undo
    stack removes the elements macspoofchk had added."""
    sandbox.write_conf(bridge_conflist(data_dir=sandbox.data_dir, macspoofchk=True))
    sandbox.add("a")
    before = _macspoof_table(sandbox)
    host = sandbox.host_ns
    assert nsexec(host, "ip", "addr", "flush", "dev", "pycni0").returncode == 0
    assert nsexec(host, "ip", "addr", "add", "10.99.0.254/24", "dev", "pycni0").returncode == 0
    with pytest.raises(CNIError, match="already has an IP address"):
        sandbox.add("b")
    assert _macspoof_table(sandbox) == before
    assert _label("b") not in before
