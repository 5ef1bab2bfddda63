"""The ctypes seams for the Linux syscalls Python 3.11 lacks, one module per concern.

``nscalls`` (setns, unshare, pidfd namespaces, parent-death signal, subreaper) is what the
plugins, the fork server and the runtime share; ``mountcalls`` (mount, pivot_root, the
mount-tree API, idmapped and overlay trees), ``capcalls`` (capability sets, no_new_privs),
``seccompcalls`` (loading a filter) and ``memcalls`` (prefaulting pages) are loaded only by
what uses them: a plugin never pays for the runtime's. Everything else calls these wrappers,
never ctypes directly, so errno handling reads the same everywhere and tests fake one place.
Nothing is imported here.
"""
