"""`make bench`: the plugin benchmarks, the runtime's if ``bench/bench_runtime.py`` exists, then
pod sandboxes under containerd's CRI (``bench/bench_cri.py``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys


def main() -> int:
    from bench import bench_plugins

    status = bench_plugins.main(sys.argv[1:])
    if importlib.util.find_spec("bench.bench_runtime") is not None:
        runtime = importlib.import_module("bench.bench_runtime")
        status = runtime.main([]) or status
    from bench import bench_cri

    return bench_cri.main([]) or status


if __name__ == "__main__":
    sys.exit(main())
