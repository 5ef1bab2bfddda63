"""``load``, ``images``, ``image inspect|ls|rm|load`` and ``rmi``: Docker's image commands."""

from __future__ import annotations

import json
import re
import sys
import time
from calendar import timegm
from collections.abc import Callable
from typing import Any, Final

from pycni_run import state, views
from pycni_run.config import RuntimeConfig
from pycni_run.errors import RunError
from pycni_run.images.config import parse_config
from pycni_run.images.digests import Digest
from pycni_run.images.load import load
from pycni_run.images.store import Store
from pycni_run.usage import UsageParser

__all__ = ["HANDLERS"]

_RFC3339_RE: Final = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)")
_AGES: Final = ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"),
                (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def cmd_load(cfg: RuntimeConfig, argv: list[str]) -> int:
    parser = UsageParser(prog="pycni-run load")
    parser.add_argument("-i", "--input", default="-", help="archive or OCI layout (- = stdin)")
    parser.add_argument("-q", "--quiet", action="store_true")
    ns = parser.parse_args(argv)
    if ns.input == "-" and sys.stdin.isatty():
        raise RunError("requested load from stdin, but stdin is a terminal: use -i FILE")
    for image in load(Store(cfg.image_store), ns.input):
        if not ns.quiet:
            lines = [f"Loaded image: {name}" for name in image.names]
            print("\n".join(lines or [f"Loaded image ID: {image.id}"]))
    return 0


def _created(text: str) -> float | None:
    match = _RFC3339_RE.fullmatch(text)
    if not match:
        return None
    seconds = timegm(time.strptime(match[1], "%Y-%m-%dT%H:%M:%S"))
    zone = match[2]
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return float(seconds)


def _ago(then: float | None) -> str:
    if then is None:
        return "-"
    elapsed = max(0.0, time.time() - then)
    for unit, name in _AGES:
        if elapsed >= unit:
            count = int(elapsed // unit)
            return f"{count} {name}{'s' if count > 1 else ''} ago"
    return "Less than a second ago"


def _size(n: int) -> str:
    """Docker's SI sizes, three significant digits: 2.14MB."""
    for unit, name in ((10**9, "GB"), (10**6, "MB"), (10**3, "kB")):
        if n >= unit:
            return f"{n / unit:.3g}{name}"
    return f"{n}B"


def _rows(store: Store) -> list[list[str]]:
    rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    tags = store.tags()
    for image_id in store.image_ids():
        record = store.image(image_id)
        if record is None:
            continue
        config = parse_config(store.config_bytes(image_id))
        names = sorted(n for n, i in tags.items() if i == image_id) or ["<none>:<none>"]
        for name in names:
            repo, _, tag = name.rpartition(":")
            rows.append([repo, tag, image_id.short, _ago(_created(config.created)),
                         _size(record.size)])
    return rows


def cmd_images(cfg: RuntimeConfig, argv: list[str]) -> int:
    parser = UsageParser(prog="pycni-run images")
    parser.add_argument("-q", "--quiet", action="store_true")
    ns = parser.parse_args(argv)
    rows = _rows(Store(cfg.image_store))
    if ns.quiet:
        print("\n".join(dict.fromkeys(r[2] for r in rows[1:])))
    else:
        print(views.render_table(rows))
    return 0


def inspect_doc(store: Store, image_id: Digest) -> dict[str, Any]:
    record = store.image(image_id)
    if record is None:
        raise RunError(f"no such image: {image_id}")
    data = store.config_bytes(image_id)
    raw = json.loads(data)
    config = parse_config(data)
    layer_dirs = [f"{store.layer_dir(c)}/diff" for c in reversed(record.layers)]
    return {
        "Id": str(image_id),
        "RepoTags": store.tags_of(image_id),
        "Created": config.created,
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": record.size,
        "Config": raw.get("config") or {},
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in config.diff_ids]},
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"LowerDir": ":".join(layer_dirs),
                     "ChainIDs": [str(c) for c in record.layers],
                     "Links": list(record.links)},
        },
    }


def cmd_image_inspect(cfg: RuntimeConfig, argv: list[str]) -> int:
    parser = UsageParser(prog="pycni-run image inspect")
    parser.add_argument("-f", "--format")
    parser.add_argument("names", nargs="+")
    ns = parser.parse_args(argv)
    store = Store(cfg.image_store)
    docs = [inspect_doc(store, store.find(name)[0]) for name in ns.names]
    if ns.format:
        print("\n".join(views.format_template(d, ns.format) for d in docs))
    else:
        print(json.dumps(docs, indent=2))
    return 0


def _users(cfg: RuntimeConfig, image_id: Digest) -> tuple[list[str], list[str]]:
    """(running, stopped) containers whose rootfs stacks the image."""
    running: list[str] = []
    stopped: list[str] = []
    for st in state.list_states(cfg.containers_dir):
        if st.rootfs.get("image") == str(image_id):
            (stopped if st.live_status() in ("exited", "dead") else running).append(st.name)
    return running, stopped


def remove(cfg: RuntimeConfig, store: Store, ref: str, *, force: bool) -> list[str]:
    """One ``rmi`` argument, under the store's exclusive lock; the lines Docker prints."""
    with store.locked(exclusive=True):
        image_id, name = store.find(ref)
        names = store.tags_of(image_id)
        if name and len(names) > 1:
            store.untag([name])  # other names keep the image
            return [f"Untagged: {name}"]
        running, stopped = _users(cfg, image_id)
        if running or (stopped and not force):
            user = (running or stopped)[0]
            hint = "" if running else " (remove it first, or use rmi -f)"
            raise RunError(f"conflict: unable to remove {ref}: container {user} uses image "
                           f"{image_id.short}{hint}")
        if not name and len(names) > 1 and not force:
            raise RunError(f"conflict: unable to remove {image_id.short} (must be forced): "
                           "the image has several names")
        layers = store.remove_image(image_id)
    return ([f"Untagged: {n}" for n in names] + [f"Deleted: {image_id}"]
            + [f"Deleted: {c}" for c in layers])


def cmd_rmi(cfg: RuntimeConfig, argv: list[str]) -> int:
    parser = UsageParser(prog="pycni-run rmi")
    parser.add_argument("-f", "--force", action="store_true")
    parser.add_argument("names", nargs="+")
    ns = parser.parse_args(argv)
    store, status = Store(cfg.image_store), 0
    for ref in ns.names:
        try:
            print("\n".join(remove(cfg, store, ref, force=ns.force)))
        except RunError as err:
            print(f"pycni-run: {err}", file=sys.stderr)
            status = err.code
    return status


def cmd_image(cfg: RuntimeConfig, argv: list[str]) -> int:
    """``image ls|inspect|rm|load ...``: Docker's management-command forms."""
    verbs: dict[str, Callable[[RuntimeConfig, list[str]], int]] = {
        "ls": cmd_images, "list": cmd_images, "inspect": cmd_image_inspect, "rm": cmd_rmi,
        "load": cmd_load,
    }
    if not argv or argv[0] not in verbs:
        raise RunError(f"usage: pycni-run image {{{'|'.join(verbs)}}} ...")
    return verbs[argv[0]](cfg, argv[1:])


HANDLERS: Final[dict[str, Callable[[RuntimeConfig, list[str]], int]]] = {
    "load": cmd_load,
    "images": cmd_images,
    "image": cmd_image,
    "rmi": cmd_rmi,
}
