"""`python -m bench.probe_suite` runs (on the tiny model, one behaviour per probe, base plus an
adapter) and prints a line per family and modality with the seconds of the probes behind it.

The tiny model's 512-token context is too short for the multi-turn `context` probes, so the test
names the probe modules that fit; their families are not their modules' names
(`adversarial.JailbreakInPieces` is `adversarial_image`), which is what the table once keyed
seconds by."""

from __future__ import annotations

import re

from tests.fixtures.benches import run_bench

MODULES = ("adversarial", "visual", "sampling", "text", "wrappers")


def test_the_probe_suite_bench_prints_every_family_with_its_seconds(tiny_model, reply_adapter,
                                                                     tmp_path):
    from service.probes.base import probe_classes

    out = run_bench("probe_suite", "--model", tiny_model, "--adapter", f"reply={reply_adapter}",
                    "--per-probe", 1, "--probes", ",".join(MODULES), home=tmp_path)
    assert re.search(r"cold: \d+ generations", out) and re.search(r"warm: \d+ generations", out)
    rows = re.findall(r"^  (\w+)\s+(text|image)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", out, re.M)
    chosen = {(c.family, c.modality) for n, c in probe_classes().items()
              if n.partition(".")[0] in MODULES and c.kind == "attack"}
    assert len(rows) == 2 * len(chosen), out  # cold and warm
    assert {(family, modality) for family, modality, *_ in rows} == chosen, out
    assert all(float(seconds) > 0 for *_, seconds, _ in rows), out
    assert "adversarial_image" in {family for family, *_ in rows}
