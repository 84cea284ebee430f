# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
# Both (re)install into .venv when it is missing or older than pyproject.toml.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# System packages the tests use: Chromium (browser test), docker-compose (compose file check),
# Java (METEOR). Installed with apt when missing and we are root; otherwise those tests say why.
SYSTEM_DEPS := chromium docker-compose default-jre-headless

.PHONY: demo test lint system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vmm demo

system-deps:
	@if command -v chromium >/dev/null && command -v docker-compose >/dev/null && command -v java >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_DEPS) >/dev/null; \
	else echo "note: install $(SYSTEM_DEPS) for the browser, compose and METEOR tests"; fi

test: $(STAMP) system-deps
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
