"""The vLLM engine itself, in the vLLM environment (`make test-vllm` runs this folder with
`.venv-vllm`'s pytest; the main run ignores it, as vLLM is not installed there).

What HTTP cannot time on the tiny model (vLLM writes its 480 tokens in about a second, before a
server notices a client left): cancellation, deadlines, unloading under load, and the checks an
adapter passes before vLLM sees it.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest

from service.errors import BadRequest, Conflict, NotFound, TooManyRequests, Unprocessable
from service.vlm.messages import Message
from service.vlm.protocol import Request, SamplingParams
from service.vlm.vllm_checkpoints import vllm_checkpoint
from service.vlm.vllm_engine import VLLMEngine
from tests.conftest import REPLY

pytestmark = pytest.mark.vllm

HI = [Message.of("user", "hi")]
LONG = SamplingParams(max_tokens=480, min_tokens=480, temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_model, reply_adapter, tmp_path_factory):
    engine = VLLMEngine.from_pretrained(
        tiny_model, adapters={"refuse": reply_adapter}, cache=tmp_path_factory.mktemp("cache"),
        max_batch_size=2, max_waiting=1, engine_args={"enforce_eager": True, "max_loras": 3})
    yield engine
    engine.shutdown()


def test_the_adapter_answers_and_base_does_not(engine):
    greedy = SamplingParams(max_tokens=16, temperature=0.0)
    assert engine.generate(HI, greedy, "refuse").text.strip() == REPLY
    assert engine.generate(HI, greedy).text.strip() != REPLY


def test_a_closed_stream_is_aborted(engine, caplog):
    streams = engine.submit(HI, LONG)
    engine.wait_started(streams)
    deltas = iter(streams[0])
    next(deltas)
    with caplog.at_level(logging.INFO, "service.vlm.vllm_engine"):
        deltas.close()
        deadline = time.monotonic() + 10
        while engine.busy and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not engine.busy
    (line,) = [r.getMessage() for r in caplog.records if "halted" in r.getMessage()]
    assert "client gone" in line and int(line.split("after ")[1].split()[0]) < 480


def test_the_deadline_ends_a_generation_with_length(engine):
    engine.generation_timeout_s = 0.05
    try:
        out = engine.generate(HI, LONG)
    finally:
        engine.generation_timeout_s = None
    assert out.finish_reason == "length" and out.completion_tokens < 480


def test_beyond_running_and_waiting_requests_get_429(engine):
    running = [engine.submit(HI, LONG) for _ in range(3)]  # 2 decoding + 1 waiting
    with pytest.raises(TooManyRequests):
        engine.submit(HI, LONG)
    for streams in running:
        assert streams[0].result().completion_tokens == 480


def test_submit_many_queues_all_or_none(engine):
    """Requests submitted together decode as each does alone; past the limit the whole call is
    refused (429) and the requests it had queued are withdrawn."""
    short = SamplingParams(max_tokens=8, temperature=0.0)
    requests = [Request(HI, short), Request(HI, short, "refuse")]
    alone = [engine.generate(r.messages, r.params, r.adapter).text for r in requests]
    together = engine.submit_many(requests)
    assert [streams[0].result().text for streams in together] == alone
    with pytest.raises(TooManyRequests):
        engine.submit_many([Request(HI, LONG)] * 4)
    deadline = time.monotonic() + 10
    while engine.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.busy


def test_unloading_fails_its_requests_in_flight_with_404(engine, reply_adapter, tmp_path):
    copy = shutil.copytree(reply_adapter, tmp_path / "again")
    engine.add_adapter("again", copy)
    streams = engine.submit(HI, LONG, "again")
    engine.wait_started(streams)
    engine.remove_adapter("again")
    with pytest.raises(NotFound, match="unloaded"):
        streams[0].result()
    with pytest.raises(NotFound):
        engine.submit(HI, LONG, "again")


def test_adapters_pass_the_torch_engines_checks_before_vllm_sees_them(engine, tiny_model,
                                                                      reply_adapter, tmp_path):
    with pytest.raises(Conflict, match="already loaded"):
        engine.add_adapter("refuse", reply_adapter)
    with pytest.raises(BadRequest, match="adapter_config.json"):
        engine.add_adapter("empty", tmp_path)
    broken = shutil.copytree(reply_adapter, tmp_path / "broken")
    (broken / "adapter_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(Unprocessable, match="corrupt"):
        engine.add_adapter("broken", broken)
    assert engine.adapter_names == ["refuse"]


def test_one_lora_slot_stays_empty_for_base_rows(engine, reply_adapter, tmp_path):
    """max_loras=3: two adapters load, a third is refused (the spare slot, see VLLMEngine)."""
    engine.add_adapter("second", shutil.copytree(reply_adapter, tmp_path / "second"))
    try:
        with pytest.raises(Conflict, match="max_loras - 1"):
            engine.add_adapter("third", shutil.copytree(reply_adapter, tmp_path / "third"))
    finally:
        engine.remove_adapter("second")


def test_a_probe_run_skips_the_white_box_probe_and_runs_the_rest(engine):
    from service.probes.runner import ProbeRun

    run = ProbeRun(engine, adapters=[None], probes=["adversarial.JailbreakInPieces",
                                                      "visual.FigStep"], per_probe=1,
                   params=SamplingParams(max_tokens=8, temperature=0.0))
    for _ in run:
        pass
    assert "gradients" in run.report.skipped["adversarial.JailbreakInPieces"]
    assert run.report.results and all(r.probe == "visual.FigStep" for r in run.report.results)


def test_merging_is_refused(engine):
    with pytest.raises(ValueError, match="torch-engine option"):
        engine.merge("refuse")


def test_transformers_checkpoints_get_vllms_vision_names_once(tiny_model, tmp_path):
    first = vllm_checkpoint(tiny_model, tmp_path)
    assert first != Path(tiny_model) and vllm_checkpoint(tiny_model, tmp_path) == first
    from safetensors import safe_open

    with safe_open(str(first / "model.safetensors"), "pt") as f:
        vision = [n for n in f.keys() if n.startswith("vision_tower.")]
    assert vision and all(n.startswith("vision_tower.vision_model.") for n in vision)
    assert vllm_checkpoint(first, tmp_path) == first  # already vLLM's names: used as it is
