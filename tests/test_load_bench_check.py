"""The load bench's `--check`: which goals a faked run misses, and the exit status it gives."""

from __future__ import annotations

import sys

import pytest

from bench import load
from bench.load import check_goals, summarise, unchecked_goals

WORKLOADS = ("text", "image", "mixed adapters")


def _run(throughput: float, p50: float) -> dict:
    """One repeat's measurement, in the shape `_measure` returns."""
    return {"latencies": [p50], "throughput": throughput, "p50": p50, "shed": 0, "lost": 0,
            "errors": 0}


def _cells(clients=(1, 4, 16), worse: dict | None = None) -> dict:
    """Every cell with 2 repeats: batched 6× the throughput and the same p50 as one-at-a-time,
    except the (workload, clients) cells in `worse`, whose batched repeats are given there."""
    cells = {}
    for workload in WORKLOADS:
        for n in clients:
            batched = (worse or {}).get((workload, n), [_run(60, 0.1), _run(60, 0.1)])
            cells[workload, n] = {"batched": batched,
                                  "one-at-a-time": [_run(10, 0.1), _run(10, 0.1)]}
    return cells


def test_all_goals_held_misses_nothing():
    rows = summarise(_cells())
    assert check_goals(rows) == []
    assert unchecked_goals(rows) == []


def test_a_pooled_throughput_miss_fails_though_every_repeat_clears_the_worst_bound():
    missed = check_goals(summarise(_cells(worse={("image", 16): [_run(48, 0.1), _run(48, 0.1)]})))
    assert missed == ["missed: image 16 clients throughput pooled 4.80x < 5.00x"]


def test_a_worst_repeat_miss_fails_though_the_pooled_ratio_holds():
    rows = summarise(_cells(worse={("mixed adapters", 16): [_run(44.1, 0.1), _run(76, 0.1)]}))
    row = next(r for r in rows if (r["workload"], r["clients"]) == ("mixed adapters", 16))
    assert row["throughput"] >= load.POOLED_MIN_THROUGHPUT
    assert check_goals(rows) == [
        "missed: mixed adapters 16 clients throughput worst repeat 4.41x < 4.50x"]


def test_a_p50_miss_at_one_client_is_named_on_both_ratios():
    missed = check_goals(summarise(_cells(worse={("text", 1): [_run(10, 0.13), _run(10, 0.13)]})))
    assert missed == ["missed: text 1 clients p50 pooled 1.30x > 1.10x",
                      "missed: text 1 clients p50 worst repeat 1.30x > 1.25x"]


def test_a_nan_p50_misses_instead_of_passing():
    nan = float("nan")
    missed = check_goals(summarise(_cells(worse={("text", 1): [_run(10, nan), _run(10, nan)]})))
    assert missed == ["missed: text 1 clients p50 pooled nanx > 1.10x",
                      "missed: text 1 clients p50 worst repeat nanx > 1.25x"]


def test_nothing_measured_for_the_goals_is_flagged():
    rows = summarise(_cells(clients=(4,)))
    assert check_goals(rows) == [
        "missed: no load goal checked (no 16-client or 1-client cell measured)"]
    assert check_goals([]) == check_goals(rows)
    assert len(unchecked_goals(rows)) == 2 * len(WORKLOADS)
    assert "not checked: image 16 clients throughput (cell not measured)" in unchecked_goals(rows)


def test_a_partial_run_checks_what_it_measured_and_names_the_rest():
    rows = summarise(_cells(clients=(1,)))
    assert check_goals(rows) == []
    assert unchecked_goals(rows) == [
        f"not checked: {w} 16 clients throughput (cell not measured)" for w in WORKLOADS]


def _main(monkeypatch, cells: dict, *flags: str) -> None:
    monkeypatch.setattr(load, "measure_servers",
                        lambda args: (cells, dict.fromkeys(load.modes(args.engine), 0)))
    monkeypatch.setattr(sys, "argv", ["bench.load", "--adapter", "unused", *flags])
    load.main()


def test_check_exits_1_on_a_miss(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        _main(monkeypatch, _cells(worse={("image", 16): [_run(44, 0.1), _run(60, 0.1)]}), "--check")
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "missed: image 16 clients throughput worst repeat 4.40x < 4.50x" in out


def test_check_exits_1_when_no_goal_was_measured(monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        _main(monkeypatch, _cells(clients=(4,)), "--check")
    assert exit_.value.code == 1


def test_check_returns_when_all_goals_hold(monkeypatch, capsys):
    _main(monkeypatch, _cells(), "--check")
    assert capsys.readouterr().out.rstrip().endswith("all load goals met")


def test_check_passes_a_partial_run_but_says_what_it_left_unchecked(monkeypatch, capsys):
    _main(monkeypatch, _cells(clients=(1,)), "--check")
    out = capsys.readouterr().out
    assert "not checked: text 16 clients throughput (cell not measured)" in out
    assert out.rstrip().endswith("all checked load goals met (3 not checked)")


def test_without_check_a_miss_only_prints_the_table(monkeypatch, capsys):
    _main(monkeypatch, _cells(worse={("image", 16): [_run(44, 0.1), _run(44, 0.1)]}))
    out = capsys.readouterr().out
    assert "| image | 16 |" in out and "missed" not in out


def test_two_engines_compare_side_by_side_and_refuse_the_batching_check(monkeypatch, capsys):
    assert list(load.modes(["vllm", "torch"])) == ["vllm", "torch"]
    assert load.modes(["vllm"])["one-at-a-time"]["CROSSGUARD_ENGINE"] == "vllm"
    cells = {key: {"vllm": runs["batched"], "torch": runs["one-at-a-time"]}
             for key, runs in _cells().items()}
    _main(monkeypatch, cells, "--engine", "vllm", "torch")
    out = capsys.readouterr().out
    assert "| vllm req/s | torch req/s |" in out and "| text | 16 | 60.00 | 10.00 | 6.00x" in out
    with pytest.raises(SystemExit) as exit_:
        _main(monkeypatch, cells, "--engine", "vllm", "torch", "--check")
    assert exit_.value.code == 2
