"""Adapters loaded and unloaded while serving; bad adapters refused without side effects."""

import json
import shutil
import threading

import pytest
from safetensors.torch import load_file, save_file

from service.errors import BadRequest, Conflict, NotFound, Unprocessable
from service.vlm.engine import VLMEngine
from service.vlm.messages import Message
from service.vlm.protocol import SamplingParams
from tests.conftest import REPLY

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)
HI = [Message.of("user", "hi")]


@pytest.fixture()
def fresh_engine(tiny_model):
    return VLMEngine.from_pretrained(tiny_model)


@pytest.fixture()
def broken(reply_adapter, tmp_path):
    """Copies of the good adapter, each broken one way."""

    def make(kind: str):
        folder = tmp_path / kind
        shutil.copytree(reply_adapter, folder)
        weights = folder / "adapter_model.safetensors"
        if kind == "truncated":
            weights.write_bytes(weights.read_bytes()[:300])
        elif kind == "wrong-rank":
            config = json.loads((folder / "adapter_config.json").read_text())
            config["r"] = 4
            (folder / "adapter_config.json").write_text(json.dumps(config))
        elif kind == "missing-module":
            tensors = {k.replace("layers.1.", "layers.9."): v
                       for k, v in load_file(weights).items()}
            save_file(tensors, weights)
        elif kind == "other-base":
            meta = json.loads((folder / "crossguard.json").read_text())
            meta["base_fingerprint"] = "0" * 16
            (folder / "crossguard.json").write_text(json.dumps(meta))
        elif kind == "not-an-adapter":
            (folder / "adapter_config.json").unlink()
        return folder

    return make


def test_add_then_remove_adapter_at_run_time(fresh_engine, reply_adapter):
    base = fresh_engine.generate(HI, GREEDY)
    info = fresh_engine.add_adapter("refuse", reply_adapter)
    assert info.rank == 8 and fresh_engine.adapter_names == ["refuse"]
    assert fresh_engine.generate(HI, GREEDY, "refuse").text.strip() == REPLY
    assert fresh_engine.generate(HI, GREEDY) == base
    fresh_engine.remove_adapter("refuse")
    assert fresh_engine.adapter_names == []
    assert fresh_engine.generate(HI, GREEDY) == base
    with pytest.raises(NotFound):
        fresh_engine.generate(HI, GREEDY, "refuse")


def test_duplicate_and_unknown_names(fresh_engine, reply_adapter):
    fresh_engine.add_adapter("refuse", reply_adapter)
    with pytest.raises(Conflict, match="already loaded"):
        fresh_engine.add_adapter("refuse", reply_adapter)
    with pytest.raises(NotFound):
        fresh_engine.remove_adapter("nope")


@pytest.mark.parametrize("kind,error,message", [
    ("truncated", Unprocessable, "truncated or corrupt"),
    ("wrong-rank", Unprocessable, "expected .* for rank 4"),
    ("missing-module", Unprocessable, "layers.9.* which this base model lacks"),
    ("other-base", Unprocessable, "different base model"),
    ("not-an-adapter", BadRequest, "no adapter_config.json"),
])
def test_bad_adapter_is_refused_and_engine_unchanged(fresh_engine, reply_adapter, broken, kind,
                                                     error, message):
    fresh_engine.add_adapter("good", reply_adapter)
    before = fresh_engine.generate(HI, GREEDY, "good"), fresh_engine.generate(HI, GREEDY)
    with pytest.raises(error, match=message):
        fresh_engine.add_adapter("bad", broken(kind))
    assert fresh_engine.adapter_names == ["good"]
    assert (fresh_engine.generate(HI, GREEDY, "good"), fresh_engine.generate(HI, GREEDY)) == before


def test_in_flight_stream_finishes_on_its_adapter_before_unload(fresh_engine, reply_adapter):
    fresh_engine.add_adapter("refuse", reply_adapter)
    long = SamplingParams(max_tokens=300, min_tokens=300, temperature=0.0)
    expected = fresh_engine.generate(HI, long, "refuse").text
    stream = fresh_engine.stream(HI, long, "refuse")
    remover = threading.Thread(target=fresh_engine.remove_adapter, args=("refuse",))
    remover.start()
    assert "".join(d.text for d in stream) == expected
    remover.join(10)
    assert fresh_engine.adapter_names == []


def test_merged_engine_refuses_changes(tiny_model, reply_adapter):
    merged = VLMEngine.from_pretrained(tiny_model, adapters={"r": reply_adapter}, merge=True)
    with pytest.raises(Conflict, match="merged"):
        merged.add_adapter("x", reply_adapter)
