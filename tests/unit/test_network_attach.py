"""What an attachment is asked and run with: the chain without a default route for every
network but one, the CNI arguments, and the refusals made before anything exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni.cni.conf import parse_conflist
from pycni.cni.errors import CNIError
from pycni.network import store
from pycni.network.attach import AttachRequest, chain_for, check_request, runtime_conf
from tests.support import CONF_DIR

REFERENCE_STYLE = {  # podman's CNI backend writes them like this
    "cniVersion": "0.4.0", "name": "podnet",
    "plugins": [
        {"type": "bridge", "bridge": "cni-podman1", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"},
                                                    {"dst": "192.0.2.0/24"}],
                  "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


def test_without_the_default_route_the_bridge_and_ipam_add_none() -> None:
    ours = parse_conflist((CONF_DIR / "10-pycni.conflist").read_bytes())
    assert chain_for(ours, default_route=True) is ours
    bridge = chain_for(ours, default_route=False).plugins[0]
    assert bridge["isDefaultGateway"] is False
    assert bridge["isGateway"] is True
    theirs = parse_conflist(json.dumps(REFERENCE_STYLE).encode())
    derived = chain_for(theirs, default_route=False)
    assert derived.plugins[0]["ipam"]["routes"] == [{"dst": "192.0.2.0/24"}]
    assert derived.plugins[0]["isDefaultGateway"] is False
    assert derived.plugins[1] == theirs.plugins[1]
    assert json.loads(derived.raw)["plugins"] == [dict(p) for p in derived.plugins]  # cached
    assert (derived.name, derived.cni_version) == (theirs.name, theirs.cni_version)


def test_runtime_conf_carries_the_name_addresses_mac_and_aliases() -> None:
    req = AttachRequest(container_id="c1", netns="/run/netns/c1", ifname="eth1", name="web",
                        ips=("10.89.0.7",), mac="02:00:00:00:00:07", aliases=("www",),
                        capability_args={"portMappings": []})
    rt = runtime_conf("podnet", req)
    assert rt.cni_args == (("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web"))
    assert dict(rt.capability_args) == {"portMappings": [], "ips": ["10.89.0.7"],
                                        "mac": "02:00:00:00:00:07",
                                        "aliases": {"podnet": ["www"]}}


def _network(conf_dir: Path, data_dir: Path, doc: dict[str, Any]) -> store.StoredNetwork:
    doc = json.loads(json.dumps(doc))
    doc["plugins"][0]["ipam"]["dataDir"] = str(data_dir)
    doc["plugins"][0]["capabilities"] = {"ips": True}
    (conf_dir / "50-podnet.conflist").write_text(json.dumps(doc))
    found = store.load_named(str(conf_dir), "podnet")
    assert found is not None
    return found


def test_requests_refused_before_anything_is_made(tmp_path: Path) -> None:
    network = _network(tmp_path, tmp_path / "ipam", REFERENCE_STYLE)
    (tmp_path / "ipam" / "podnet").mkdir(parents=True)
    (tmp_path / "ipam" / "podnet" / "10.89.0.9").write_text("other-container\r\neth0")
    (tmp_path / "ipam" / "podnet" / "10.89.0.8").write_text("c1\r\neth0")  # its own (retry)

    def check(**kw: Any) -> None:
        check_request(network, AttachRequest(container_id="c1", netns="", **kw))

    check(ips=("10.89.0.7",))
    check(ips=("10.89.0.8",))
    for ips, message in (((("10.90.0.7",)), "outside network podnet"),
                         (("10.89.0.9",), "already in use in network podnet"),
                         (("10.89.0.1",), "is the gateway"),
                         (("bogus",), "invalid IP address")):
        with pytest.raises(CNIError, match=message):
            check(ips=ips)
    with pytest.raises(CNIError, match="does not take a MAC address"):
        check(mac="02:00:00:00:00:01")
    assert sorted(p.name for p in (tmp_path / "ipam" / "podnet").iterdir()) == [
        "10.89.0.8", "10.89.0.9"]
