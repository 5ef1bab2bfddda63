"""host-local IPAM: config parsing, pure range logic, the on-disk store and the operations.

``config`` turns the ``ipam`` object into frozen dataclasses, ``allocator`` is the pure range
arithmetic (no I/O), ``store`` is the reference plugin's file-per-IP layout under a lock, and
``hostlocal`` is what the plugin glue calls (allocate / release / find / gc / status).
Nothing is re-exported here so that importing one module costs only that module.
"""

from __future__ import annotations

__all__: list[str] = []
