"""`pycni-run`: a small container runtime whose networking is CNI (pycni's plugins) only.

Modules, in the order a container is started: ``spec`` (validate everything first),
``cgroups`` (v1/v2 behind one facade), ``process`` (fork, namespaces, init checklist, exec),
``rootfs`` (busybox image, overlay, pivot_root), ``network`` (pin the netns, CNI via
``pycni.cni.invoke``), ``state`` (atomic JSON per container), ``lifecycle`` (run, stop, rm,
teardown), ``enter`` (exec by setns), ``console`` (pty), ``cli``.
"""

# No ``from __future__`` here: the client imports this package, and __future__ costs it ~0.6 ms.
__all__ = ["__version__"]

__version__ = "0.1.0"
