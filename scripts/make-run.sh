#!/usr/bin/env bash
# `make run`: the main job on the embedded defaults.
#
# By default it runs in a throwaway network + mount namespace with its own /run, so the machine
# is left exactly as it was (no pycni0 bridge, no nftables table, no sysctl change in the root
# netns, no file written outside the sandbox). PYCNI_DEMO_ON_HOST=1 runs the very same steps on
# the host itself, with the defaults (/opt/cni/bin, /etc/cni/net.d, /var/lib/pycni).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if [ "${PYCNI_DEMO_ON_HOST:-0}" != 1 ] && [ -z "${PYCNI_DEMO_INNER:-}" ]; then
  exec unshare --mount --net --propagation private env PYCNI_DEMO_INNER=1 "$0" "$@"
fi
if [ -n "${PYCNI_DEMO_INNER:-}" ]; then
  # The sandbox gets its own /run; everything pycni writes goes there, nothing to the disk.
  mount -t tmpfs tmpfs /run
  demo=/run/pycni-demo
  mkdir -p "$demo"
  cat > "$demo/pycni.yaml" <<YAML
runtime:
  image_store: $demo/images
  storage_dir: $demo/containers
  cni_path: [$demo/bin]
  conf_dir: $demo/net.d
  cni_cache_dir: $demo/cache
YAML
  export PYCNI_RUN_CONFIG="$demo/pycni.yaml"
  install_args=(--bin-dir "$demo/bin" --conf-dir "$demo/net.d")
  ip link set lo up
else
  install_args=()
fi

echo "== pycni install ${install_args[*]:-(plugins -> /opt/cni/bin, networks -> /etc/cni/net.d)}"
"$VENV/bin/pycni" install "${install_args[@]}" >/dev/null
echo "== pycni serve (warm fork server on /run/pycni/pycni.sock)"
"$VENV/bin/pycni" serve 2>/dev/null &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S /run/pycni/pycni.sock ] && break; sleep 0.05; done
echo
"$VENV/bin/python" -m pycni_run.demo
