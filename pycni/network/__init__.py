"""The network manager: Docker-style user networks as conflists any CNI runtime can use.

- ``spec`` (with ``names``, ``subnets``): a `network create` request validated into a
  ``NetworkSpec``, the subnet picked clear of other networks and of the host's routes;
- ``render``: the spec as a conflist (the default network's chain); ``view``: any conflist
  back as a ``NetworkView``;
- ``store``: the conf dir (atomic writes under a lock); ``attachments``: the results cache;
  ``attach``: CNI ADD/DEL of one container, as a runtime runs them;
- ``manager``: create, list, inspect, remove, prune; ``report`` and ``cli``: what `pycni
  network` and `pycni-run network` print; ``hostnet``: the kernel side (pyroute2);
  ``config``: settings from ``pycni.yaml``.

Nothing here is imported by a plugin: the plugins' start-up path never pays for it.
"""
