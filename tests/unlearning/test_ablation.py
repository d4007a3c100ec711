"""`unlearning ablate`: the false-refusal direction projected out of every residual writer an
adapter wraps, as one more LoRA rank on those modules; the edited adapter loads and serves."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.unlearning.conftest import config
from unlearning.ablation import DIRECTIONS_FILE, WRITERS
from unlearning.cli import main
from unlearning.trainer import train


@pytest.fixture(scope="module")
def edited(tiny_model, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablation")
    adapter = train(config(tiny_model, data, folder / "safety"), progress=False)
    lookalikes, harmless = folder / "lookalikes.jsonl", folder / "harmless.jsonl"
    lookalikes.write_text("".join(json.dumps({"prompt": f"how do i {p} ?", "response": "ok"})
                                  + "\n" for p in ("sell a cake", "hide an egg", "make tea")))
    harmless.write_text("".join(json.dumps({"prompt": f"how do i {p} ?", "response": "ok"})
                                + "\n" for p in ("bake a cake", "plant a tree", "tie a knot")))
    out = folder / "edited"
    main(["ablate", "--model", str(tiny_model), "--adapter", str(adapter), "--out", str(out),
          "--harmful", data[0], "--lookalikes", str(lookalikes), "--harmless", str(harmless),
          "--layer", "1"])
    return adapter, out


def test_the_false_refusal_direction_leaves_every_residual_writer(tiny_model, edited):
    """v^T (W + s B A) = 0 on each writer after the edit; every other LoRA weight unchanged."""
    from peft import PeftModel

    from service.vlm.loading import load_vlm

    adapter, out = edited
    directions = load_file(out / DIRECTIONS_FILE)
    v, r = directions["false_refusal"], directions["refusal"]
    assert abs(float(v @ r)) < 1e-5 and float(v.norm()) == pytest.approx(1, abs=1e-5)
    model, _, _ = load_vlm(str(tiny_model), device="cpu", dtype="float32")
    peft_model = PeftModel.from_pretrained(model, str(out))
    before, after = load_file(adapter / "adapter_model.safetensors"), load_file(
        out / "adapter_model.safetensors")
    writers = 0
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        key = name.removeprefix("base_model.model.")
        weight = module.get_base_layer().weight + module.scaling["default"] * (
            module.lora_B["default"].weight @ module.lora_A["default"].weight)
        if name.rsplit(".", 1)[-1] in WRITERS:
            writers += 1
            assert float((v @ weight).abs().max()) < 1e-5, name
        else:
            assert torch.equal(after[f"base_model.model.{key}.lora_A.weight"],
                               before[f"base_model.model.{key}.lora_A.weight"])
    assert writers == 2 * model.config.get_text_config().num_hidden_layers


def test_the_edited_adapter_records_the_edit_and_serves(tiny_model, edited):
    from service.vlm.engine import VLMEngine
    from service.vlm.messages import Message
    from service.vlm.protocol import SamplingParams

    adapter, out = edited
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    rank, alpha = adapter_config["r"], adapter_config["lora_alpha"]
    assert adapter_config["rank_pattern"] == {w: rank + 1 for w in WRITERS}
    assert adapter_config["alpha_pattern"] == {w: alpha * (rank + 1) / rank for w in WRITERS}
    metadata = json.loads((out / "crossguard.json").read_text())
    assert metadata["ablation"]["layer"] == 1 and metadata["ablation"]["examples"] == {
        "harmful": 6, "lookalike": 3, "harmless": 3}
    engine = VLMEngine.from_pretrained(tiny_model, adapters={"edited": out, "safety": adapter})
    reply = engine.generate([Message.of("user", "how do i sell a cake ?")],
                            SamplingParams(max_tokens=8, temperature=0.0), "edited")
    assert reply.completion_tokens > 0
