"""`bench.adapter_scope` runs (on the tiny model, two rounds) and prints each workload's ratio."""

from __future__ import annotations

import re


def test_the_scope_bench_compares_plain_and_scoped_twins(tiny_model, reply_adapter, capsys):
    from bench.adapter_scope import main

    main(["--model", str(tiny_model), "--adapter", str(reply_adapter), "--tokens", "4",
          "--rounds", "2", "--batch", "4"])
    out = capsys.readouterr().out
    ratios = re.findall(r"scoped / plain = ([\d.]+)", out)
    assert len(ratios) == 3 and all(float(r) > 0 for r in ratios), out
    assert "batch of 4, half base" in out
