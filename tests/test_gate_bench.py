"""`python -m bench.gate` runs end to end on the tiny model (a real `bentoml serve`, two gate
runs, a chatting client) and prints its side-by-side row; the demo's numbers are in README."""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.benches import run_bench

pytestmark = pytest.mark.e2e


def test_the_gate_bench_prints_gate_seconds_and_latency_ratios(tiny_model, reply_adapter,
                                                                tmp_path):
    out = run_bench("gate", "--model", tiny_model, "--adapter", reply_adapter, "--repeats", 1,
                    "--seconds", 1, "--probes", "direct,over_refusal", "--per-probe", 1,
                    home=tmp_path)
    row = re.search(r"^\s+1\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+) ms\s+(\d+) ms\s+([\d.]+)",
                    out, re.M)
    assert row, out
    assert float(row[1]) > 0 and float(row[2]) > 0 and int(row[4]) > 0, out
    seconds = json.loads(out.strip().splitlines()[-1])["repeats"][0]
    assert seconds["gate_alone"] == pytest.approx(float(row[1]), abs=0.05)
