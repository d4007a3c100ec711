"""Evaluation tables list families alphabetically, whatever order the probes ran in (probe
names follow their modules, not their families), so tables of different runs line up."""

from service.evaluation import EvalSummary, judged
from unlearning.tables import rate_table, seeds_markdown


def test_family_rows_are_sorted_by_family_keeping_the_run_order_within_one():
    rows = [("system_prompt", "image"), ("direct", "text"), ("system_prompt", "text"),
            ("best_of_n", "image"), ("best_of_n", "text")]
    summary = EvalSummary(model="demo", judges=("payload",), asr_by_modality=(),
                          asr_by_family=tuple({"adapter": "base", "family": f, "modality": m,
                                               "attempts": 2, "asr": {"payload": 0.5}}
                                              for f, m in rows))
    lines = rate_table({"test": [summary]}, "asr_by_family", ("family", "modality"),
                       judged("payload"))
    assert [tuple(line.split(" | ")[:2]) for line in lines[2:]] == [
        ("| best_of_n", "image"), ("| best_of_n", "text"), ("| direct", "text"),
        ("| system_prompt", "image"), ("| system_prompt", "text")]
    assert all(line.endswith("| 50.0 % |") for line in lines[2:])


def test_a_summary_from_before_halves_and_outcomes_still_renders():
    from tests.service.test_evaluation import old_summary

    page = seeds_markdown([EvalSummary.from_dict(old_summary())])
    assert "halves test." in page
    assert "## Attack success by family and modality (`payload` judge)" in page
    assert "False refusals" not in page and "by outcome" not in page
