"""What ``run IMAGE`` takes from the store: the image's config merged into the spec (in
``cmd_run``, before anything is made) and its layers pinned while the container is made.

``busybox`` stays the built-in image (and ``--rootfs DIR`` a directory): no store lookup, no
lock, the same single lower directory as before. A loaded image's layers are its short links,
top first; the store's shared lock is held from the lookup until ``lifecycle.start`` has
recorded the image in the container's state, so ``rmi`` either sees the container or runs
before the start looks the image up.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

from pycni_run import rootfs, state
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError, warn
from pycni_run.images.config import BUILTIN, ExposedPort, apply_config, parse_config
from pycni_run.images.digests import parse_digest
from pycni_run.images.store import Store
from pycni_run.spec import ContainerSpec, PortMapping

__all__ = ["Lower", "pinned_lower", "resolve_spec"]

_PICK_ATTEMPTS: Final = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Lower:
    dirs: str  # overlay's lowerdir value
    base: str = ""  # where relative ``dirs`` are (a loaded image's short links)
    image: str = ""  # the loaded image's id


def resolve_spec(cfg: RuntimeConfig, spec: ContainerSpec) -> ContainerSpec:
    """``spec`` with its image's Entrypoint, Cmd, Env, WorkingDir and User where the command
    line left them, and ``-P``'s ports. RunError if IMAGE names nothing in the store.

    A valid spec stays valid (it is validated once, where it is built): a command is required
    (``apply_config``), the working directory is made absolute, and -P maps only on a bridge,
    each port on a host port nothing else publishes."""
    config = BUILTIN
    if not spec.builtin_image:
        store = Store(cfg.image_store)
        image_id, _ = store.find(spec.image)
        try:
            config = parse_config(store.config_bytes(image_id))
        except FileNotFoundError:
            raise RunError(f"no such image: {spec.image} (removed meanwhile)") from None
        spec = replace(spec, image_id=str(image_id))
    spec = apply_config(spec, config)
    if spec.publish_all:
        spec = replace(spec, ports=(*spec.ports, *_publish(cfg, spec, config.exposed)))
    return spec


def _publish(cfg: RuntimeConfig, spec: ContainerSpec,
             exposed: tuple[ExposedPort, ...]) -> list[PortMapping]:
    """-P: each exposed port -p did not map, on a host port free for now (the kernel's pick
    from the ephemeral range, and none another container of this runtime publishes)."""
    if spec.net.kind != "bridge":
        if exposed:
            warn(f"-P ignored: --net={spec.net} publishes no ports")
        return []
    mapped = {(p.container_port, p.protocol) for p in spec.ports}
    taken = {p.host_port for p in spec.ports}
    for st in state.list_states(cfg.containers_dir):
        if st.live_status() != "exited":
            taken.update(int(p["hostPort"]) for p in st.ports)
    found = []
    for port in exposed:
        if (port.port, port.protocol) in mapped:
            continue
        host = _free_port(port.protocol, taken)
        taken.add(host)
        found.append(PortMapping(host_port=host, container_port=port.port,
                                 protocol=port.protocol))
    return found


def _free_port(protocol: str, taken: set[int]) -> int:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    for _ in range(_PICK_ATTEMPTS):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port
    raise RunError(f"-P: found no free host port for {protocol}")


@contextlib.contextmanager
def pinned_lower(cfg: RuntimeConfig, spec: ContainerSpec) -> Iterator[Lower]:
    """The container's lower layers, the image kept from ``rmi`` until the block ends."""
    if spec.rootfs:
        yield Lower(dirs=spec.rootfs)
        return
    if not spec.image_id:
        yield Lower(dirs=rootfs.ensure_image(cfg.image_store, spec.image))
        return
    store = Store(cfg.image_store)
    image_id = parse_digest(spec.image_id, "image id")
    with store.locked(exclusive=False):
        record = store.image(image_id)
        if record is None:
            raise RunError(f"image {spec.image} ({image_id.short}) was removed meanwhile")
        yield Lower(dirs=":".join(reversed(record.links)), base=store.links_dir,
                    image=str(image_id))
