# Two commands do all set-up on a fresh Debian 12 machine, as root:
#   make run    install what is needed and run the main job
#   make test   install what is needed and run the whole suite (ruff, mypy, pytest)
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
# Kernel tooling the product and its tests use; the reference plugins are the yardstick.
APT_PACKAGES := python3-venv python3-dev iproute2 nftables iptables conntrack \
	containernetworking-plugins busybox-static iperf3 procps iputils-ping \
	podman containerd runc libseccomp2 gcc libc6-dev aardvark-dns
STAMP := $(VENV)/.installed

.PHONY: deps run test lint unit bench clean

deps: $(STAMP)

# The editable install is two plain path lines (the tree and runtime/): setuptools' default
# editable mode installs an import hook instead, whose imports (pathlib & co) made every
# start of the venv's python 25.5 ms instead of 11.6 (`python -c pass`, median of 30), and
# so every `pycni` command a user types.
$(STAMP): pyproject.toml Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' \
		--config-settings editable_mode=compat
	echo '$(CURDIR)/runtime' > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pycni-runtime.pth"
	touch $@

run: deps
	bash scripts/make-run.sh

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: deps
	$(PY) -m pytest -q tests/unit

test: lint
	$(PY) -m pytest -q

bench: deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
