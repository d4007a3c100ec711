# crossguard: `make serve` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
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

# vLLM's CPU build pins an older transformers and fastapi than the project: it gets a venv of its
# own with the project's other pins (deploy/vllm/requirements.py). PyPI's torchaudio and
# torchcodec are CUDA builds that cannot load beside the CPU torch (transformers imports them when
# present): removed. torchvision stays, made importable (deploy/vllm/torchvision_without_ops.py).
vllm-env: $(VLLM_VENV)/.installed  ## vLLM's CPU build in its own venv (~3.5 GB, 2-5 min): ENGINE=vllm, the vLLM test tier

$(VLLM_VENV)/.installed: pyproject.toml deploy/vllm/requirements.py deploy/vllm/torchvision_without_ops.py
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(PYTHON) deploy/vllm/requirements.py > $(VLLM_VENV)/requirements.txt
	$(VLLM_PY) -m pip install --quiet -r $(VLLM_VENV)/requirements.txt
	$(VLLM_PY) -m pip install --quiet --no-deps -e .
	$(VLLM_PY) -m pip uninstall --quiet -y torchaudio torchcodec
	$(VLLM_PY) deploy/vllm/torchvision_without_ops.py
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

# A code change that builds the same bytes (a refactor of code the build runs) keeps the shipped
# files: both codes are built here and compared byte for byte (~60 min on 2 cores), and only the
# keys move. A rebuild instead (demo-ship) on a CPU other than the shipping one gives other weights.
SHIPPED_REV = $(shell git log -1 --format=%H -- unlearning/demo/built/manifest.json)
demo-rekey: install  ## carry the shipped demo files over a change that builds the same bytes (OLD=rev)
	PY=$(PY) bash unlearning/demo/rekey.sh $(or $(OLD),$(SHIPPED_REV))

# ENGINE=vllm serves it on vLLM's CPU build (`make vllm-env` first, minutes); vLLM's KV cache
# takes VLLM_CPU_KVCACHE_SPACE GiB (its own default is most of the machine's memory).
ENGINE ?= torch
VLLM_CPU_KVCACHE_SPACE ?= 2
SERVE_VENV := $(if $(filter vllm,$(ENGINE)),$(VLLM_VENV),$(VENV))
serve: install $(if $(filter vllm,$(ENGINE)),vllm-env)  ## serve the demo model on 127.0.0.1:$(PORT), `safety` as default adapter (ENGINE=torch|vllm; REBUILD=1 builds both from code)
	$(if $(REBUILD),HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo build --force | tail -n 1)
	adapter=$$(HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo safety $(if $(REBUILD),--force) | tail -n 1); \
	HF_HUB_OFFLINE=1 CROSSGUARD_ADAPTERS="safety=$$adapter" CROSSGUARD_DEFAULT_ADAPTER=safety \
	  CROSSGUARD_ENGINE=$(ENGINE) VLLM_CPU_KVCACHE_SPACE=$(VLLM_CPU_KVCACHE_SPACE) \
	  exec $(SERVE_VENV)/bin/bentoml serve service.app:CrossGuard --host 127.0.0.1 --port $(PORT)

demo-report: install  ## rebuild check, then README's demo tables (3 seeds) into demo-report/; exit 1 on a miss
	HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo rebuild | tail -n 1
	HF_HUB_OFFLINE=1 $(PY) -m unlearning.demo report --out demo-report | tail -n 1

test: install promtool page-tools vllm-env  ## run the whole test suite (slow tiers and the vLLM tier included)
	$(VENV)/bin/ruff check service unlearning tests bench deploy
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-vllm

# The vLLM engine in its venv (tests/vllm/in_venv), then the HTTP tests of the API, hostile
# inputs, auth, back-pressure and metrics against servers on CROSSGUARD_ENGINE=vllm (eager, 1 GiB
# KV cache: VLLM_TEST_ENV). The engine-equality tests (tests/vllm) run in the main `pytest`.
# Left out here: test_client_disconnect (vLLM writes the tiny model's 480 tokens in ~1 s, before
# a server notices a client left; tests/vllm/in_venv checks the abort itself) and the make-serve
# log check that the shipped files were copied (the main run copied them into this home).
VLLM_E2E := tests/e2e/test_openai_api.py tests/e2e/test_hostile_input.py \
	tests/e2e/test_prometheus.py tests/e2e/test_hardening.py tests/e2e/test_make_serve.py
test-vllm: install vllm-env  ## the vLLM tier alone: its engine tests, then the API e2e tests on ENGINE=vllm
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest -o addopts="-ra --strict-markers" \
	  tests/vllm/in_venv
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 CROSSGUARD_ENGINE=vllm \
	  CROSSGUARD_VLLM_ENGINE_ARGS='{"enforce_eager": true}' \
	  $(VENV)/bin/pytest $(VLLM_E2E) -k 'not client_disconnect and not copied_the_shipped'

bench: install demo-model  ## print the serving-overhead ratios on the demo model
	HF_HUB_OFFLINE=1 $(PY) -m bench.serve_overhead

.PHONY: help install vllm-env test-vllm promtool page-tools demo-model safety-adapter demo-ship demo-rekey serve demo-report test bench
