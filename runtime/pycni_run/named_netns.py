"""Named network namespaces: a container's netns under ``<netns_dir>/LINK`` (what ``ip netns``
lists and enters), by `netns link NAME [LINK]` / `netns unlink LINK`: the seeds' manual
``/var/run/netns`` step.

The seeds did ``ln -s /proc/PID/ns/net /var/run/netns/X``; a symlink dangles when the PID
dies, so this bind-mounts instead (``ip netns attach`` semantics), records the link in the
container's state, and ``rm`` removes it with the container.
"""

from __future__ import annotations

import os

from pycni.net import netns
from pycni_run import network, pidfds, state
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError
from pycni_run.spec import validate_name

__all__ = ["link", "unlink"]


def link(cfg: RuntimeConfig, name: str, link_name: str | None = None) -> str:
    """Make ``ip netns exec LINK`` enter container NAME's netns; the path of the link."""
    with state.locked(cfg.containers_dir, name):
        st = state.load(cfg.containers_dir, name)
        if not st.running:
            raise RunError(f"container {name} is not running")
        target = os.path.join(cfg.netns_dir, validate_name(link_name or name))
        if target == st.netns_path or target in st.links:
            return target  # already there (the container's own pin is <netns_dir>/<name>)
        # From the init's own netns (its pidfd checked to be that very process), not from
        # a pid turned into a /proc path.
        with st.pid.opened(f"container {name}") as pidfd, pidfds.namespace(pidfd, "net") as fd:
            network.pin_netns(cfg, os.path.basename(target), fd)
        st.links.append(target)
        state.save(cfg.containers_dir, st)
    return target


def unlink(cfg: RuntimeConfig, link_name: str) -> None:
    target = os.path.join(cfg.netns_dir, validate_name(link_name))
    for st in state.list_states(cfg.containers_dir):
        if target == st.netns_path:
            raise RunError(f"{target} is {st.name}'s own netns (removed with the container)")
        if target in st.links:
            with state.locked(cfg.containers_dir, st.name):
                current = state.load(cfg.containers_dir, st.name)
                netns.remove(target)
                if target in current.links:
                    current.links.remove(target)
                state.save(cfg.containers_dir, current)
            return
    raise RunError(f"{target} is not a link made by `pycni-run netns link`")
