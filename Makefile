# streamlab — the two commands are `make run` and `make test` (see README.md).
# Both install what they need on a fresh Debian 12 machine (as root or with sudo).

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the daemon and its tests use. The second line is the daemon's compiled
# Python dependencies: the venv sees them through its system site-packages, exactly as
# the Debian package does (constraints.txt, docs/operations.md).
SYSTEM_PACKAGES := python3 python3-venv ffmpeg nftables iproute2 chromium fonts-dejavu-core systemd \
                   python3-cryptography python3-openssl python3-service-identity \
                   python3-bcrypt python3-zope.interface python3-markupsafe python3-yaml \
                   debhelper dh-python python3-all dpkg-dev
# Node.js/npm only when no npm is on PATH (a NodeSource nodejs already bundles npm and
# conflicts with Debian's npm package).
NODE_PACKAGES := nodejs npm

.PHONY: run test setup system venv assets lint bench bench-tools clean help deb

help:
	@echo "make run    - set up and start the daemon in the foreground on :30000"
	@echo "make test   - set up and run the whole test suite"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - benchmarks (print figures, never fail on speed; ONLY=fleet for the player fleet)"
	@echo "make bench-tools - wrk, nginx-light and mitmproxy for bench/servers.py (make bench runs it)"
	@echo "make deb    - build the Debian package (dist/streamlab_<version>_all.deb)"

system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(NODE_PACKAGES); }

# Debian's interpreter (the one the package runs on), its compiled python3-* packages
# through --system-site-packages, and the pinned pure-Python set from constraints.txt.
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	/usr/bin/python3 -m venv --clear --system-site-packages $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: system $(VENV)/.installed

# Browser libraries for the dashboard: pinned in package.json + package-lock.json,
# installed from the npm registry, copied into the package's static folder (not committed).
VENDOR := streamlab/dashboard/vendor
VENDOR_FILES := node_modules/hls.js/dist/hls.min.js \
                node_modules/dashjs/dist/modern/umd/dash.all.min.js \
                node_modules/shaka-player/dist/shaka-player.compiled.js \
                node_modules/uplot/dist/uPlot.iife.min.js \
                node_modules/uplot/dist/uPlot.min.css

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(VENDOR)/.installed: node_modules/.installed
	mkdir -p $(VENDOR)
	cp $(VENDOR_FILES) $(VENDOR)/
	touch $@

assets: $(VENDOR)/.installed

setup: system venv assets

run: setup
	mkdir -p var
	$(VENV)/bin/twistd --nodaemon --pidfile= streamlab --config etc/streamlab.dev.conf

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Tools only the benchmarks use (bench/servers.py compares the daemon with nginx, twistd
# web and mitmdump under wrk); never part of `make test`.  nginx-light's package enables
# the distribution's nginx on :80: disabled right away, the bench starts its own.
# mitmproxy lives in its own venv: its pins conflict with the daemon's (constraints.txt).
BENCH_PACKAGES := wrk nginx-light
BENCH_TOOLS    := build/bench-tools

bench-tools: $(BENCH_TOOLS)/.installed
	@missing=""; for p in $(BENCH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing bench packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing && \
	  { $(SUDO) systemctl disable --now nginx 2>/dev/null || \
	    { $(SUDO) service nginx stop; $(SUDO) update-rc.d nginx disable; } >/dev/null 2>&1 || true; }; \
	fi

$(BENCH_TOOLS)/.installed:
	/usr/bin/python3 -m venv $(BENCH_TOOLS)
	$(BENCH_TOOLS)/bin/pip install -q mitmproxy==11.0.2
	touch $@

bench: setup bench-tools
	$(PY) bench/run_all.py $(if $(ONLY),--only $(ONLY))

# Debian package with a self-contained venv under /opt/streamlab/venv (docs/operations.md);
# cached in build/deb/<hash of the packaged sources>, copied to dist/.
deb: system assets
	debian/build-deb

clean:
	rm -rf build dist *.egg-info var
