# crossguard: `make serve` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 3000
PYTEST_ARGS ?=
export BENTOML_DO_NOT_TRACK := True

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

install: $(VENV)/.installed  ## create the venv and install pinned dependencies

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

promtool:  ## install Prometheus (Debian package) for rule tests and e2e scrapes
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }

page-tools:  ## install headless Chromium and Tesseract (Debian packages) for the page screenshot test
	@command -v chromium >/dev/null && command -v tesseract >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium tesseract-ocr >/dev/null; }

# The shipped demo files (unlearning/demo/built/) are copied in when this code built them;
# REBUILD=1 builds from code instead (20-40 min).
demo-model: install  ## copy (or build, REBUILD=1) the embedded demo VLM; models/default points at it
	HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo build $(if $(REBUILD),--force) | tail -n 1

# The adapter's settings live in unlearning/demo/safety.py; its folder is named by them, the
# model, the trainer's code and the library versions, so any change retrains instead of reusing.
safety-adapter: install  ## copy (or train, REBUILD=1) the demo's unlearning adapter `safety`
	HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo safety $(if $(REBUILD),--force) | tail -n 1

# ADAPTERS_ONLY=1 keeps the shipped model (it must still fit the code) and retrains the adapters.
demo-ship: install  ## rebuild the demo files from code and refresh unlearning/demo/built/ (~40 min)
	HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo rebuild --ship $(if $(ADAPTERS_ONLY),--adapters-only) | tail -n 1

serve: install  ## serve the demo model on 127.0.0.1:$(PORT), `safety` as default adapter
	adapter=$$(HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo safety | tail -n 1); \
	HF_HUB_OFFLINE=1 CROSSGUARD_ADAPTERS="safety=$$adapter" CROSSGUARD_DEFAULT_ADAPTER=safety \
	  exec $(VENV)/bin/bentoml serve service.app:CrossGuard --host 127.0.0.1 --port $(PORT)

demo-report: install  ## rebuild check, then README's demo tables (3 seeds) into demo-report/; exit 1 on a miss
	HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo rebuild | tail -n 1
	HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo report --out demo-report | tail -n 1

test: install promtool page-tools  ## run the whole test suite (slow tiers included)
	$(VENV)/bin/ruff check service unlearning tests bench
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install demo-model  ## print the serving-overhead ratios on the demo model
	HF_HUB_OFFLINE=1 $(PY) -m bench.serve_overhead

.PHONY: help install promtool page-tools demo-model safety-adapter demo-ship serve demo-report test bench
