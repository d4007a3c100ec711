# crossguard: `make serve` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 3000
CROSSGUARD_HOME ?= $(HOME)/.cache/crossguard
PYTEST_ARGS ?=
export CROSSGUARD_HOME
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

demo-model: install  ## build (or reuse) the embedded demo VLM and point models/default at it
	@model=$$(HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo build | tail -n 1); \
	ln -sfn "$$model" "$(CROSSGUARD_HOME)/models/default"; \
	echo "default model: $$model"

SAFETY_ARGS ?= --refusals "i'm sorry, but i cannot help with that." \
  --max-steps 150 --batch-size 16 --lr 5e-4 --forget-nll-cap 6 --retain-weight 5 --seed 0
# The adapter folder is named after its settings, so changing them retrains instead of reusing.
SAFETY_TAG = $(shell echo "$(subst ",,$(SAFETY_ARGS))" | sha256sum | cut -c1-8)

safety-adapter: demo-model  ## train (or reuse) the demo's text-only unlearning adapter `safety`
	@model=$$(readlink -f "$(CROSSGUARD_HOME)/models/default"); \
	out="$$model-adapters/safety-$(SAFETY_TAG)"; \
	if [ ! -f "$$out/crossguard.json" ]; then \
	  HF_HUB_OFFLINE=1 $(PY) -m unlearning train --model "$$model" \
	    --forget "$$model/data/forget.jsonl" --retain "$$model/data/retain.jsonl" \
	    $(SAFETY_ARGS) --out "$$out"; \
	fi; \
	ln -sfn "$$out" "$$model-adapters/safety"

serve: safety-adapter  ## serve the demo model on 127.0.0.1:$(PORT), `safety` as default adapter
	model=$$(readlink -f "$(CROSSGUARD_HOME)/models/default"); \
	HF_HUB_OFFLINE=1 CROSSGUARD_MODEL="$$model" CROSSGUARD_ADAPTERS="safety=$$model-adapters/safety" \
	  CROSSGUARD_DEFAULT_ADAPTER=safety \
	  exec $(VENV)/bin/bentoml serve service.app:CrossGuard --host 127.0.0.1 --port $(PORT)

test: install promtool  ## run the whole test suite (slow tiers included)
	$(VENV)/bin/ruff check service unlearning tests bench
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install demo-model  ## print the serving-overhead ratios on the demo model
	HF_HUB_OFFLINE=1 $(PY) -m bench.serve_overhead

.PHONY: help install promtool demo-model safety-adapter serve test bench
