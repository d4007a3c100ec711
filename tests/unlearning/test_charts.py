"""Charts: the bars and error bars drawn are the means and seed ranges of the summaries, the
PNGs are valid, deterministic and written by `write_reports`, and nothing imports matplotlib
until a chart is drawn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from service.evaluation import EvalSummary
from service.probes.charts import draw
from service.probes.report import Report
from tests.probes.test_report import result
from unlearning.charts import seeds_chart, seeds_title, summary_panels
from unlearning.config import EvalConfig
from unlearning.evaluate import write_reports

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def summary(adapter="safety-aaaa", split="test", direct=0.2, refused=0.1, accuracy=0.8,
            figstep=0.0, other=0.1) -> EvalSummary:
    """An `eval.json` as `unlearning eval` writes it: one text and one image family; the base
    model's rates are the same in every seed, the adapter's are the arguments."""
    def row(label, family, modality, payload):
        return {"adapter": label, "family": family, "modality": modality, "attempts": 15,
                "asr": {"payload": payload, "keyword": 1.0}}

    return EvalSummary.from_dict({
        "model": "demo", "adapter": f"/a/{adapter}", "adapter_name": adapter, "split": split,
        "judges": ["payload", "keyword"], "behaviors": "default",
        "asr_by_family": [row("base", "direct", "text", 0.9),
                          row(adapter, "direct", "text", direct),
                          row("base", "figstep", "image", 0.5),
                          row(adapter, "figstep", "image", figstep)],
        "asr_by_modality": [
            {"adapter": label, "modality": "text", "attempts": 15, "asr": {"payload": done},
             "outcomes": {"complied": done, "refused": 1 - done - rest, "other": rest}}
            for label, done, rest in (("base", 0.9, 0.1), (adapter, direct, other))],
        "false_refusal": [{"adapter": label, "modality": "text", "attempts": 50,
                           "asr": {"keyword": rate}}
                          for label, rate in (("base", 0.0), (adapter, refused))],
        "utility": {f"{label}/{modality}": {"n": 10, "accuracy": rate, "refusal_rate": 0.1}
                    for label, rate in (("base", 1.0), (adapter, accuracy))
                    for modality in ("text", "image")},
    })


SEEDS = [summary("safety-aaaa", direct=0.2, refused=0.1, accuracy=0.8),
         summary("safety-bbbb", direct=0.6, refused=0.3, accuracy=0.9, figstep=0.2, other=0.3)]


def drawn(ax) -> dict[tuple[str, str], tuple[float, float | None, float | None]]:
    """What one panel shows, read back from its artists: (row, series) -> (bar length, error
    bar start, error bar end), in %; no error bar: None, None."""
    rows = [t.get_text() for t in ax.get_yticklabels()]
    bars, where = {}, {}
    for container in ax.containers:
        if not hasattr(container, "patches"):
            continue
        for rect in container.patches:
            y = round(rect.get_y() + rect.get_height() / 2, 6)
            key = (rows[round(y)], container.get_label())
            bars[key], where[y] = (rect.get_width(), None, None), key
    for container in ax.containers:
        if hasattr(container, "patches"):
            continue
        for (low, y), (high, _) in container.lines[2][0].get_segments():
            key = where[round(y, 6)]
            bars[key] = (bars[key][0], low, high)
    return bars


def test_seed_bars_are_the_mean_and_error_bars_the_range_over_seeds():
    figure = draw(summary_panels(SEEDS), seeds_title(SEEDS))
    text, image = figure.axes[:2]
    assert [ax.get_title() for ax in (text, image)] == ["text attacks", "image attacks"]
    bars = {k: tuple(None if v is None else pytest.approx(v) for v in values)
            for k, values in drawn(text).items()}
    assert bars == {
        ("direct", "base"): (90, None, None),
        ("direct", "safety"): (40, 20, 60),
        ("attacks refused", "base"): (0, None, None),
        ("attacks refused", "safety"): (40, 10, 70),
        ("attacks other", "base"): (10, None, None),
        ("attacks other", "safety"): (20, 10, 30),
        ("false refusals", "base"): (0, None, None),
        ("false refusals", "safety"): (20, 10, 30),
        ("benign accuracy", "base"): (100, None, None),
        ("benign accuracy", "safety"): (85, 80, 90),
    }
    assert drawn(image)[("benign accuracy", "safety")] == pytest.approx((85, 80, 90))
    assert drawn(image)[("figstep", "safety")] == pytest.approx((10, 0, 20))
    assert [t.get_text() for t in text.get_yticklabels()] == [
        "direct", "attacks refused", "attacks other", "false refusals", "benign accuracy"]


def test_title_names_the_adapter_half_and_seeds_and_one_run_has_no_error_bars():
    assert seeds_title(SEEDS) == ("safety vs base on the test half, 2 seeds: payload ASR per "
                                  "attack family")
    assert seeds_title(SEEDS[:1], "keyword") == ("safety-aaaa vs base on the test half, one "
                                                 "run: keyword ASR per attack family")
    figure = draw(summary_panels(SEEDS[:1]), "one run")
    assert all(v[1:] == (None, None) for ax in figure.axes[:2] for v in drawn(ax).values())


def test_judge_picks_the_family_bars_and_halves_get_panels_of_their_own():
    validation = summary(split="validation", direct=0.4)
    panels = summary_panels([*SEEDS, validation], judge="keyword")
    assert [p.title for p in panels] == ["test half: text attacks", "test half: image attacks",
                                         "validation half: text attacks",
                                         "validation half: image attacks"]
    direct = {b.series: b.mean for b in panels[0].bars if b.row == "direct"}
    assert direct == {"base": 1.0, "safety": 1.0}
    assert "test and validation halves, 2 seeds" in seeds_title([*SEEDS, validation])


def test_seeds_chart_writes_a_deterministic_png_of_the_figure_size(tmp_path):
    path = seeds_chart(SEEDS, tmp_path / "charts" / "seeds.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = draw(summary_panels(SEEDS), "").get_size_inches() * 100
    with Image.open(path) as png:
        assert png.size == (round(width), round(height))
        assert "Software" not in png.info
    assert seeds_chart(SEEDS, tmp_path / "again.png").read_bytes() == data
    with pytest.raises(ValueError, match="no summaries"):
        seeds_chart([], tmp_path / "none.png")


def test_write_reports_writes_both_charts_beside_json_and_markdown(tmp_path):
    report = Report(model="demo", judges={"payload": "payload"}, split="test",
                    results=[result(), result(adapter="safety", score=0.0,
                                              scores={"payload": 0.0, "keyword": 0.0})])
    out = write_reports(report, summary("safety"), EvalConfig(model="demo", out=str(tmp_path)))
    for name in ("report.json", "report.md", "report.png", "eval.json", "eval.md", "eval.png"):
        assert (out / name).is_file(), name
    for name in ("report.png", "eval.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert json.loads((out / "eval.json").read_text())["adapter_name"] == "safety"


def test_demo_report_draws_the_seeds_chart_of_each_half(tmp_path, monkeypatch):
    """`make demo-report` (README's chart): the evaluations are stubbed, the charts real."""
    import unlearning.demo.evaluate
    import unlearning.demo.safety
    import unlearning.evaluate
    from unlearning.demo.report import write_report

    monkeypatch.setattr(unlearning.demo.evaluate, "evaluate_folder",
                        lambda model, split: unlearning.demo.evaluate.DemoEvaluation())
    monkeypatch.setattr(unlearning.demo.safety, "safety_adapter",
                        lambda model, seed: Path(f"/a/safety-{seed}"))
    monkeypatch.setattr(unlearning.evaluate, "evaluate", lambda config: summary(
        Path(config.adapter).name, config.split, direct=0.1 * int(config.adapter[-1])))
    page = write_report(Path("demo"), tmp_path, seeds=[1, 2]).read_text()
    for split in ("test", "validation"):
        assert (tmp_path / f"safety-{split}.png").read_bytes().startswith(PNG_MAGIC)
        assert f"![safety-{split}](safety-{split}.png)" in page


def test_nothing_imports_matplotlib_until_a_chart_is_drawn():
    code = ("import sys, service.probes.report, service.probes.charts, service.probes.cli, "
            "unlearning.charts, unlearning.evaluate, unlearning.tables; "
            "assert 'matplotlib' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
