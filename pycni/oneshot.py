"""What a process that runs one call or one command and exits does before its first import of
substance: a plugin executable running its call in-process (``pycni.launcher``) and
``pycni-run`` running its command without the daemon (``pycni_run.client``).

Such a process pays for every module and every class it makes, on every call. Two things
cost it more than the call's own work and serve it nothing:
- the methods ``dataclasses`` writes and compiles for each of the ~50 classes a bridge ADD
  defines: ``pycni.codecache`` takes them from a cache of compiled code instead (and brings
  ``dataclasses`` in without ``inspect``);
- pyroute2's package ``__init__`` (asyncio, ssl, NDB, every netlink family: ~40 ms):
  ``pycni.net.pyroute2_import`` defers it until a name is asked of the package itself.
Both must come before ``pycni.plugins`` (skel and the result types are dataclasses) and before
any of pyroute2's modules. Warm servers do neither: they import everything once, on purpose.
"""

from __future__ import annotations

__all__ = ["prepare"]


def prepare() -> None:
    """Make this process's imports a one-shot process's (idempotent)."""
    from pycni import codecache
    from pycni.net.pyroute2_import import defer_package_init

    codecache.enable()
    defer_package_init()
