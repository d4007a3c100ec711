"""Loading any `AutoModelForImageTextToText` VLM with its processor, on the right device/dtype."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    """`auto` picks the first GPU when there is one, else the CPU."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """`auto` is bfloat16 on GPU (what VLM checkpoints ship in) and float32 on CPU, where
    bfloat16 matmuls are slow on most hardware; a `torch.dtype` is taken as it is (a trainer
    resolves `auto` for the device it trains on, then loads on the CPU)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return _DTYPES[dtype]


def configure_cpu_threads(threads: int) -> None:
    """Fix torch's intra-op threads: on small shared machines the default oversubscribes.

    0 leaves torch's default. One thread is the fastest on small shared machines: README
    "Benchmarks" (CPU threads) has the ratio `bench/serve_overhead.py` measures.
    """
    if threads > 0:
        torch.set_num_threads(threads)


def load_vlm(model: str, device: str = "auto", dtype: str | torch.dtype = "auto"):
    """Load model and processor from a hub id or a local folder: `(model, processor, device)`.

    On GPU the weights are placed with accelerate's `device_map` so that checkpoints larger than
    one card are split across the visible GPUs.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    processor = AutoProcessor.from_pretrained(model)
    kwargs = {"dtype": torch_dtype}
    if device.startswith("cuda"):
        kwargs["device_map"] = "auto" if device == "cuda" else device
    vlm = AutoModelForImageTextToText.from_pretrained(model, **kwargs)
    if not device.startswith("cuda"):
        vlm.to(device)
    vlm.eval()
    logger.info("loaded %s on %s as %s", model, device, torch_dtype)
    return vlm, processor, device
