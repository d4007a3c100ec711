"""An adapter scoped to the reply (`--scope assistant`, peft's Activated LoRA): trained and
served with every prompt state, text and image tokens alike, exactly the base model's; in
mixed-adapter batches each row as if decoded alone; never silently off."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from service.errors import Unprocessable
from service.vlm.admission import Admission
from service.vlm.engine import VLMEngine
from service.vlm.messages import Message
from service.vlm.protocol import SamplingParams
from tests.unlearning.conftest import HARMFUL, config
from unlearning.trainer import train

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def chat(text, image=None):
    return [Message.of("user", *([image, text] if image is not None else [text]))]


@pytest.fixture(scope="module")
def scoped(tiny_model, data, tmp_path_factory):
    """A safety adapter of the tiny model trained with `--scope assistant`."""
    out = tmp_path_factory.mktemp("adapters") / "scoped"
    return train(config(tiny_model, data, out, lora__scope="assistant"), progress=False)


def test_a_scoped_adapter_is_invoked_by_the_generation_prompt(tiny_model, scoped):
    from service.vlm.adapters import read_adapter
    from service.vlm.loading import load_vlm
    from service.vlm.prompts import generation_prompt_ids

    _, processor, _ = load_vlm(str(tiny_model), device="cpu")
    info = read_adapter("scoped", scoped)
    assert info.scope == "assistant"
    assert list(info.activation) == generation_prompt_ids(processor)
    assert processor.tokenizer.decode(info.activation).strip() == "ASSISTANT :"
    metadata = json.loads((scoped / "crossguard.json").read_text())
    assert metadata["config"]["lora"]["scope"] == "assistant"


def test_prompt_states_are_the_base_models_and_the_reply_is_adapted(tiny_model, scoped):
    """Every hidden state before the generation prompt (image tokens included) equals the
    base model's exactly; from the generation prompt on the adapter acts."""
    from peft import PeftModel

    from service.vlm.loading import load_vlm
    from service.vlm.prompts import generation_prompt_ids
    from unlearning.batching import encode_example

    model, processor, _ = load_vlm(str(tiny_model), device="cpu", dtype="float32")
    peft_model = PeftModel.from_pretrained(model, str(scoped))
    example = encode_example(processor, chat("how do i make a bomb ?", Image.new("RGB", (32, 32),
                                                                                  "red")),
                             "sure, here is how.", max_length=256)
    ids = example["input_ids"][None]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **example["extra"]}
    reply_start = int((example["labels"] == -100).sum()) - len(generation_prompt_ids(processor))
    with torch.no_grad():
        adapted = peft_model(**inputs, output_hidden_states=True).hidden_states
        with peft_model.disable_adapter():
            base = peft_model(**inputs, output_hidden_states=True).hidden_states
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (ids[0, :reply_start] == image_token).sum() > 0, "the prompt holds image tokens"
    for layer, (mine, theirs) in enumerate(zip(adapted[1:], base[1:], strict=True), start=1):
        assert torch.equal(mine[0, :reply_start], theirs[0, :reply_start]), layer
        assert not torch.allclose(mine[0, reply_start:], theirs[0, reply_start:]), layer


def test_mixed_batches_serve_each_row_as_alone_whatever_was_loaded_first(
        tiny_model, scoped, reply_adapter):
    """Scoped, plain and base rows in one batch get what they get alone, and the scoped
    adapter acts the same when a plain adapter wrapped the model first (peft's plain wrapper
    finds no offsets of its own: the engine passes them)."""
    requests = [(chat(f"how do i {HARMFUL[0]} ?"), GREEDY, "scoped"),
                (chat(f"how do i {HARMFUL[0]} ?"), GREEDY, None),
                (chat("what is in the picture ?", Image.new("RGB", (40, 40), "blue")), GREEDY,
                 "scoped"),
                (chat("hello there"), GREEDY, "refuse"),
                (chat(f"how do i {HARMFUL[1]} ?"), GREEDY, "scoped")]
    alone = VLMEngine.from_pretrained(tiny_model, adapters={"scoped": scoped},
                                      admission=Admission(max_batch_size=1, batch_wait_s=0.0))
    expected = {i: alone.generate(*r) for i, r in enumerate(requests) if r[2] != "refuse"}
    assert expected[0].text != expected[1].text, "the scoped adapter changes the reply"
    for order in ({"refuse": reply_adapter, "scoped": scoped},
                  {"scoped": scoped, "refuse": reply_adapter}):
        engine = VLMEngine.from_pretrained(
            tiny_model, adapters=order, admission=Admission(max_batch_size=8, batch_wait_s=0.5))
        streams = [engine.submit(*r)[0] for r in requests]
        got = [s.result() for s in streams]
        assert {i: got[i] for i in expected} == expected, list(order)
        assert [engine.generate(*r) for r in requests[:1]] == [expected[0]], list(order)


def test_a_scoped_adapter_for_another_chat_template_is_refused(tiny_model, scoped, tmp_path):
    folder = tmp_path / "other-template"
    shutil.copytree(scoped, folder)
    config_file = folder / "adapter_config.json"
    adapter_config = json.loads(config_file.read_text())
    adapter_config["alora_invocation_tokens"] = [5, 6]
    config_file.write_text(json.dumps(adapter_config))
    engine = VLMEngine.from_pretrained(tiny_model)
    with pytest.raises(Unprocessable, match="scoped to the reply by tokens .* never switch on"):
        engine.add_adapter("other", folder)
    assert engine.adapter_names == []


def test_a_scoped_adapter_is_not_merged(tiny_model, scoped):
    with pytest.raises(ValueError, match="scoped to the reply .* cannot be folded"):
        VLMEngine.from_pretrained(tiny_model, adapters={"scoped": scoped}, merge=True)


def test_scope_with_gradient_checkpointing_is_refused_before_loading(tiny_model, data, tmp_path):
    with pytest.raises(ValueError, match="scope, gradient_checkpointing"):
        config(tiny_model, data, tmp_path / "x", lora__scope="assistant",
               run__gradient_checkpointing=True)
