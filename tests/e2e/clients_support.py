"""Real CNI clients (podman's CNI backend, containerd's `ctr run --cni`) in a throwaway sandbox.

The sandbox is one process tree in its own mount, network, pid and cgroup namespaces:

* a fresh sysfs (so ``/sys/class/net`` is the sandbox's) and the host's cgroup v1 hierarchies
  mounted again -- rooted, through the cgroup namespace, at a per-test cgroup, so every cgroup
  podman, conmon, containerd or runc creates lands under it and is swept at the end;
* tmpfs over every directory the clients write (``/run``, ``/var/lib``, ``/var/tmp``,
  ``/dev/shm``, ``/etc/containers``, ``/etc/cni``, ``/opt``) and over ``/usr/lib/cni`` (Debian's
  reference plugins, which would otherwise answer for any plugin type pycni lacked);
* pycni's installed executables bind-mounted on ``/opt/cni/bin`` and its conf dir on
  ``/etc/cni/net.d`` -- the fixed paths ``ctr run --cni`` reads (clients.md §3.3).

Its PID 1 (a small Python reaper) waits; each command enters all five namespaces through
``nsenter`` after moving itself into the test cgroup. When PID 1 ends, the kernel kills what is
left in the pid namespace and drops the mounts and the network namespace. ``HostCheck`` proves
the root network namespace, the global sysctls and the clients' usual host paths unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pycni.install import install
from tests.image_support import (
    PATH_ENV,
    Image,
    oci_layout_members,
    rootfs_layer,
    write_docker_archive,
    write_tar,
)

IMAGE: Final = "localhost/busybox:latest"
NETWORK: Final = "pycni"  # the default network `pycni install` writes (conf/10-pycni.conflist)
BIN_DIR: Final = "/opt/cni/bin"
CONF_DIR: Final = "/etc/cni/net.d"

# Directories hidden under tmpfs inside the sandbox: everything the clients (and pycni's
# plugins) write, so that nothing lands on the host.
TMPFS_DIRS: Final = (
    "/run",  # netns pins, runc/crun/containerd state, libpod tmp, pycni's IPAM and locks
    "/var/lib",  # containers (storage, blob cache), containerd, cni (libcni results cache)
    "/var/tmp",
    "/dev/shm",
    "/etc/containers",  # the package's policy.json / registries.conf: replaced by our own
    "/etc/cni",  # the package's 87-podman-bridge.conflist: hidden, pycni's conf goes here
    "/opt",
    "/usr/lib/cni",  # Debian's reference plugins: hidden, so only pycni's can answer
)

# Where the clients are known to write on the host when they are NOT sandboxed
# (clients.md §6); HostCheck lists them before and after and asserts nothing changed.
HOST_PATHS: Final = (
    "/var/lib/cni",  # libcni's results cache, host-local's default dataDir
    "/var/lib/containers",  # podman storage, blob-info cache
    "/var/lib/containerd",
    "/run/runc",
    "/run/crun",
    "/run/containerd",  # shim sockets and runc root (hard-coded), ctr's fifo dir
    "/run/netns",  # podman's netns pins
    "/run/libpod",
    "/run/containers",
    "/etc/cni",
    "/etc/containers",
    "/etc/containerd",
    "/dev/shm/libpod_lock",
)

POLICY_JSON: Final = '{"default": [{"type": "insecureAcceptAnything"}]}\n'

_INIT: Final = textwrap.dedent(
    """
    import json, os, shutil, signal, subprocess, sys, time
    spec = json.loads(sys.argv[1])
    def mount(*args):
        subprocess.run(["mount", *args], check=True)
    subprocess.run(["umount", "-l", "/sys"], check=True)  # as `ip netns exec` does
    mount("-t", "sysfs", "sysfs", "/sys")
    mount("-t", "tmpfs", "-o", "mode=755", "cgroup_root", "/sys/fs/cgroup")
    for opts, point in spec["cgroups"]:
        os.makedirs(point, exist_ok=True)
        mount("-t", "cgroup", "-o", opts, "cgroup", point)
    for d in spec["tmpfs"]:
        mount("-t", "tmpfs", "-o", "mode=755", "sandbox", d)
    for d in spec["dirs"]:
        os.makedirs(d, exist_ok=True)
    for src, dst in spec["binds"]:
        os.makedirs(dst, exist_ok=True)
        mount("--bind", src, dst)
    for path, text in spec["files"].items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.1)
    """
)

# Moves the shell into the test cgroup (one cgroup.procs path per hierarchy), then execs.
_JOIN_CGROUP: Final = 'for f in $PYCNI_TEST_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"'


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    def ok(self) -> str:
        assert self.code == 0, f"rc={self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        return self.stdout


# --------------------------------------------------------------------------- image archive


def build_image_archive(rootfs: Path, out: Path, name: str = IMAGE) -> Path:
    """A docker-archive tarball (``podman load`` and ``ctr images import`` both read it):
    ``manifest.json`` naming one config and one uncompressed layer of ``rootfs``."""
    image = Image(layers=[rootfs_layer(rootfs)], config={
        "Cmd": ["/bin/sh"], "Env": [PATH_ENV]}, name=name)
    return write_docker_archive(image, out)


@dataclass(frozen=True)
class OciImage:
    """One image of an OCI archive: its name and what it runs."""

    name: str
    cmd: Sequence[str] = ("/bin/sh",)
    entrypoint: Sequence[str] = ()


def build_oci_archive(rootfs: Path, out: Path, images: Sequence[OciImage]) -> Path:
    """An OCI image layout tarball (``ctr images import`` reads it) holding ``images``, all
    of one uncompressed layer of ``rootfs``, each named by its ``io.containerd.image.name``."""
    layer = rootfs_layer(rootfs)
    members: dict[str, bytes] = {}
    manifests: list[Any] = []
    for spec in images:
        config: dict[str, Any] = {"Cmd": list(spec.cmd), "Env": [PATH_ENV]}
        if spec.entrypoint:
            config["Entrypoint"] = list(spec.entrypoint)
        one = oci_layout_members(
            Image(layers=[layer], config=config, name=spec.name),
            compress=False,
            annotations={"io.containerd.image.name": spec.name,
                         "org.opencontainers.image.ref.name": spec.name.rsplit(":", 1)[-1]},
        )
        manifests += json.loads(one.pop("index.json"))["manifests"]
        members.update(one)
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()
    return write_tar(out, members)


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class Hierarchy:
    options: str  # what to pass to mount -o ("memory", "none,name=systemd"); "" for cgroup2
    mountpoint: str
    own: str  # this process's cgroup in the hierarchy


def cgroup_hierarchies() -> list[Hierarchy]:
    """The host's cgroup hierarchies (v1 ones and the hybrid cgroup2 mount) and our place there."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            own[names] = path
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, opts = line.split()[:4]
            if fstype == "cgroup2":
                found.append(Hierarchy("", point, own.get("", "/")))
            elif fstype == "cgroup":
                key = ",".join(
                    o for o in opts.split(",") if o not in ("rw", "ro", "relatime")
                    and not o.startswith(("release_agent", "clone_children", "noprefix"))
                )
                mount_opts = key if not key.startswith("name=") else f"none,{key}"
                found.append(Hierarchy(mount_opts, point, own.get(key, "/")))
    return found


@dataclass
class TestCgroup:
    """One cgroup per hierarchy for the sandbox (the root of its cgroup namespace)."""

    name: str
    paths: list[str] = field(default_factory=list)

    def create(self) -> None:
        for h in cgroup_hierarchies():
            path = os.path.join(h.mountpoint, h.own.strip("/"), self.name)
            os.mkdir(path)
            self.paths.append(path)
            if os.path.exists(os.path.join(path, "cpuset.cpus")):
                for key in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset starts empty
                    with open(os.path.join(os.path.dirname(path), key)) as src:
                        value = src.read().strip()
                    with open(os.path.join(path, key), "w") as dst:
                        dst.write(value)

    def procs_files(self) -> str:
        return " ".join(os.path.join(p, "cgroup.procs") for p in self.paths)

    def leftovers(self) -> list[str]:
        """Every cgroup directory below ours (podman's libpod_parent, ctr's default, ...)."""
        found = []
        for path in self.paths:
            for root, dirs, _ in os.walk(path):
                found += [os.path.join(root, d) for d in dirs]
        return sorted(found)

    def sweep(self) -> None:
        """Kill whatever is left inside, then rmdir bottom-up; ours last."""
        for path in self.paths:
            if not os.path.isdir(path):
                continue
            for root, dirs, _ in os.walk(path, topdown=False):
                for d in dirs:
                    _empty_and_remove(os.path.join(root, d))
            _empty_and_remove(path)
        self.paths = [p for p in self.paths if os.path.isdir(p)]


def _empty_and_remove(path: str) -> None:
    for _ in range(200):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        os.rmdir(path)


# --------------------------------------------------------------------------- host check

# Counters and clocks the kernel moves by itself.
_VOLATILE_SYSCTLS: Final = (
    "fs/dentry-state", "fs/inode-nr", "fs/inode-state", "fs/file-nr", "fs/aio-nr",
    "fs/quota/", "fs/binfmt_misc/", "kernel/random/", "kernel/ns_last_pid", "kernel/pty/nr",
    "kernel/tainted", "net/netfilter/nf_conntrack_count", "kernel/sched_domain/",
    "vm/stat_refresh", "kernel/perf_event_max_sample_rate",
)


def _sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for root, _, files in os.walk("/proc/sys"):
        for name in files:
            path = os.path.join(root, name)
            key = path.removeprefix("/proc/sys/")
            if key.startswith(_VOLATILE_SYSCTLS):
                continue
            with contextlib.suppress(OSError), open(path) as f:
                values[key] = f.read()
    return values


def _listing(paths: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for top in paths:
        if not os.path.lexists(top):
            out[top] = []
            continue
        entries = [top]
        for root, dirs, files in os.walk(top):
            entries += [os.path.join(root, n) for n in (*dirs, *files)]
        out[top] = sorted(entries)
    return out


def _cgroup_tops() -> dict[str, list[str]]:
    """Top-level cgroups (podman's ``libpod_parent``, ctr's ``default`` if they escaped);
    other tests' ``pycni-test-*`` sandboxes, which come and go, are not ours to judge."""
    return {
        h.mountpoint: sorted(n for n in os.listdir(h.mountpoint) if not n.startswith("pycni-test-"))
        for h in cgroup_hierarchies()
    }


def _root_netns() -> dict[str, str]:
    cmds = {
        "links": ["ip", "-d", "link", "show"],
        "addrs": ["ip", "addr", "show"],
        "routes": ["ip", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
        "rules": ["ip", "rule", "show"],
        "nft": ["nft", "list", "ruleset"],
    }
    out = {}
    for key, argv in cmds.items():
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        # drop per-link counters that move on their own
        out[key] = proc.stdout
    return out


def _modules() -> str:
    try:
        with open("/proc/modules") as f:
            return "".join(sorted(line.split()[0] + "\n" for line in f))
    except FileNotFoundError:
        return "(no loadable module support)"


@dataclass
class HostCheck:
    """What the host looked like before the clients ran; ``changes()`` says what differs."""

    sysctls: dict[str, str] = field(default_factory=_sysctls)
    paths: dict[str, list[str]] = field(default_factory=lambda: _listing(HOST_PATHS))
    cgroups: dict[str, list[str]] = field(default_factory=_cgroup_tops)
    netns: dict[str, str] = field(default_factory=_root_netns)
    modules: str = field(default_factory=_modules)

    def changes(self) -> list[str]:
        found = []
        now = _sysctls()
        found += [f"sysctl {k}: {v!r} -> {now.get(k)!r}" for k, v in self.sysctls.items()
                  if now.get(k) != v and k in now]
        found += [f"{k}: {sorted(set(v) ^ set(_listing([k])[k]))}"
                  for k, v in self.paths.items() if _listing([k])[k] != v]
        tops = _cgroup_tops()
        found += [f"cgroup {k}: {sorted(set(v) ^ set(tops.get(k, [])))}"
                  for k, v in self.cgroups.items() if tops.get(k) != v]
        netns = _root_netns()
        found += [f"root netns {k} changed" for k, v in self.netns.items() if netns[k] != v]
        if _modules() != self.modules:
            found.append(f"kernel modules: {self.modules!r} -> {_modules()!r}")
        return found

    def restore_sysctls(self) -> list[str]:
        """Write back any global sysctl a client changed; the ones restored."""
        now, restored = _sysctls(), []
        for key, value in self.sysctls.items():
            if key in now and now[key] != value:
                with contextlib.suppress(OSError), open(f"/proc/sys/{key}", "w") as f:
                    f.write(value)
                restored.append(key)
        return restored


# --------------------------------------------------------------------------- the sandbox


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@dataclass
class ClientSandbox:
    workdir: Path
    cni_bin: Path
    conf_dir: Path
    cgroup: TestCgroup
    files: Mapping[str, str] = field(default_factory=dict)
    plugin_mode: str = "inprocess"  # or "server": a `pycni serve` inside the sandbox
    proc: subprocess.Popen[str] | None = None
    init_pid: int = 0
    own_links: set[str] = field(default_factory=set)  # the test's own links (not a pod's)
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        # The clients pass their environment on to the plugins they exec. A `pycni serve`
        # outside could not see the sandbox's mounts: plugins run in-process, or through the
        # sandbox's own server on the default socket (/run/pycni/pycni.sock, its tmpfs).
        hide = ("PYCNI_SOCKET", "PYCNI_NO_SERVER")
        env = {k: v for k, v in os.environ.items() if k not in hide}
        if self.plugin_mode != "server":
            env["PYCNI_NO_SERVER"] = "1"
        env["PYCNI_TEST_CGROUP_PROCS"] = self.cgroup.procs_files()
        env.update(extra or {})
        return env

    def _wrap(self, argv: Sequence[str]) -> list[str]:
        enter = ["nsenter", "-t", str(self.init_pid), "-m", "-n", "-p", "-C", "--"]
        return ["sh", "-c", _JOIN_CGROUP, "sh", *(enter if self.init_pid else []), *argv]

    def start(self) -> None:
        self.cgroup.create()
        spec = {
            "cgroups": [
                [h.options, h.mountpoint] for h in cgroup_hierarchies() if h.options
            ],
            "tmpfs": [d for d in TMPFS_DIRS if os.path.isdir(d)],
            "dirs": ["/var/lib/containers", "/var/lib/containerd", "/var/lib/cni",
                     "/run/containerd", "/etc/containers"],
            "binds": [[str(self.cni_bin), BIN_DIR], [str(self.conf_dir), CONF_DIR]],
            "files": {"/etc/containers/policy.json": POLICY_JSON, **self.files},
        }
        argv = ["unshare", "--cgroup", "--mount", "--net", "--pid", "--fork", "--mount-proc",
                "--propagation", "private", "--", sys.executable, "-c", _INIT, json.dumps(spec)]
        self.proc = subprocess.Popen(self._wrap(argv), stdout=subprocess.PIPE, text=True,
                                     env=self._env())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"sandbox init failed ({self.proc.poll()})"
        self.init_pid = _children(self.proc.pid)[0]  # sh execs unshare, which forks init
        if self.plugin_mode == "server":
            self.start_server()

    def start_server(self) -> None:
        """`pycni serve` inside the sandbox, on its default socket."""
        log = self.workdir / "pycni-serve.log"
        proc = self.spawn(sys.executable, "-m", "pycni.cli", "serve", "--log-level", "DEBUG",
                          log=log)
        self.wait_for(lambda: self.sh("test", "-S", "/run/pycni/pycni.sock").code == 0,
                      what=f"pycni serve ({proc.poll()}): {log.read_text()}")

    def server_calls(self) -> list[str]:
        """``<plugin> <COMMAND>`` for each call the sandbox's `pycni serve` ran to exit 0."""
        log = self.workdir / "pycni-serve.log"
        text = log.read_text() if log.exists() else ""
        return re.findall(r"DEBUG (\S+ [A-Z]+) (?:\(pid \d+\)): exit 0", text)

    def wait_for(self, ready: Callable[[], bool], *, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def sh(self, *argv: str, timeout: float = 60, env: Mapping[str, str] | None = None,
           input: str | None = None) -> Ran:
        """Run a command inside the sandbox (all its namespaces and its cgroup)."""
        proc = subprocess.run(self._wrap(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, env=self._env(env), check=False)
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, *argv: str, log: Path, env: Mapping[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """A long-running command inside the sandbox (a daemon, a foreground `ctr run`)."""
        with log.open("wb") as out:
            proc = subprocess.Popen(self._wrap(argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=self._env(env))
        self.daemons.append(proc)
        return proc

    def inner_pid(self, proc: subprocess.Popen[bytes]) -> int:
        """The host PID of the command ``spawn`` started (nsenter forks it into the pid ns)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = _children(proc.pid) if proc.poll() is None else []
            if kids:
                return kids[0]
            time.sleep(0.01)
        raise AssertionError(f"no child under nsenter {proc.pid}")

    def read(self, path: str) -> str:
        return self.sh("cat", path).stdout

    def ls(self, path: str) -> list[str]:
        ran = self.sh("ls", "-A", path)
        return sorted(ran.stdout.split()) if ran.code == 0 else []

    def files_under(self, path: str) -> list[str]:
        ran = self.sh("find", path, "-type", "f")
        return sorted(ran.stdout.split()) if ran.code == 0 else []

    def ip_json(self, *args: str) -> Any:
        return json.loads(self.sh("ip", "-j", *args).ok() or "[]")

    def close(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, AssertionError):
                    os.kill(self.inner_pid(proc), signal.SIGTERM)
        for proc in self.daemons:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, AssertionError):
                    os.kill(self.inner_pid(proc), signal.SIGKILL)
                proc.wait(timeout=10)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.init_pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        self.cgroup.sweep()


@contextlib.contextmanager
def open_sandbox(
    workdir: Path,
    cni_bin: Path,
    *,
    tag: str,
    plugin_mode: str = "inprocess",
    files: Mapping[str, str] | None = None,
) -> Iterator[ClientSandbox]:
    """A sandbox whose /opt/cni/bin and /etc/cni/net.d are what `pycni install` wrote."""
    conf_dir = workdir / "net.d"
    install(bin_dir=str(workdir / "unused-bin"), conf_dir=str(conf_dir))
    for path in (workdir / "unused-bin").iterdir():
        path.unlink()
    (workdir / "unused-bin").rmdir()
    box = ClientSandbox(
        workdir=workdir,
        cni_bin=cni_bin,
        conf_dir=conf_dir,
        cgroup=TestCgroup(f"pycni-test-{tag}-{os.getpid()}"),
        files=dict(files or {}),
        plugin_mode=plugin_mode,
    )
    try:
        box.start()
        yield box
    finally:
        box.close()


# --------------------------------------------------------------------------- client configs

# podman 4.3 (containers/common 0.50) and containerd 1.6 (go-cni) vendor libcni 1.1, which
# decodes results up to 1.0.0 only ("unsupported CNI result version \"1.1.0\"") and ignores
# the 1.1 ``cniVersions`` list; libcni >= 1.2 reads ``cniVersions`` and picks the highest.
LIBCNI_1_1_VERSIONS: Final = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")


def too_new_for_libcni_1_1(conf_dir: Path) -> list[str]:
    """Conflists whose ``cniVersion`` libcni 1.1 cannot decode results of (must be none: the
    shipped defaults say 1.0.0 and list 1.1.0 in ``cniVersions`` for newer runtimes)."""
    return [
        path.name
        for path in sorted(conf_dir.glob("*.conflist"))
        if json.loads(path.read_text()).get("cniVersion") not in LIBCNI_1_1_VERSIONS
    ]


# The exact containers.conf the podman tests use (the README quotes it).
PODMAN_CONTAINERS_CONF: Final = f"""\
[containers]
# This VM's bounding set lacks CAP_SYS_RESOURCE and its hard RLIMIT_NOFILE is 20000: podman 4.3
# asks runc for nofile=1048576 and lowers its own nproc to 32768, which runc then cannot raise.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{BIN_DIR}"]
network_config_dir = "{CONF_DIR}"
default_network = "{NETWORK}"

[engine]
cgroup_manager = "cgroupfs"   # no systemd here
events_logger = "none"        # no journald
runtime = "runc"
lock_type = "file"            # "shm" would create /dev/shm/libpod_lock
"""

PODMAN_STORAGE_CONF: Final = """\
[storage]
driver = "overlay"
graphroot = "/var/lib/containers/storage"
runroot = "/run/containers/storage"
"""

# The exact containerd config the containerd tests use. `ctr run --cni` does its CNI work in
# the client and reads the fixed /etc/cni/net.d and /opt/cni/bin; the CRI plugin (what
# kubelet talks to) reads these two keys.
CONTAINERD_CONFIG: Final = f"""\
version = 2

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{BIN_DIR}"
  conf_dir = "{CONF_DIR}"
  max_conf_num = 1
"""


# --------------------------------------------------------------------------- pycni's state


def pycni_leftovers(box: ClientSandbox, network: str = NETWORK) -> dict[str, Any]:
    """Per-container state pycni keeps in the sandbox; all empty once every container is gone.

    What stays by design is shared, not per container: the bridge and its gateway address,
    pycni's nft tables, chains and (empty) sets, IPAM's ``lock``/``last_reserved_ip.0``.
    """
    ipam = [n for n in box.ls(f"/run/pycni/ipam/{network}") if n[0].isdigit() or ":" in n]
    veths = [link["ifname"] for link in box.ip_json("link", "show", "type", "veth")
             if link["ifname"] not in box.own_links]
    nft = json.loads(box.sh("nft", "-j", "list", "ruleset").ok())
    elements = {
        f"{s['family']} {s['table']} {s['name']}": s["elem"]
        for item in nft["nftables"] if (s := item.get("set") or item.get("map")) and s.get("elem")
    }
    return {
        "ipam": ipam,
        "veths": veths,
        "ifbs": [link["ifname"] for link in box.ip_json("link", "show", "type", "ifb")],
        "nft elements": elements,
        "results cache": box.files_under("/var/lib/cni/results"),
        "hostports": [f for f in box.files_under("/run/pycni/hostports")
                      if not f.endswith("/lock")],
        "tuning": box.files_under("/run/pycni/tuning"),
        "netns pins": box.files_under("/run/netns"),
    }


def node_state(box: ClientSandbox) -> dict[str, set[str]]:
    """The sandbox node's network state, per-packet counters aside: links, addresses and
    routes of every table (not IPv6 link-local ones, which come and go with their links on
    their own time), rules, root qdiscs, nft tables and the net sysctls of the node itself."""
    links = box.ip_json("-d", "link", "show")
    addrs = box.ip_json("addr", "show")
    routes = [*box.ip_json("route", "show", "table", "all"),
              *box.ip_json("-6", "route", "show", "table", "all")]
    nft = json.loads(box.sh("nft", "-j", "list", "tables").ok())["nftables"]
    qdiscs = json.loads(box.sh("tc", "-j", "qdisc", "show").ok() or "[]")
    return {
        "links": {f"{link['ifname']} {link.get('linkinfo', {}).get('info_kind', '')}"
                  for link in links},
        "addresses": {f"{a['ifname']} {i['local']}/{i['prefixlen']}" for a in addrs
                      for i in a["addr_info"] if i.get("scope") != "link"},
        "routes": {" ".join(f"{k}={r[k]}" for k in ("type", "dst", "gateway", "dev", "table")
                            if k in r) for r in routes
                   if not r.get("dst", "").startswith(("fe80:", "ff00:"))},
        "rules": {json.dumps(rule, sort_keys=True) for rule in box.ip_json("rule", "show")},
        "qdiscs": {f"{q['dev']} {q['kind']} {q.get('handle', '')}" for q in qdiscs
                   if q["kind"] not in ("noqueue", "noop")},
        "nft tables": {f"{t['table']['family']} {t['table']['name']}" for t in nft
                       if "table" in t},
        "sysctls": set(box.sh("sysctl", "-a", "--pattern", "^net\\.ipv[46]\\.(ip_forward|"
                              "conf\\.(all|default))").stdout.splitlines()),
    }


def assert_clean(box: ClientSandbox, network: str = NETWORK) -> None:
    left = pycni_leftovers(box, network)
    assert not any(left.values()), f"pycni state left behind: {left}"


def assert_plugins_ran_where_told(box: ClientSandbox) -> None:
    """In server mode, the executables the client ran handed their calls to `pycni serve`."""
    calls = set(box.server_calls())
    if box.plugin_mode == "server":
        assert {"bridge ADD", "bridge DEL", "firewall ADD", "firewall DEL"} <= calls, calls
    else:
        assert not calls
