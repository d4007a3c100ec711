"""Every bench runs in CI: its real command line (`python -m bench.NAME`) on the tiny model, for
seconds, exits 0 and prints its table. Nothing here holds a goal (the numbers of a tiny model
on a busy test machine mean nothing); it keeps a refactor from breaking a bench silently.

Benches with a test of their own are run there (`run_bench` in tests/test_*_bench.py); the
three below start real `bentoml serve`s (e2e)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.benches import ROOT, run_bench

NOT_RUN_BY_RUN_BENCH = {
    "server": "a helper of the benches (starts `bentoml serve`), not a bench",
    "unlearning_cost": "tests/unlearning/test_cli.py runs its main() on the tiny model (two "
                       "`unlearning train` processes of 2 steps each, then its table)",
}
"""Modules of bench/ that no `run_bench` call names, with why."""


def test_every_bench_has_a_run_in_ci():
    benches = {p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__"}
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    run = set(re.findall(r'run_bench\(\s*"(\w+)"', tests))
    assert benches - run == set(NOT_RUN_BY_RUN_BENCH), "a bench without a CI run"
    assert "bench.unlearning_cost" in (ROOT / "tests/unlearning/test_cli.py").read_text()


@pytest.mark.e2e
def test_serve_overhead_runs(tiny_model, tmp_path):
    out = run_bench("serve_overhead", "--model", tiny_model, "--tokens", 4, "--rounds", 2,
                    home=tmp_path)
    assert len(re.findall(r"p50 +[\d.]+ ms +\(4 new tokens\)", out)) == 3, out
    assert re.search(r"ratio HTTP / engine.generate = [\d.]+", out), out


@pytest.mark.e2e
def test_load_runs_batched_beside_one_at_a_time(tiny_model, reply_adapter, tmp_path):
    out = run_bench("load", "--model", tiny_model, "--adapter", reply_adapter, "--clients", 2,
                    "--seconds", 1, "--repeats", 1, "--max-tokens", 4, "--image-side", 32,
                    home=tmp_path)
    rows = re.findall(r"^\| (text|image|mixed adapters) \| 2 \| [\d.]+ \| [\d.]+ \|", out, re.M)
    assert rows == ["text", "image", "mixed adapters"], out
    assert "peak RSS" in out, out


@pytest.mark.e2e
def test_soak_runs_for_seconds(tiny_model, reply_adapter, tmp_path: Path):
    out = run_bench("soak", "--model", tiny_model, "--adapter", reply_adapter, "--clients", 2,
                    "--minutes", 2, "--minute-s", 1, "--warmup-s", 1, "--rss-every-s", 0.5,
                    "--max-tokens", 4, "--image-side", 32, "--no-check", home=tmp_path)
    assert re.search(r"requests \d+ \(\d+ in warm-up\), lost \d+", out), out
    assert re.search(r"^goals: no lost requests (PASS|FAIL)", out, re.M), out
