#!/usr/bin/env bash
# The first GPU check, in one command: both engines on a real LLaVA-1.5 checkpoint.
#
#   bench/gpu_check.sh MODEL_DIR ADAPTER_DIR      # e.g. a local llava-hf/llava-1.5-7b-hf and a
#                                                 # LoRA trained by `python -m unlearning train`
#
# Needs an NVIDIA GPU, Python 3.11 and the package index (no model hub: both folders are local).
# Installs the torch engine's venv (.venv, CUDA torch from PyPI) and vLLM's (.venv-vllm-gpu, the
# CUDA build: deploy/vllm/requirements.py --gpu) unless present, then
#   1. the engine-equality tests (tests/vllm/test_engine_equality.py) on MODEL_DIR + ADAPTER_DIR:
#      the same greedy requests, text, image, base, adapter and a mixed burst, through both
#      engines over HTTP;
#   2. the load bench with the engines side by side (bench/load.py --engine vllm torch), one run,
#      1/4/16 clients, text/image/mixed adapters;
# and prints one table per step. Logs go to gpu-check/ (kept for the closing note).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "${1:?usage: bench/gpu_check.sh MODEL_DIR ADAPTER_DIR}")
adapter=$(realpath "${2:?usage: bench/gpu_check.sh MODEL_DIR ADAPTER_DIR}")
out=gpu-check
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet -e '.[test,gpu]'
fi
if [ ! -x .venv-vllm-gpu/bin/python ]; then
  python3 -m venv .venv-vllm-gpu
  python3 deploy/vllm/requirements.py --gpu > .venv-vllm-gpu/requirements.txt
  .venv-vllm-gpu/bin/pip install --quiet -r .venv-vllm-gpu/requirements.txt
  .venv-vllm-gpu/bin/pip install --quiet --no-deps -e .
fi

export CROSSGUARD_VLLM_PYTHON=$PWD/.venv-vllm-gpu/bin/python HF_HUB_OFFLINE=1
# Two servers share the GPU: vLLM takes half of its memory, the torch engine the weights it needs.
export CROSSGUARD_TEST_MODEL=$model CROSSGUARD_TEST_ADAPTER=$adapter \
  CROSSGUARD_TEST_VLLM_ENGINE_ARGS='{"gpu_memory_utilization": 0.5}'
.venv/bin/pytest -o addopts="-ra --strict-markers" tests/vllm/test_engine_equality.py \
  2>&1 | tee "$out/equality.txt"
.venv/bin/python -m bench.load --model "$model" --adapter "$adapter" --engine vllm torch \
  --vllm-engine-args '{"gpu_memory_utilization": 0.5}' 2>&1 | tee "$out/load.txt"
