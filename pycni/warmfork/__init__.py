"""The warm-fork kit: what the plugin fork server (``pycni.server``) and the runtime daemon
(``pycni_run.daemon``) are built on.

A warm server imports and warms everything once, then forks workers that become their caller
and run the very code the caller would have run in-process (the plugin server's go back to
where they started and take the next call: ``reuse``). Modules: ``wire`` (the caller's side: a
root-only socket, the request frame, the status packet; builtins only), ``listener`` (the root-
only listening socket, dispatch, idle exit), ``peer`` and ``privileges`` (who is calling, and
whether it may be served), ``loop`` (the single- threaded loop: requests within a deadline, the
hand-over to a worker, workers watched through pidfds, signals, stop and drain), ``workers`` (a
spare forked ahead, or a worker forked for the call at hand), ``warmup`` (the pages calls
write, learned from them, copied by a spare in the idle class), ``relay`` (a worker's status
passed on to its caller as soon as it reports), ``reuse`` (a worker back to its baseline after
a call), ``child`` (what every fork does first: one signal reset), ``caller`` (a worker becomes
its caller), ``ondemand`` (starting a server for a caller that found none) and ``started`` (a
server started so: its idle exit, giving way to a supervised one), and ``serving`` (a server's
process: standard descriptors, logging, the warm heap frozen). Nothing is imported here: the
plugin launcher imports ``wire`` and must stay light.
"""
