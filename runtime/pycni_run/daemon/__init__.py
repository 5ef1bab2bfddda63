"""``pycni-run daemon``: the warm runtime daemon, a service on the warm-fork kit
(``pycni.warmfork``), as Docker splits dockerd from its light client.

Modules: ``main`` (warm everything once, then serve: what the entry point runs for
``pycni-run daemon``), ``service`` (what the daemon does with a command), ``handoff`` (a
command into a worker: the spare, with its standby init, or a fork in the caller's pid
namespace) and ``worker`` (the worker becomes the caller and runs ``cli.main``). The client's
side of the socket is ``pycni_run.wire``. Nothing is imported here.
"""
