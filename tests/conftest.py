"""Session fixtures for every tier: a tiny model built from code and an adapter trained on it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

REPLY = "I cannot help with that."
"""What the `reply_adapter` fixture says to everything: a refusal the keyword judge recognises."""


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from tests.fixtures.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def reply_adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter trained so that the tiny model answers every prompt with REPLY."""
    from tests.fixtures.reply_adapter import train_reply_adapter

    return train_reply_adapter(tiny_model, tmp_path_factory.mktemp("adapters") / "refuse", REPLY)


@pytest.fixture(scope="session")
def engine(tiny_model, reply_adapter):
    from service.vlm.engine import VLMEngine

    return VLMEngine.from_pretrained(tiny_model, adapters={"refuse": reply_adapter})
