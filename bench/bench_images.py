"""Images: `pycni-run load` of a 5-layer image and the first `run` of it, side by side with
`podman load` and `podman run` of the very same archive, in one run; then container start from
the loaded image against busybox's (the built-in image), in turns.

    python -m bench.bench_images [-n ROUNDS]

The image is busybox's rootfs (built locally, as `run busybox` builds it) split into five
layers, written as a docker-archive (what `podman save` writes; uncompressed layers). Every
round loads it into an empty store (pycni-run: a new `--image-store`; podman: after `podman
rmi`), then times the first `run --rm --net=none IMAGE /bin/true`. pycni-run runs in the
runtime benchmark's throwaway sandbox through its daemon; podman in the podman tests' sandbox
(CNI backend, cgroupfs, runc). Start-up: `--rm --net=none IMAGE /bin/true` and the same of
busybox through the daemon, in turns (this VM's speed drifts), 20 rounds after 3 warm-up ones.
Target: a loaded image starts within 10% of busybox (ratio <= 1.10). Medians, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.bench_runtime import RUNS, _interleaved_ms, runtime_daemon, setup_runtime

NAME = "localhost/five:1"
RESULTS = "images.json"
LOAD, FIRST = "load (5 layers, docker-archive)", "first run --rm --net=none /bin/true"
START_IMAGE = "pycni-run --rm --net=none five:1 /bin/true (daemon)"
START_BUSYBOX = "pycni-run --rm --net=none busybox /bin/true (daemon)"
# busybox's tree in five layers: every directory and the binary at the bottom, then the
# applet links of each directory in a layer of their own.
LINK_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")


def _in_layer(rootfs: Path, index: int) -> Callable[[Path], bool]:
    def keep(rel: Path) -> bool:
        parent = str(rel.parent)
        links = (rootfs / rel).is_symlink() and parent in LINK_DIRS
        return index == (1 + LINK_DIRS.index(parent) if links else 0)

    return keep


def write_archive(work: Path) -> Path:
    from pycni_run.rootfs import ensure_image

    from tests.image_support import PATH_ENV, Image, rootfs_layer, write_docker_archive

    rootfs = Path(ensure_image(str(work / "build"), "busybox"))
    layers = [rootfs_layer(rootfs, _in_layer(rootfs, i)) for i in range(1 + len(LINK_DIRS))]
    image = Image(layers=layers, config={"Env": [PATH_ENV], "Cmd": ["sh"]}, name=NAME)
    return write_docker_archive(image, work / "five.tar")


def _timed(argv: Sequence[str], env: dict[str, str] | None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def _inside(work: Path, rounds: int) -> int:
    """In the runtime sandbox: load + first run per round, then start-up in turns."""
    client, env = setup_runtime(work)
    archive = work / "five.tar"
    results: dict[str, float] = {}
    with runtime_daemon(work, env) as sock:
        served = {**env, "PYCNI_RUN_SOCKET": sock}
        loads, firsts = [], []
        for i in range(rounds):
            store = ["--image-store", str(work / f"store-{i}")]
            loads.append(_timed([client, *store, "load", "-i", str(archive)], served))
            firsts.append(_timed([client, *store, "run", "--rm", "--net=none", NAME,
                                  "/bin/true"], served))
        results[LOAD], results[FIRST] = statistics.median(loads), statistics.median(firsts)
        subprocess.run([client, "load", "-i", str(archive)], check=True, env=served,
                       stdout=subprocess.DEVNULL)
        results.update(_interleaved_ms({
            START_IMAGE: ([client, "--rm", "--net=none", "five:1", "/bin/true"], served),
            START_BUSYBOX: ([client, "--rm", "--net=none", "busybox", "/bin/true"], served),
        }))
    (work / RESULTS).write_text(json.dumps(results))
    return 0


def _podman(work: Path, archive: Path, rounds: int) -> dict[str, float]:
    from pycni.install import install
    from tests.e2e import clients_support as clients

    install(bin_dir=str(work / "podman-bin"), conf_dir=None)
    files = {"/etc/containers/containers.conf": clients.PODMAN_CONTAINERS_CONF,
             "/etc/containers/storage.conf": clients.PODMAN_STORAGE_CONF}
    conf = {"CONTAINERS_CONF": "/etc/containers/containers.conf"}
    loads, firsts = [], []
    with clients.open_sandbox(work / "podman-box", work / "podman-bin", tag="bench-images",
                              files=files) as box:
        for _ in range(rounds):
            started = time.perf_counter()
            box.sh("podman", "load", "-i", str(archive), env=conf, timeout=300).ok()
            loads.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            box.sh("podman", "run", "--rm", "--network", "none", NAME, "/bin/true", env=conf,
                   timeout=300).ok()
            firsts.append((time.perf_counter() - started) * 1000)
            box.sh("podman", "rmi", "-f", NAME, env=conf, timeout=300).ok()
    return {LOAD: statistics.median(loads), FIRST: statistics.median(firsts)}


def _print(ours: dict[str, float], podman: dict[str, float] | str, rounds: int) -> None:
    print(f"\nImages, median of {rounds} rounds (each into an empty store) (wall ms):")
    print(f"  {'':38}  {'pycni-run':>10}  {'podman':>10}  {'ratio':>6}")
    for label in (LOAD, FIRST):
        theirs = podman[label] if isinstance(podman, dict) else float("nan")
        print(f"  {label:38}  {ours[label]:10.1f}  {theirs:10.1f}  {ours[label] / theirs:6.2f}x")
    if isinstance(podman, str):
        print(f"  podman: {podman}")
    image, busybox = ours[START_IMAGE], ours[START_BUSYBOX]
    ratio = image / busybox
    print(f"\nStart-up, median of {RUNS} runs in turns after 3 warm-up runs (wall ms):")
    print(f"  {START_IMAGE:55}  {image:8.2f}")
    print(f"  {START_BUSYBOX:55}  {busybox:8.2f}")
    verdict = "met" if ratio <= 1.10 else f"NOT met, by {(ratio - 1.10) * 100:.1f} points"
    print(f"  loaded image / busybox = {ratio:.3f}x (target <= 1.10x: {verdict})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_images")
    parser.add_argument("-n", "--rounds", type=int, default=5)
    parser.add_argument("--inside")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_images: needs root (namespaces, cgroups, mounts); skipped", file=sys.stderr)
        return 0
    if args.inside:
        return _inside(Path(args.inside), args.rounds)
    with tempfile.TemporaryDirectory(prefix="pycni-bench-img-") as tmp:
        work = Path(tmp)
        archive = write_archive(work)
        here = Path(__file__).resolve().parent.parent
        cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--propagation",
               "private", "--", sys.executable, "-m", "bench.bench_images", "--inside", tmp,
               "-n", str(args.rounds)]
        if subprocess.run(cmd, cwd=here, check=False).returncode != 0:
            return 1
        ours = json.loads((work / RESULTS).read_text())
        podman: dict[str, float] | str = "skipped: podman is not installed"
        if shutil.which("podman"):
            try:
                podman = _podman(work, archive, args.rounds)
            except (AssertionError, subprocess.SubprocessError, OSError) as err:
                podman = f"failed: {err}"
        _print(ours, podman, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
