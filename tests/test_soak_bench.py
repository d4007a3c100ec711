"""The soak bench's pure helpers: what counts as lost, the windows, the goals."""

from __future__ import annotations

import json
import math

from bench.soak import Outcome, is_complete, soak_bodies, summarise, window
from service.schemas import AssistantMessage, ChatCompletionResponse, Choice, Usage


def _reply(tokens: int) -> bytes:
    choice = Choice(message=AssistantMessage(content="x"), finish_reason="length")
    return ChatCompletionResponse(
        model="base", choices=[choice],
        usage=Usage(prompt_tokens=5, completion_tokens=tokens, total_tokens=5 + tokens),
    ).model_dump_json().encode()


def test_a_reply_is_complete_only_at_full_length_and_valid():
    assert is_complete(_reply(32), 32)
    assert not is_complete(_reply(31), 32)
    assert not is_complete(_reply(32)[:-5], 32)
    assert not is_complete(b'{"error": {"message": "busy"}}', 32)


def test_lost_means_not_a_complete_200():
    assert not Outcome(1, 0.1, 200, True).lost
    failures = [Outcome(1, 0.1, status, False) for status in (200, 503, "ReadTimeout")]
    assert all(o.lost for o in failures)
    assert [o.label for o in failures] == ["200 incomplete", "503", "ReadTimeout"]


def test_a_client_alternates_modality_and_the_cycle_covers_both_adapters():
    bodies = [json.loads(b) for b in soak_bodies(max_tokens=8, image_side=16)]
    images = [isinstance(b["messages"][0]["content"], list) for b in bodies]
    assert images == [False, True, False, True]
    assert sorted((i, b["model"]) for i, b in zip(images, bodies, strict=True)) == [
        (False, "base"), (False, "safety"), (True, "base"), (True, "safety")]
    assert {b["max_tokens"] for b in bodies} == {b["min_tokens"] for b in bodies} == {8}


def test_window_counts_by_finish_time_and_times_only_complete_requests():
    outcomes = [Outcome(0.5, 9.0, 200, True), Outcome(1.5, 0.2, 200, True),
                Outcome(1.6, 0.4, 200, True), Outcome(1.7, 5.0, 503, False)]
    w = window(outcomes, 1, 2)
    assert (w["requests"], w["lost"]) == (3, 1)
    assert math.isclose(w["p50_ms"], 300)


def _steady(p50_last: float, rss_end: int, lost: bool = False) -> dict:
    outcomes = [Outcome(t + 0.5, 0.1 if t < 100 else p50_last, 200, True) for t in range(180)]
    outcomes.append(Outcome(179.9, 1.0, "ReadTimeout" if lost else 200, not lost))
    samples = [(0, 50), (30, 100), (100, 105), (180, rss_end)]
    return summarise(outcomes, samples, warmup_s=30, total_s=180)


def test_summary_passes_a_steady_run_and_names_each_failed_goal():
    steady = _steady(0.11, 109)
    assert steady["passed"] and steady["lost"] == 0
    assert math.isclose(steady["rss_mib"]["growth_pct"], 9, abs_tol=1e-9)
    assert math.isclose(steady["p50_drift_pct"], 10, abs_tol=1e-6)
    assert steady["first_minute"]["requests"] == 60
    failed = {name: [g for g, ok in _steady(*a)["goals"].items() if not ok]
              for name, a in {"slower": (0.13, 100), "faster": (0.07, 100), "leak": (0.1, 111),
                              "lost": (0.1, 100, True)}.items()}
    assert failed == {"slower": ["|p50 drift| <= 20%"], "faster": ["|p50 drift| <= 20%"],
                      "leak": ["RSS growth <= 10%"], "lost": ["no lost requests"]}
