"""`pycni-run network connect` and `disconnect`: a network added to or taken from a running
container (CNI ADD or DEL on its pinned netns), its state, the results cache and `inspect`
following.

Both hold the container's state lock (``state.locked``) from reading the state to writing it
back, as `rm`, `stop`'s teardown and the container's exit do: a connect never races a
teardown (whichever is second sees what the first left: a teardown DELs what a connect
added; a connect after a teardown finds the container no longer running). The new
attachment takes the first ``eth<N>`` free both in the state and in the netns (a link made by
hand inside is never clobbered), and the default route only if no attachment holds it.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

from pycni_run import lifecycle, network, state
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError, warn
from pycni_run.netspec import parse_connect
from pycni_run.spec import NetworkRequest, validate_name
from pycni_run.state import ContainerState, NetAttachment

__all__ = ["command", "connect", "disconnect"]


def command(cfg: RuntimeConfig, argv: list[str], parser: argparse.ArgumentParser) -> int:
    """``connect [--ip IP] [--ip6 IP] [--alias A]... NETWORK CONTAINER`` or
    ``disconnect [-f] NETWORK CONTAINER`` (``argv[0]``), parsed with ``parser``."""
    verb = argv[0]
    if verb == "connect":
        parser.add_argument("--ip", default="")
        parser.add_argument("--ip6", default="")
        parser.add_argument("--alias", action="append", default=[])
    else:
        parser.add_argument("-f", "--force", action="store_true")
    parser.add_argument("network")
    parser.add_argument("container")
    ns = parser.parse_args(argv[1:])
    container = validate_name(ns.container)
    if verb == "connect":
        connect(cfg, container, parse_connect(ns.network, ip=ns.ip, ip6=ns.ip6,
                                              aliases=ns.alias))
    else:  # `bridge` names the pycni network here too
        disconnect(cfg, container, parse_connect(ns.network).name, force=ns.force)
    return 0


def _running_with_networks(st: ContainerState) -> None:
    if not st.running:
        raise RunError(f"container {st.name} is not running")
    if st.net_mode != "bridge" or not st.netns_path:
        raise RunError(f"container {st.name} runs with --net={st.net_mode}: only a container "
                       "with a network namespace of its own can be connected to networks")


def connect(cfg: RuntimeConfig, container: str, request: NetworkRequest) -> NetAttachment:
    """Attach running ``container`` to ``request.name``; the attachment made."""
    with state.locked(cfg.containers_dir, container):
        st = state.load(cfg.containers_dir, container)
        _running_with_networks(st)
        if st.attachment(request.name) is not None:
            raise RunError(f"container {container} is already connected to network "
                           f"{request.name}")
        stored = network.load_network(cfg, request.name)
        taken = {a.ifname for a in st.networks} | network.links_in(st.netns_path)
        att = NetAttachment(network=stored.name, ifname=network.next_ifname(taken),
                            default_route=not any(a.default_route for a in st.networks),
                            ips=request.ips, aliases=request.aliases)
        network.check_attachment(stored, st.id, att.ifname, request)
        with ExitStack() as undo:
            done = lifecycle.add_attachment(cfg, st, stored, att, undo)
            undo.pop_all()
    return done


def disconnect(cfg: RuntimeConfig, container: str, network_name: str, *, force: bool) -> None:
    """CNI DEL of ``container``'s attachment to ``network_name``. ``force``: forget the
    attachment even if its DEL failed (what it kept is then left to `pycni gc`)."""
    with state.locked(cfg.containers_dir, container):
        st = state.load(cfg.containers_dir, container)
        att = st.attachment(network_name)
        if att is None:
            raise RunError(f"container {container} is not connected to network {network_name}")
        try:
            network.detach(cfg, st, att)
        except RunError as err:
            if not force:
                raise
            warn(f"warning: {err}; forgetting the attachment (-f)")
        st.networks.remove(att)
        state.save(cfg.containers_dir, st)
