#!/usr/bin/env bash
# `make run`: the main job on the embedded defaults.
#
# By default it runs in a throwaway network + mount namespace, so the machine is left exactly
# as it was (no pycni0 bridge, no nftables table, no sysctl changes in the root netns, no files
# in /opt/cni or /etc/cni). PYCNI_DEMO_ON_HOST=1 runs the very same steps on the host itself.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if [ "${PYCNI_DEMO_ON_HOST:-0}" != 1 ] && [ -z "${PYCNI_DEMO_INNER:-}" ]; then
  exec unshare --mount --net --propagation private env PYCNI_DEMO_INNER=1 "$0" "$@"
fi
if [ -n "${PYCNI_DEMO_INNER:-}" ]; then
  # The sandbox's own copies of every directory pycni writes to.
  for dir in /run/netns /run/pycni /var/lib/cni /var/lib/pycni/containers /etc/cni /opt/cni; do
    mkdir -p "$dir"
    mount -t tmpfs tmpfs "$dir"
  done
  ip link set lo up
fi

echo "== pycni install (plugins -> /opt/cni/bin, networks -> /etc/cni/net.d)"
"$VENV/bin/pycni" install
echo "== pycni serve (warm fork server on /run/pycni/pycni.sock)"
"$VENV/bin/pycni" serve 2>/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S /run/pycni/pycni.sock ] && break; sleep 0.05; done
echo
"$VENV/bin/python" -m pycni_run.demo
