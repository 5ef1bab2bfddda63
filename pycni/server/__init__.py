"""`pycni serve`: the warm fork server behind the plugin executables, a service on the
warm-fork kit (``pycni.warmfork``).

Modules: ``protocol`` (the launcher's request and ACK, builtins only), ``call`` (one call as
the server holds it), ``loop`` (what the server does with a call), ``answer`` (VERSION in the
server), ``worker`` (the forked child that becomes the caller and runs skel), ``main`` (warm
up, then serve) and ``service`` (the systemd unit). Nothing is imported here:
``pycni.launcher`` imports ``pycni.server.protocol`` and must stay light.
"""
