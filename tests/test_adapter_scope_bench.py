"""`python -m bench.adapter_scope` runs (on the tiny model, two rounds) and prints each
workload's ratio."""

from __future__ import annotations

import re

from tests.fixtures.benches import run_bench


def test_the_scope_bench_compares_plain_and_scoped_twins(tiny_model, reply_adapter, tmp_path):
    out = run_bench("adapter_scope", "--model", tiny_model, "--adapter", reply_adapter,
                    "--tokens", 4, "--rounds", 2, "--batch", 4, home=tmp_path)
    ratios = re.findall(r"scoped / plain = ([\d.]+)", out)
    assert len(ratios) == 3 and all(float(r) > 0 for r in ratios), out
    assert "batch of 4, half base" in out
