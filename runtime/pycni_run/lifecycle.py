"""A container's start: cgroup, fork, pin, ADD, exec (its end is ``teardown``'s).

``start`` builds every resource under an undo stack and records each one in the state file
as it is made, so a failed start leaves nothing and a crash mid-start is undone by
``rm -f`` (``teardown.teardown``, the mirror image).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

from pycni.failpoints import failpoint
from pycni.net import netns
from pycni.network.store import StoredNetwork
from pycni_run import (
    cgroups,
    network,
    pidfds,
    process,
    rootfs,
    security,
    standby,
    state,
    userns,
)
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError, warn
from pycni_run.idmaps import Mappings
from pycni_run.images import use
from pycni_run.process import Child, InitPlan, Stdio
from pycni_run.spec import HOST_GATEWAY, ContainerSpec, DnsOptions
from pycni_run.state import ContainerState, NetAttachment

__all__ = ["add_attachment", "start"]


def _quietly(what: str, fn: Callable[..., object], *args: Any) -> None:
    """An undo step: report its failure on stderr and let the others run."""
    try:
        fn(*args)
    except (RunError, OSError) as err:
        warn(f"cleanup: {what}: {err}")


def _peer_state(cfg: RuntimeConfig, spec: ContainerSpec) -> ContainerState | None:
    if spec.net.kind != "container":
        return None
    peer = state.load(cfg.containers_dir, spec.net.peer)
    if not peer.running or not peer.netns_path:
        raise RunError(f"cannot join the network of {spec.net.peer}: it is not running")
    return peer


def _open_peer_netns(peer: ContainerState) -> int:
    """container:NAME: NAME's pinned netns, checked to be the one its init (held by a pidfd
    of that very process) is in; the descriptor the new init joins."""
    with peer.pid.opened(f"container {peer.name}") as pidfd:
        fd = netns.open_netns(peer.netns_path)
        try:
            with pidfds.namespace(pidfd, "net") as own:
                if not netns.same(fd, own):
                    raise RunError(f"{peer.netns_path} is not the netns of {peer.name}'s init")
        except BaseException:
            os.close(fd)
            raise
    return fd


def _hostname(spec: ContainerSpec, peer: ContainerState | None) -> str:
    if spec.hostname:
        return spec.hostname
    if peer is not None:
        return peer.hostname
    return socket.gethostname() if spec.net.kind == "host" else spec.name


def _environment(spec: ContainerSpec, hostname: str) -> dict[str, str]:
    env = {"PATH": process.DEFAULT_PATH, "HOSTNAME": hostname, "HOME": "/root"}
    if spec.tty:
        env["TERM"] = "xterm"
    env.update(dict(spec.env))
    return env


def _new_state(spec: ContainerSpec, hostname: str, env: dict[str, str]) -> ContainerState:
    return ContainerState(
        name=spec.name,
        id=spec.id,
        image=spec.rootfs or spec.image,
        command=list(spec.command),
        net_mode=str(spec.net),
        hostname=hostname,
        env=[list(kv) for kv in env.items()],
        workdir=spec.workdir,
        ports=[p.to_cni() for p in spec.ports],
        dns={"servers": list(spec.dns.servers), "search": list(spec.dns.search),
             "options": list(spec.dns.options),
             "extra_hosts": [f"{n}:{a}" for n, a in spec.dns.extra_hosts]},
        auto_remove=spec.auto_remove,
        detached=spec.detach,
        monitor=state.proc_ref(os.getpid()),
        limits={"memory": spec.limits.memory, "cpus": spec.limits.cpus, "pids": spec.limits.pids},
    )


def _kill_and_reap(child: Child) -> None:
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child.pid, 0)


def _etc_for(st: ContainerState, dns: DnsOptions) -> tuple[str, str]:
    """/etc/hosts and /etc/resolv.conf: the addresses and DNS of every network, the first
    network's gateway (``host-gateway``), ``--dns*`` and ``--add-host`` over them."""
    ips = [ip for a in st.networks for ip in network.result_ips(a.result)]
    first = st.networks[0].result if st.networks else None
    servers, search = network.result_nameservers([a.result for a in st.networks])
    extra = list(dns.extra_hosts)
    if dns.wants_host_gateway:
        gateway = network.result_gateway(first)
        if not gateway:
            raise RunError(f"--add-host NAME:{HOST_GATEWAY}: network "
                           f"{st.networks[0].network} gave the container no gateway")
        extra = [(n, gateway if a == HOST_GATEWAY else a) for n, a in extra]
    hosts = rootfs.etc_hosts(st.hostname, ips, extra)
    resolv = rootfs.resolv_conf(dns.servers or servers, dns.search or search, dns.options)
    return hosts, resolv


def start(
    cfg: RuntimeConfig,
    spec: ContainerSpec,
    stdio: Callable[[ContainerState, str], Stdio],
    on_init: Callable[[int], None] = lambda _pidfd: None,
) -> tuple[ContainerState, int | None]:
    """Create and start the container up to its exec; the state and the pty master (-t).

    ``stdio(state, state_dir)`` gives the command's stdio once the name is claimed;
    ``on_init(pidfd)`` is given a pidfd of the init as soon as it exists. A
    loaded image stays pinned (``rmi`` waits) until the state names it.
    """
    with use.pinned_lower(cfg, spec) as lower:
        return _start(cfg, spec, stdio, lower, on_init)


def _start(
    cfg: RuntimeConfig,
    spec: ContainerSpec,
    stdio: Callable[[ContainerState, str], Stdio],
    lower: use.Lower,
    on_init: Callable[[int], None],
) -> tuple[ContainerState, int | None]:
    # ``spec`` was validated where it was built (``run_options.build_spec``), once; the image's
    # defaults and -P (``images.use.resolve_spec``) keep it valid.
    confinement = security.resolve(spec.security, user=spec.user)  # nothing made yet
    userns_request = userns.check(cfg, spec.userns)  # its ids may be mapped: nothing made yet
    limits = replace(spec.limits, devices=confinement.devices)
    networks = network.check_networks(cfg, spec.id, spec.requested_networks,
                                      ports=bool(spec.ports))
    peer = _peer_state(cfg, spec)
    hostname = _hostname(spec, peer)
    env = _environment(spec, hostname)
    directory = state.claim(cfg.containers_dir, spec.name)
    st = _new_state(spec, hostname, env)
    st.security = security.to_doc(confinement)
    with ExitStack() as undo:
        undo.callback(state.release, cfg.containers_dir, spec.name)
        security.save_program(directory, confinement)

        def save() -> None:
            state.save(cfg.containers_dir, st)

        save()
        mappings = userns.reserve(cfg, st, userns_request)  # recorded in the state at once
        # The runtime daemon's spare has an init parked, its namespaces made in the host's
        # user namespace: not for a container with one of its own (discarded after the call).
        held = standby.take() if mappings is None else None
        cg = held.adopt(spec.name, limits, parent=cfg.cgroup_parent) if held else None
        if cg is None:
            cg = cgroups.create(spec.name, limits, parent=cfg.cgroup_parent)
        st.cgroup = cg.to_dict()
        save()
        undo.callback(_quietly, "remove cgroup", cgroups.remove, cg)
        st.storage = os.path.join(cfg.storage_dir, spec.name)
        undo.callback(rootfs.remove_layers, st.storage)
        layers = rootfs.prepare_layers(st.storage, lower.dirs, lower_base=lower.base,
                                       image=lower.image)
        st.rootfs = layers.to_dict()
        plan = InitPlan(
            command=spec.command,
            env=env,
            workdir=spec.workdir,
            hostname=hostname,
            layers=layers,
            cgroup=cg,
            net=spec.net,
            confinement=confinement,
            stdio=stdio(st, directory),
            init=spec.init,
            peer_netns=_open_peer_netns(peer) if peer else -1,
            mounts=spec.mounts,
            read_only=spec.read_only,
        )
        try:
            child = _spawn(plan, held, mappings)
        finally:
            if plan.peer_netns >= 0:
                os.close(plan.peer_netns)  # joined by the init, which is ready (or failed)
        undo.callback(_kill_and_reap, child)
        on_init(child.pidfd)
        # From now on, not once started: a signal in between (the command may already print)
        # would end this monitor and leave the container running without one.
        _forward_signals(child.pidfd)
        st.pid = state.ProcRef.of(child.pid, child.pidfd)
        save()
        master = _network_and_release(cfg, st, child, undo, spec=spec, networks=networks)
        st.status, st.started = "running", time.time()
        save()
        undo.pop_all()
    return st, master


def _spawn(plan: InitPlan, held: standby.Standby | None, mappings: Mappings | None) -> Child:
    if mappings is not None:
        return userns.spawn(plan, mappings)
    return held.launch(plan) if held else process.spawn(plan)


def _network_and_release(
    cfg: RuntimeConfig,
    st: ContainerState,
    child: Child,
    undo: ExitStack,
    *,
    spec: ContainerSpec,
    networks: list[StoredNetwork],
) -> int | None:
    """Pin the netns, CNI ADD of every network in order (each recorded first), then let the
    init exec. The first network is eth0, holds the default route and publishes the ports."""
    with pidfds.namespace(child.pidfd, "net") as netns_fd:
        st.netns_path = network.pin_netns(cfg, st.name, netns_fd)
    state.save(cfg.containers_dir, st)
    undo.callback(_quietly, "unpin netns", network.unpin_netns, st.netns_path)
    for index, (stored, request) in enumerate(zip(networks, spec.requested_networks,
                                                  strict=True)):
        att = NetAttachment(network=stored.name, ifname=network.ifname_of(index),
                            default_route=index == 0, publishes=index == 0, ips=request.ips,
                            mac=request.mac, aliases=request.aliases)
        add_attachment(cfg, st, stored, att, undo)
    failpoint("run.start.after_attach")
    hosts, resolv = _etc_for(st, spec.dns)
    return process.release(child, hosts=hosts, resolv=resolv)


def add_attachment(
    cfg: RuntimeConfig, st: ContainerState, stored: StoredNetwork, att: NetAttachment,
    undo: ExitStack,
) -> NetAttachment:
    """Record ``att``, CNI ADD it, record its result; ``undo`` gets its DEL, then the removal
    of its record."""

    def forget() -> None:
        kept = [a for a in st.networks if a.ifname != att.ifname]
        if len(kept) < len(st.networks):
            st.networks[:] = kept
            state.save(cfg.containers_dir, st)

    st.networks.append(att)
    state.save(cfg.containers_dir, st)  # a crash during ADD is then undone by rm -f's DEL
    undo.callback(_quietly, f"forget {att.network}", forget)
    undo.callback(_quietly, f"CNI DEL {att.network}", network.detach, cfg, st, att)
    done = replace(att, result=network.attach(cfg, stored, st, att))
    st.networks[st.networks.index(att)] = done
    state.save(cfg.containers_dir, st)
    return done


def _forward_signals(pidfd: int) -> None:
    """To the init through its pidfd: never to whoever has its pid once it is reaped."""

    def forward(sig: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, sig)

    for sig in process.FORWARDED:
        signal.signal(sig, forward)
