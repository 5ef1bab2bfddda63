"""Plugin registry and the entry point of the plugin executables.

Each executable in ``plugins/`` calls ``launch(<type>)``. What skel must know before importing
a plugin module (its versions, its CNI_ARGS keys) lives here, so VERSION and every input error
are answered without importing pyroute2 or the plugin's logic.
"""

from __future__ import annotations

from typing import Final

from pycni.cni.skel import PluginInfo

__all__ = ["PLUGINS", "launch"]

PLUGINS: Final[dict[str, PluginInfo]] = {
    info.name: info
    for info in (
        # Bridge passes its env on to IPAM, so it accepts IPAM's CNI_ARGS key too.
        PluginInfo(
            name="bridge", module="pycni.plugins.bridge", known_cni_args=frozenset({"MAC", "IP"})
        ),
        PluginInfo(
            name="host-local",
            module="pycni.plugins.host_local",
            known_cni_args=frozenset({"IP"}),
            acts_in_netns=False,
        ),
        PluginInfo(name="loopback", module="pycni.plugins.loopback"),
        PluginInfo(name="none", module="pycni.plugins.none"),
        PluginInfo(name="portmap", module="pycni.plugins.portmap"),
        PluginInfo(name="firewall", module="pycni.plugins.firewall", acts_in_netns=False),
        # host mode acts on (reads) the runtime's own netns by definition.
        PluginInfo(name="host", module="pycni.plugins.host", allow_own_netns=True),
        PluginInfo(name="container", module="pycni.plugins.container"),
        PluginInfo(name="bandwidth", module="pycni.plugins.bandwidth"),
        PluginInfo(name="tuning", module="pycni.plugins.tuning", known_cni_args=frozenset({"MAC"})),
        # Name resolution; also under containers/dnsname's type, which podman writes into the
        # networks it creates when it finds a `dnsname` executable. Podman and CRI pass the
        # container (pod) name as K8S_POD_NAME.
        PluginInfo(name="pycni-dns", module="pycni.plugins.dns",
                   known_cni_args=frozenset({"K8S_POD_NAME"})),
        PluginInfo(name="dnsname", module="pycni.plugins.dns",
                   known_cni_args=frozenset({"K8S_POD_NAME"})),
    )
}


def launch(name: str) -> int:
    """Run plugin ``name`` for this process's CNI_* environment, stdin and stdout: its exit
    status (the launcher has made it a one-shot process first and exits with it:
    ``pycni.launcher._in_process``)."""
    from pycni.cni import skel

    return skel.main(PLUGINS[name])
