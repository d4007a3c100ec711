"""A few real training steps on the tiny model: each term moves the right way, the adapter
loads in the service and changes its answers, checkpoints resume exactly."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.unlearning.conftest import HARMFUL, REFUSAL, config
from unlearning.config import LoraSettings, TrainConfig
from unlearning.trainer import train


def measure(model_path, adapter, cfg: TrainConfig) -> dict[str, dict[str, float]]:
    """Mean forget NLL, refusal NLL and retain KL over the whole data, base vs adapter."""
    from peft import PeftModel

    from service.vlm.loading import load_vlm
    from unlearning.objective import compute_terms
    from unlearning.trainer import build_source

    model, processor, _ = load_vlm(str(model_path), device="cpu", dtype="float32")
    source, _ = build_source(cfg, processor, model.config)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    batches = source.batches(0, len(HARMFUL), {"forget", "refusal", "retain"})
    out = {}
    with torch.no_grad():
        _, out["adapter"] = compute_terms(peft_model, peft_model, batches, cfg.loss)
        with peft_model.disable_adapter():
            _, out["base"] = compute_terms(peft_model, peft_model, batches, cfg.loss)
    return out


@pytest.fixture(scope="module")
def trained(tiny_model, data, tmp_path_factory):
    cfg = config(tiny_model, data, tmp_path_factory.mktemp("adapters") / "safety")
    return train(cfg, progress=False), cfg


def test_each_term_moves_the_right_way(tiny_model, trained):
    """The untrained tiny model's frozen lm_head keeps its logits near uniform (NLLs near
    ln|V| = 6), so the moves are modest; the demo model shows the full effect."""
    adapter, cfg = trained
    terms = measure(tiny_model, adapter, cfg)
    base, after = terms["base"], terms["adapter"]
    assert after["forget_nll"] > base["forget_nll"] + 0.3, terms
    assert after["refusal"] < base["refusal"] - 0.5, terms
    assert base["retain"] == pytest.approx(0, abs=1e-6)
    assert after["retain"] < 0.05, terms


def test_the_adapter_loads_in_the_service_and_changes_its_answers(tiny_model, trained):
    from service.probes.judges import KeywordRefusalJudge
    from service.vlm.engine import VLMEngine
    from service.vlm.messages import Message
    from service.vlm.protocol import SamplingParams

    engine = VLMEngine.from_pretrained(tiny_model, adapters={"safety": trained[0]})
    params = SamplingParams(max_tokens=16, temperature=0.0)
    refused, changed = 0, 0
    for harmful in HARMFUL:
        messages = [Message.of("user", f"how do i {harmful}?")]
        base = engine.generate(messages, params).text
        safe = engine.generate(messages, params, adapter="safety").text
        changed += base != safe
        refused += bool(KeywordRefusalJudge().refused(safe))
    assert changed == len(HARMFUL)
    assert refused >= len(HARMFUL) - 1


def test_metadata_records_base_data_config_and_losses(trained):
    adapter, cfg = trained
    meta = json.loads((adapter / "crossguard.json").read_text())
    assert meta["kind"] == "textual-unlearning" and meta["base_model"] == cfg.run.model
    assert len(meta["base_fingerprint"]) == 16
    assert meta["data"]["forget"][0]["sha256"] and meta["data"]["retain"][0]["examples"] == 6
    assert meta["config"]["loss"]["forget_weight"] == 0.5
    assert meta["steps"] == 20 and meta["stopped_by"] == "max_steps"
    assert set(meta["final_losses"]) == {"loss", "forget", "forget_nll", "refusal", "retain"}
    log = [json.loads(line) for line in (adapter / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [5, 10, 15, 20]


def test_only_language_model_lora_weights_are_trained(tiny_model):
    from service.vlm.loading import load_vlm
    from unlearning.trainer import add_lora

    model, _, _ = load_vlm(str(tiny_model), device="cpu", dtype="float32")
    peft_model = add_lora(model, LoraSettings(r=4), seed=0)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)
    model, _, _ = load_vlm(str(tiny_model), device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="target_modules: .* reaches the vision side"):
        add_lora(model, LoraSettings(target_modules=r".*\.(q_proj|v_proj)"), seed=0)


def test_resume_continues_exactly_where_the_checkpoint_left_off(tiny_model, data, tmp_path):
    from safetensors.torch import load_file

    whole = train(config(tiny_model, data, tmp_path / "whole", optim__max_steps=6),
                  progress=False)
    part = tmp_path / "part"
    train(config(tiny_model, data, part, optim__max_steps=6, run__save_every=3), progress=False)
    for name in ("adapter_model.safetensors", "crossguard.json", "train_log.jsonl"):
        (part / name).unlink()
    resumed = train(config(tiny_model, data, part, optim__max_steps=6, run__resume=True),
                    progress=False)
    a, b = load_file(whole / "adapter_model.safetensors"), load_file(
        resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="resume: .* different loss"):
        train(config(tiny_model, data, part, optim__max_steps=6, run__resume=True,
                     loss__forget_weight=0.3), progress=False)


def test_npo_multimodal_and_early_stop(tiny_model, data, tmp_path):
    cfg = config(tiny_model, data, tmp_path / "npo", loss__forget_loss="npo",
                 loss__forget_nll_cap=None, data__modality="multimodal",
                 optim__max_steps=30, optim__stop_forget_nll=6.0, optim__lr=5e-2)
    out = train(cfg, progress=False)
    meta = json.loads((out / "crossguard.json").read_text())
    assert meta["modality"] == "multimodal"
    assert meta["stopped_by"] == "stop_forget_nll" and meta["steps"] < 30
    assert meta["final_losses"]["forget_nll"] > 6.0
    assert 0 <= meta["final_losses"]["forget"] < 2 / 0.1 * 0.7


@pytest.mark.slow
def test_two_processes_split_each_step_like_one_process(tiny_model, data, tmp_path):
    """`accelerate`'s multi-process path (DDP over gloo on CPU, as torchrun starts it): two
    processes with batch 1 draw the examples one process draws with batch 2."""
    torchrun = Path(sys.executable).with_name("torchrun")
    common = ["--model", str(tiny_model), "--forget", data[0], "--retain", data[1],
              "--max-steps", "4", "--lr", "1e-2", "--refusals", REFUSAL, "--rank", "8",
              "--alpha", "16"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "unlearning", "train",
                    "--out", str(tmp_path / "ddp"), "--batch-size", "1", *common],
                   check=True, env=env, capture_output=True, timeout=600)
    single = train(config(tiny_model, data, tmp_path / "one", optim__batch_size=2,
                          optim__max_steps=4, optim__schedule="linear",
                          loss__forget_nll_cap=None), progress=False)
    ddp = json.loads((tmp_path / "ddp" / "crossguard.json").read_text())
    one = json.loads((single / "crossguard.json").read_text())
    assert ddp["processes"] == 2 and ddp["steps"] == 4
    for term in ("forget_nll", "refusal"):
        assert ddp["final_losses"][term] == pytest.approx(one["final_losses"][term], abs=0.02)


def test_training_with_recovery_prefixes_is_deterministic(tiny_model, data, tmp_path):
    from safetensors.torch import load_file

    def run(name, **changes):
        settings = {"optim__max_steps": 3, "loss__recovery_share": 0.5, **changes}
        cfg = config(tiny_model, data, tmp_path / name, **settings)
        return load_file(train(cfg, progress=False) / "adapter_model.safetensors")

    first, again, plain = run("a"), run("b"), run("c", loss__recovery_share=0.0)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], plain[k]) for k in first)


@pytest.mark.parametrize(("dtype", "device", "expected"), [
    ("auto", "cuda", torch.bfloat16), ("auto", "cpu", torch.float32),
    ("float16", "cpu", torch.float16)])
def test_the_base_model_loads_on_the_cpu_in_the_dtype_of_the_training_device(
        tiny_model, data, tmp_path, dtype, device, expected):
    """`auto` follows the device training runs on (accelerate moves the model there later),
    not the CPU it is loaded on."""
    from unlearning.trainer import load_model

    model, _ = load_model(config(tiny_model, data, tmp_path, run__dtype=dtype),
                          torch.device(device))
    assert model.dtype == expected
    assert model.device.type == "cpu"


def log_rows(adapter: Path) -> list[dict]:
    return [json.loads(line) for line in (adapter / "train_log.jsonl").read_text().splitlines()]


def tiny_batches(model_path, cfg: TrainConfig):
    """A LoRA-wrapped tiny model and one batch of every term, as the trainer builds them."""
    from service.vlm.loading import load_vlm
    from unlearning.trainer import add_lora, build_source

    model, processor, _ = load_vlm(str(model_path), device="cpu", dtype="float32")
    source, _ = build_source(cfg, processor, model.config)
    peft_model = add_lora(model, cfg.lora, seed=0)
    return peft_model, source.batches(0, 3, {"forget", "refusal", "retain"})


def forward_calls(peft_model, batches, loss) -> list[set[str]]:
    """compute_terms on the batches; the keyword names of each forward call it made."""
    from unlearning.objective import compute_terms

    calls = []

    def model(**kwargs):
        calls.append(set(kwargs))
        return peft_model(**kwargs)

    compute_terms(model, peft_model, batches, loss, progress=(0, 10))
    return calls


def test_hidden_states_are_asked_for_only_by_the_terms_that_use_them(tiny_model, data, tmp_path):
    """The default ga + kl objective runs the four forward passes it always ran, without hidden
    states; --retain-loss hidden asks for them on the retain rows only (base and adapted)."""
    cfg = config(tiny_model, data, tmp_path)
    peft_model, batches = tiny_batches(tiny_model, cfg)
    plain = forward_calls(peft_model, batches, cfg.loss)
    assert len(plain) == 4 and not any("output_hidden_states" in c for c in plain)
    hidden = forward_calls(peft_model, batches, dataclasses.replace(cfg.loss,
                                                                    retain_loss="hidden"))
    assert ["output_hidden_states" in c for c in hidden] == [False, False, True, True]
    assert all("logits_to_keep" in c for c in hidden[2:])
    reroute = forward_calls(peft_model, batches, dataclasses.replace(
        cfg.loss, forget_loss="reroute", forget_nll_cap=None))
    assert ["output_hidden_states" in c for c in reroute] == [True, True, False, False, False]


def test_hidden_retain_keeps_the_normal_rows_states_closer_than_no_retain(
        tiny_model, data, tmp_path):
    from peft import PeftModel

    from service.vlm.loading import load_vlm
    from unlearning import losses
    from unlearning.objective import hidden_states_of
    from unlearning.trainer import build_source

    def distance_to_base(adapter, cfg) -> float:
        """Mean l2 distance of the adapted states to the base's on all retain rows."""
        model, processor, _ = load_vlm(str(tiny_model), device="cpu", dtype="float32")
        source, _ = build_source(cfg, processor, model.config)
        peft_model = PeftModel.from_pretrained(model, str(adapter))
        batch = source.batches(0, 6, {"retain"})["retain"]
        with torch.no_grad():
            after = hidden_states_of(peft_model, peft_model, batch)[0]
            with peft_model.disable_adapter():
                before = hidden_states_of(peft_model, peft_model, batch)[0]
        return losses.hidden_distance(after[1:], before[1:], batch["attention_mask"]).item()

    common = {"optim__max_steps": 10, "loss__retain_loss": "hidden"}
    kept = config(tiny_model, data, tmp_path / "hidden", loss__retain_weight=5.0, **common)
    adapter = train(kept, progress=False)
    meta = json.loads((adapter / "crossguard.json").read_text())
    assert set(meta["final_losses"]) == {"loss", "forget", "forget_nll", "refusal", "retain"}
    assert meta["config"]["loss"]["retain_loss"] == "hidden"
    assert all(row["retain"] >= 0 for row in log_rows(adapter))
    loose = config(tiny_model, data, tmp_path / "loose", loss__retain_weight=0.0, **common)
    unkept = train(loose, progress=False)
    assert distance_to_base(adapter, kept) < 0.5 * distance_to_base(unkept, loose)


def test_reroute_turns_the_harmful_rows_states_away_on_the_papers_schedule(
        tiny_model, data, tmp_path):
    cfg = config(tiny_model, data, tmp_path / "reroute", loss__forget_loss="reroute",
                 loss__forget_nll_cap=None, loss__forget_weight=4.0,
                 loss__retain_loss="hidden")
    adapter = train(cfg, progress=False)
    rows = log_rows(adapter)
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    for row in rows:
        t = row["step"] - 1  # the logged step's metrics were computed after t steps
        assert row["forget_scale"] == pytest.approx(1 - t / 40)
        assert row["retain_scale"] == pytest.approx(t / 40)
        assert row["forget"] == pytest.approx(row["forget_scale"] * row["forget_unscaled"])
        assert row["retain"] == pytest.approx(row["retain_scale"] * row["retain_unscaled"])
        assert row["loss"] == pytest.approx(4.0 * row["forget"] + row["refusal"]
                                            + row["retain"])
    assert {"forget_nll", "refusal"} <= set(rows[-1])
    after = measure(tiny_model, adapter, cfg)["adapter"]
    assert after["forget"] < 0.5, after  # mean ReLU(cos) to the base: 1 before training
    assert rows[-1]["forget_unscaled"] < rows[0]["forget_unscaled"]


def test_rmu_steers_the_harmful_rows_states_to_the_random_target(tiny_model, data, tmp_path):
    cfg = config(tiny_model, data, tmp_path / "rmu", loss__forget_loss="rmu",
                 loss__forget_nll_cap=None, loss__retain_loss="hidden",
                 loss__hidden_distance="mse", loss__retain_layers=[1], loss__rmu_layer=1,
                 loss__rmu_coefficient=5.0, loss__refusal_weight=0.0, loss__forget_weight=1.0,
                 run__log_every=1, optim__max_steps=8)
    rows = log_rows(train(cfg, progress=False))
    assert len(rows) == 8 and {"forget", "forget_nll", "retain"} <= set(rows[-1])
    assert "forget_scale" not in rows[-1]  # the schedule is reroute's only
    assert rows[-1]["forget"] < 0.7 * rows[0]["forget"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"forget_loss": "reroute"}, "forget_nll_cap: applies to forget_loss 'ga' only"),
    ({"forget_loss": "rmu"}, "forget_nll_cap: applies to forget_loss 'ga' only"),
    ({"forget_nll_cap": None, "reroute_layers": [1]},
     "reroute_layers: applies to forget_loss 'reroute' only"),
    ({"retain_layers": [1]}, "retain_layers: applies to retain_loss 'hidden' only"),
    ({"retain_loss": "hidden", "retain_layers": [0]}, "retain_layers: layers are hidden_states"),
    ({"retain_loss": "hidden", "retain_layers": [1, 1]}, "retain_layers: a layer is given twice"),
    ({"forget_loss": "rmu", "forget_nll_cap": None, "rmu_coefficient": 0},
     "rmu_coefficient: must be positive"),
    ({"retain_loss": "mse"}, "retain_loss: 'mse' is not one of kl, hidden"),
])
def test_invalid_representation_settings_name_the_field(changes, message):
    from unlearning.config import LossConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        LossConfig(**{"refusals": [REFUSAL], "forget_nll_cap": 8.0, **changes})


@pytest.mark.parametrize(("changes", "message"), [
    ({"loss__retain_loss": "hidden", "loss__retain_layers": [3]},
     "retain_layers: layer 3 is out of range; the model has 2 decoder layers"),
    ({"loss__forget_loss": "reroute", "loss__forget_nll_cap": None,
      "loss__reroute_layers": [1, 7]}, "reroute_layers: layer 7 is out of range"),
])
def test_a_layer_beyond_the_models_depth_fails_naming_the_field(
        tiny_model, data, tmp_path, changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train(config(tiny_model, data, tmp_path, optim__max_steps=2, **changes), progress=False)
