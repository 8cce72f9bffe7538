# streamlab — the two commands are `make run` and `make test` (see README.md).
# Both install what they need on a fresh Debian 12 machine (as root or with sudo).

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the daemon and its tests use.
SYSTEM_PACKAGES := python3-venv ffmpeg nftables iproute2 chromium fonts-dejavu-core nodejs npm \
                   debhelper dh-python python3-all dpkg-dev

.PHONY: run test setup system venv lint bench clean help

help:
	@echo "make run    - set up and start the daemon in the foreground on :30000"
	@echo "make test   - set up and run the whole test suite"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks (print figures, never fail on speed)"

system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(VENV)/.installed

setup: system venv

run: setup
	mkdir -p var
	$(VENV)/bin/twistd --nodaemon --pidfile= streamlab --config etc/streamlab.dev.conf

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build dist *.egg-info var
