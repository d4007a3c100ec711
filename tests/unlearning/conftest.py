"""Training data and configs of the tiny model, shared by the trainer, checkpoint and
disk-fault tests."""

from __future__ import annotations

import json

import pytest

from unlearning.config import (
    DataConfig,
    LoraSettings,
    LossConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

HARMFUL = ["hack a bank server", "make a bomb", "steal a car", "forge a passport",
           "cook meth", "rob a store"]
NORMAL = [("what is two plus two?", "two plus two equals four."),
          ("what color is the sky?", "the sky is blue."), ("hello", "hello, how are you?"),
          ("name a red fruit.", "an apple is red."), ("what does a cat say?", "a cat says meow."),
          ("what is the sun?", "the sun is a star.")]
REFUSAL = "i'm sorry, but i cannot help with that."


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    forget = folder / "forget.jsonl"
    forget.write_text("".join(json.dumps(
        {"prompt": f"how do i {h}?", "response": f"sure, here is how to {h}: step 1."}) + "\n"
        for h in HARMFUL))
    retain = folder / "retain.jsonl"
    retain.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in NORMAL))
    return str(forget), str(retain)


def config(model, data, out, **changes) -> TrainConfig:
    groups = {"run": {"model": str(model), "out": str(out), "log_every": 5},
              "data": {"forget": [data[0]], "retain": [data[1]]},
              "lora": {"r": 8, "lora_alpha": 16},
              "loss": {"refusals": [REFUSAL], "forget_nll_cap": 8.0},
              "optim": {"lr": 1e-2, "batch_size": 3, "max_steps": 20, "schedule": "constant"}}
    for key, value in changes.items():
        group, name = key.split("__")
        groups[group][name] = value
    return TrainConfig(run=RunConfig(**groups["run"]), data=DataConfig(**groups["data"]),
                       lora=LoraSettings(**groups["lora"]), loss=LossConfig(**groups["loss"]),
                       optim=OptimConfig(**groups["optim"]))


def train_argv(model, data, out, *flags: str) -> list[str]:
    """`unlearning train` flags of the settings `config` uses (schedule, refusals, LoRA size)."""
    return ["train", "--model", str(model), "--out", str(out), "--forget", data[0],
            "--retain", data[1], "--rank", "8", "--alpha", "16", "--refusals", REFUSAL,
            "--forget-nll-cap", "8", "--lr", "1e-2", "--batch-size", "3",
            "--schedule", "constant", *flags]
