"""A ``NetworkSpec`` as a conflist any CNI runtime runs unchanged, and the way back.

The chain is the default network's (``conf/10-pycni.conflist``): ``bridge`` (``host-local``
IPAM) -> ``portmap`` -> ``bandwidth`` -> ``firewall`` -> [extra plugins] -> ``loopback``,
declaring the ``mac``, ``ips``, ``portMappings`` and ``bandwidth`` capabilities a runtime fills
in. The extra plugin `network create` puts there unless ``--disable-dns`` is `pycni-dns`
(``dns_plugin``): container names and ``aliases`` resolve on the network. ``cniVersion``
1.0.0 with 1.1.0 listed in ``cniVersions``: libcni 1.1 (podman 4.x, containerd 1.6) decodes
results up to 1.0.0 only, newer runtimes read the list.

An ``--internal`` network: the gateway address stays on the bridge (the host, and a resolver
listening there, stay reachable) but there is no default route, no masquerade, and the
`firewall` plugin's ``internal`` drops whatever is forwarded into or out of the network.

Labels and options ride in the conflist's top-level ``args``, as ``podman_labels`` and
``podman_options`` (where podman's CNI backend writes and reads them, so `podman network
inspect` shows them); ``args.pycni`` marks a network `pycni network create` made. libcni
passes only each plugin's own object to a plugin: top-level keys reach no plugin.
``pycni.network.view`` reads any conflist back.
"""

from __future__ import annotations

from typing import Any, Final

from pycni.network.spec import NetworkSpec, SubnetSpec
from pycni.network.view import MANAGED_MARK

__all__ = ["CNI_VERSION", "CNI_VERSIONS", "dns_plugin", "render_conflist"]

CNI_VERSION: Final = "1.0.0"
CNI_VERSIONS: Final = ("0.4.0", "1.0.0", "1.1.0")


def dns_plugin(*, domain: str, run_dir: str = "") -> dict[str, Any]:
    """The name-resolution plugin of a network: the container's name (``K8S_POD_NAME``) and
    its ``aliases`` resolve; ``run_dir`` "" leaves the plugin's default (/run/pycni/dns)."""
    plugin: dict[str, Any] = {"type": "pycni-dns", "domainName": domain}
    if run_dir:
        plugin["runDir"] = run_dir
    plugin["capabilities"] = {"aliases": True}
    return plugin


def _range(s: SubnetSpec) -> dict[str, str]:
    item = {"subnet": str(s.subnet), "gateway": str(s.gateway)}
    if s.ip_range is not None:
        # host-local's rangeEnd excludes the IPv4 broadcast, as its default does.
        last = s.subnet.broadcast_address - (1 if s.subnet.version == 4 else 0)
        item["rangeStart"] = str(max(s.ip_range.network_address, s.subnet.network_address + 1))
        item["rangeEnd"] = str(min(s.ip_range.broadcast_address, last))
    return item


def _bridge_plugin(spec: NetworkSpec, *, ipam_data_dir: str, backend: str | None
                   ) -> dict[str, Any]:
    ipam: dict[str, Any] = {"type": "host-local", "ranges": [[_range(s)] for s in spec.subnets]}
    if ipam_data_dir:
        ipam["dataDir"] = ipam_data_dir
    plugin: dict[str, Any] = {
        "type": "bridge",
        "bridge": spec.bridge,
        "isGateway": True,
        "isDefaultGateway": not spec.internal,
        "ipMasq": spec.ip_masq,
        "hairpinMode": True,
    }
    if spec.mtu is not None:
        plugin["mtu"] = spec.mtu
    if not spec.icc:
        plugin["portIsolation"] = True
    if backend and spec.ip_masq:
        plugin["ipMasqBackend"] = backend
    plugin["capabilities"] = {"mac": True, "ips": True}
    plugin["ipam"] = ipam
    return plugin


def _firewall_plugin(spec: NetworkSpec, *, backend: str | None) -> dict[str, Any]:
    plugin: dict[str, Any] = {"type": "firewall"}
    if backend:
        plugin["backend"] = backend
    plugin["ingressPolicy"] = "same-bridge" if spec.isolate else "open"
    if spec.internal:
        plugin["internal"] = True
    return plugin


def render_conflist(spec: NetworkSpec, *, ipam_data_dir: str = "",
                    firewall_backend: str | None = None) -> dict[str, Any]:
    plugins = [
        _bridge_plugin(spec, ipam_data_dir=ipam_data_dir, backend=firewall_backend),
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        _firewall_plugin(spec, backend=firewall_backend),
        *(dict(p) for p in spec.extra_plugins),
        {"type": "loopback"},
    ]
    args: dict[str, Any] = {"pycni": dict(MANAGED_MARK)}
    if spec.labels:
        args["podman_labels"] = dict(spec.labels)
    if spec.options:
        args["podman_options"] = dict(spec.options)
    return {"cniVersion": CNI_VERSION, "cniVersions": list(CNI_VERSIONS), "name": spec.name,
            "args": args, "plugins": plugins}
