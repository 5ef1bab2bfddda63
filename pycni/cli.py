"""`pycni`: install the plugins and drive networks cnitool-style.

    pycni install [--bin-dir /opt/cni/bin] [--conf-dir /etc/cni/net.d] [--with-server]
    pycni serve [--socket /run/pycni/pycni.sock] [--timeout 60]
    pycni add|check|del NETWORK NETNS [--ifname eth0] [--container-id ID] [--args K=V;...]
                                      [--cap-args JSON] [--cache-dir DIR]
    pycni status NETWORK
    pycni gc NETWORK [--valid CID:IFNAME ...]
    pycni probe TARGET [--to ADDR[:PORT[/tcp|udp]] ...] [--json] [--timeout S]
    pycni network create|ls|inspect|rm|prune ...   (pycni.network.cli)

The conf dir and plugin path come from NETCONFPATH and CNI_PATH (as for cnitool) or flags.
Errors print the plugin's error JSON on stdout and exit non-zero. Each command imports what it
needs when it runs: `pycni network ls` pays for none of the plugin machinery.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pycni.cni import cache, jsonio
from pycni.cni.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pycni.cni.invoke import RuntimeConf

__all__ = ["main"]

DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_SOCKET = "/run/pycni/pycni.sock"


def _default_container_id(netns: str) -> str:
    import hashlib

    # cnitool's convention, so both tools address the same attachment for a netns.
    return ("cnitool-" + hashlib.sha512(netns.encode()).hexdigest())[: len("cnitool-") + 20]


def _add_network_args(sub: argparse.ArgumentParser, *, attachment: bool) -> None:
    sub.add_argument("network", help="network name (the conflist's `name`)")
    if attachment:
        sub.add_argument("netns", help="path of the container's network namespace")
        sub.add_argument("--ifname", default="eth0")
        sub.add_argument("--container-id", default="")
        sub.add_argument("--args", default="", help="CNI_ARGS, K=V;K2=V2")
        sub.add_argument("--cap-args", default="", help="capability arguments as a JSON object")
    sub.add_argument("--conf-dir", default=os.environ.get("NETCONFPATH", DEFAULT_CONF_DIR))
    sub.add_argument("--cni-path", default=os.environ.get("CNI_PATH", DEFAULT_BIN_DIR))
    sub.add_argument("--cache-dir", default=cache.DEFAULT_CACHE_DIR)
    sub.add_argument("--timeout", type=float, default=60.0, help="seconds per plugin call")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pycni", description=__doc__.split("\n")[0])
    subs = parser.add_subparsers(dest="command", required=True)
    inst = subs.add_parser("install", help="install plugin executables and default networks")
    inst.add_argument("--bin-dir", default=DEFAULT_BIN_DIR)
    inst.add_argument("--conf-dir", default=DEFAULT_CONF_DIR)
    inst.add_argument("--no-conf", action="store_true", help="install executables only")
    inst.add_argument("--with-server", action="store_true",
                      help="also install (and, under systemd, enable and start) pycni-server")
    serve = subs.add_parser("serve", help="run the warm fork server in the foreground")
    serve.add_argument("--socket", default=os.environ.get("PYCNI_SOCKET", DEFAULT_SOCKET))
    serve.add_argument("--timeout", type=float, default=60.0, help="seconds per plugin call")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    from pycni.warmfork import started

    started.add_arguments(serve)  # how pycni.autostart starts one
    for verb in ("add", "check", "del"):
        _add_network_args(
            subs.add_parser(verb, help=f"{verb.upper()} an attachment"), attachment=True
        )
    _add_network_args(subs.add_parser("status", help="STATUS of a network"), attachment=False)
    gc = subs.add_parser("gc", help="remove attachments not in --valid")
    _add_network_args(gc, attachment=False)
    gc.add_argument("--valid", action="append", default=[], metavar="CID:IFNAME")
    _add_probe_args(subs)
    _add_reconcile_args(subs)
    # Listed for --help; `main` hands `network ...` to pycni.network.cli before parsing.
    subs.add_parser("network", help="create, list, inspect and remove networks", add_help=False)
    return parser


def _runtime_conf(ns: argparse.Namespace) -> RuntimeConf:
    from pycni.cni.invoke import RuntimeConf
    from pycni.cni.skel import parse_cni_args

    cap_args: Any = {}
    if ns.cap_args:
        try:
            cap_args = jsonio.loads(ns.cap_args)
        except ValueError as err:
            raise CNIError(ErrorCode.DECODING_FAILURE, "--cap-args is not JSON", str(err)) from err
        if not isinstance(cap_args, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, "--cap-args must be a JSON object")
    return RuntimeConf(
        container_id=ns.container_id or _default_container_id(ns.netns),
        netns=ns.netns,
        ifname=ns.ifname,
        cni_args=tuple(parse_cni_args(ns.args).items()),
        capability_args=cap_args,
    )


def _valid_pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        cid, sep, ifname = item.rpartition(":")
        if not sep or not cid or not ifname:
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "--valid takes CID:IFNAME", repr(item))
        pairs.append((cid, ifname))
    return pairs


def _run_network_verb(ns: argparse.Namespace) -> int:
    from pycni.cni.conf import find_conflist
    from pycni.cni.invoke import Invoker
    from pycni.plugins.runner import FORKED

    invoker = Invoker(
        path=tuple(p for p in ns.cni_path.split(os.pathsep) if p),
        cache_dir=ns.cache_dir,
        timeout=ns.timeout,
        runner=FORKED,  # pycni's own plugins in a fork of this process, others exec'd
    )
    conflist = find_conflist(ns.conf_dir, ns.network)
    if ns.command == "add":
        result = invoker.add(conflist, _runtime_conf(ns))
        print(json.dumps(result.to_dict(conflist.cni_version), indent=2))
    elif ns.command == "check":
        invoker.check(conflist, _runtime_conf(ns))
    elif ns.command == "del":
        invoker.delete(conflist, _runtime_conf(ns))
    elif ns.command == "status":
        invoker.status(conflist)
    elif ns.command == "gc":
        invoker.gc(conflist, _valid_pairs(ns.valid))
    return 0


def _install(ns: argparse.Namespace) -> int:
    from pycni.install import install

    report = install(bin_dir=ns.bin_dir, conf_dir=None if ns.no_conf else ns.conf_dir)
    for path in report.executables:
        print(f"installed {path}")
    for path in report.confs_written:
        print(f"wrote {path}")
    for path in report.confs_kept:
        print(f"kept {path} (exists)")
    if ns.with_server:
        from pycni.server.service import install_service

        for line in install_service():
            print(line)
    return 0


def _serve(ns: argparse.Namespace) -> int:
    from pycni.server.main import serve
    from pycni.warmfork.started import OnDemand

    return serve(socket_path=ns.socket, timeout=ns.timeout, log_level=ns.log_level,
                 started=OnDemand.from_namespace(ns))


# --- probe (issue #7) ---------------------------------------------------------------------
# scapy is imported only inside _probe (by pycni.probe.run): `import pycni.cli` stays light.


def _add_probe_args(subs: Any) -> None:
    probe = subs.add_parser("probe", help="ARP/ICMP/TCP/UDP/path-MTU probes from inside a netns")
    probe.add_argument("target", help="pycni-run container name, netns name, or netns path")
    probe.add_argument("--to", action="append", default=[], metavar="ADDR[:PORT[/tcp|udp]]",
                       help="also probe this address (and port); repeatable")
    probe.add_argument("--json", action="store_true", help="one JSON document on stdout")
    probe.add_argument("--timeout", type=float, default=1.0, help="seconds to wait per probe")
    probe.add_argument("--state-dir", default="/run/pycni", help="pycni-run's state dir")
    probe.add_argument("--cache-dir", default=cache.DEFAULT_CACHE_DIR,
                       help="CNI results cache (results and port mappings of netns targets)")


def _probe(ns: argparse.Namespace) -> int:
    from pycni.probe import ProbeError, parse_destination, resolve_target
    from pycni.probe.report import render_json, render_table
    from pycni.probe.run import run

    try:
        destinations = [parse_destination(text) for text in ns.to]
        target = resolve_target(ns.target, state_dir=ns.state_dir, cache_dir=ns.cache_dir)
    except ProbeError as err:
        print(f"pycni probe: {err}", file=sys.stderr)
        return 2
    report = run(target, destinations=destinations, timeout=ns.timeout)
    print(render_json(report) if ns.json else render_table(report))
    return 0


# --- end probe ---------------------------------------------------------------------------


# --- reconcile (issue #9) -----------------------------------------------------------------


def _add_reconcile_args(subs: Any) -> None:
    rec = subs.add_parser("reconcile", help="restore the firewall rules of every cached "
                          "attachment (after a ruleset flush or a firewalld reload)")
    rec.add_argument("--cache-dir", default=cache.DEFAULT_CACHE_DIR)


def _reconcile(ns: argparse.Namespace) -> int:
    from pycni.reconcile import reconcile

    report = reconcile(ns.cache_dir)
    for line in report.restored:
        print(f"restored {line}")
    for line in report.skipped:
        print(f"skipped {line}", file=sys.stderr)
    for line in report.errors:
        print(f"error {line}", file=sys.stderr)
    return 1 if report.errors else 0


# --- end reconcile ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["network"]:
        from pycni.network.cli import main as network_main

        return network_main(args[1:])
    return _dispatch(_parser().parse_args(args))


def _dispatch(ns: argparse.Namespace) -> int:
    try:
        if ns.command == "install":
            return _install(ns)
        if ns.command == "serve":
            return _serve(ns)
        if ns.command == "probe":
            return _probe(ns)
        if ns.command == "reconcile":
            return _reconcile(ns)
        return _run_network_verb(ns)
    except CNIError as err:
        print(err.to_json(), file=sys.stdout)
        return 1


if __name__ == "__main__":
    sys.exit(main())
