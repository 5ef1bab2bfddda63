"""`pycni serve`: the warm fork server behind the plugin executables.

Modules: ``protocol`` (framing, shared with the launcher, builtins only), ``peer`` (accepting
and reading one request), ``worker`` (the forked child that joins the caller's namespaces and
runs skel), ``loop`` (the single-threaded selector loop), ``service`` (the systemd unit).
Nothing is imported here: ``pycni.launcher`` imports ``pycni.server.protocol`` and must stay
light.
"""
