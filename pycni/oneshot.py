"""What a process that runs one call or one command and exits does before its first import of
substance, and at its end: a plugin executable running its call in-process
(``pycni.launcher``) and ``pycni-run`` running its command without the daemon
(``pycni_run.client``).

Such a process pays for every module and every class it makes, on every call. Three things
cost it more than the call's own work and serve it nothing:
- searching ``sys.path`` and reading a ``.pyc`` for each of the ~150 modules a bridge ADD
  imports: ``pycni.importcache`` serves them from one mapped file (``pycni.codefile``) that
  earlier processes filled, first of all, so that everything after comes from it too;
- the methods ``dataclasses`` writes and compiles for each of the ~50 classes a bridge ADD
  defines: ``pycni.codecache`` takes them from a cache of compiled code instead (and brings
  ``dataclasses`` in without ``inspect``);
- pyroute2's package ``__init__`` (asyncio, ssl, NDB, every netlink family: ~40 ms):
  ``pycni.net.pyroute2_import`` defers it until a name is asked of the package itself, and
  has pyroute2's ``config`` and request filters imported without ``platform``,
  ``multiprocessing`` and ``rt_files`` (~10 ms).
The last two must come before ``pycni.plugins`` (skel and the result types are dataclasses)
and before any of pyroute2's modules. Warm servers do none of it: they import everything
once, on purpose.

A plugin call is one call, so two more costs serve it nothing either (measured on a bridge ADD
in-process, ~100 ms; ``prepare(one_call=True)`` and ``finish``):
- the cyclic garbage collector's passes while ~700 modules are imported: ~6-10 ms. The
  process lives for one call and frees everything at once when it exits. ``pycni-run`` keeps
  the collector: its in-process command may be a container in the foreground or the daemon.
- the interpreter's teardown at exit (every module's dict cleared, a last collection): ~15 ms.
  ``finish`` does what the caller can see of an exit (the non-daemon threads joined, the
  ``atexit`` handlers, stdout and stderr flushed) and leaves the memory to the kernel.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: this runs before the imports it makes cheaper
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["FLUSH_FAILED", "finish", "prepare"]

FLUSH_FAILED = 120  # what CPython's own exit returns when flushing stdout or stderr fails


def prepare(*, one_call: bool = False) -> None:
    """Make this process's imports a one-shot process's (idempotent); ``one_call``: it runs
    one plugin call and exits (``finish``), so it needs no cyclic collector."""
    if one_call:
        import gc

        gc.disable()
    from pycni import codefile, importcache

    codes = codefile.shared()
    importcache.enable(codes)  # first: the imports below come from it too
    from pycni import codecache
    from pycni.net.pyroute2_import import defer_package_init, stand_in_on_import

    codecache.enable(codes)
    defer_package_init()
    stand_in_on_import()


def finish(status: int) -> NoReturn:
    """Exit with ``status`` as the interpreter's exit would, less its teardown."""
    import atexit
    import os
    import sys

    threading = sys.modules.get("threading")
    if threading is not None:  # the interpreter's exit waits for them first, so do we
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()  # the handlers the interpreter's exit would run
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # EPIPE, or closed: the result did not get out
            status = FLUSH_FAILED
    os._exit(status)
