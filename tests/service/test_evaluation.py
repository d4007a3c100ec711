"""The evaluation summary type: saved files keep their bytes through a round trip, rows and
utility cells are found by their fields, summaries from before a field existed still read,
and a file that is not a summary is refused naming what it lacks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from service.evaluation import EvalSummary, UtilityKey, by_split

ROOT = Path(__file__).resolve().parents[2]
SAVED = ROOT / "tests" / "fixtures" / "eval_summary.json"
"""`demo-report/seed-0/test/eval.json` of `make demo-report` (2026-12-06), byte for byte."""


def saved_files() -> list[Path]:
    """The fixture, and every evaluation of a local `make demo-report` folder."""
    return [SAVED, *sorted((ROOT / "demo-report").glob("seed-*/*/eval.json"))]


@pytest.mark.parametrize("path", saved_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_saved_summary_round_trips_byte_for_byte(path):
    text = path.read_text()
    summary = EvalSummary.from_json(text, str(path))
    assert summary.to_json() == text
    assert EvalSummary.from_json(summary.to_json()) == summary


def test_a_crossguard_json_entry_keeps_its_report_field_last():
    """`unlearning eval` appends the summary plus where its report went."""
    entry = {**json.loads(SAVED.read_text()), "report": "adapters/safety/eval/test"}
    summary = EvalSummary.from_dict(entry)
    assert summary.extra == {"report": "adapters/safety/eval/test"}
    assert list(summary.to_dict().items()) == list(entry.items())


def test_lookup_finds_rows_and_utility_cells_by_their_fields():
    summary = EvalSummary.from_json(SAVED.read_text())
    mine = summary.label
    assert mine == summary.adapter_name == "safety-646653f70465"
    row = summary.lookup("asr_by_family", "base", family="context", modality="text")
    assert (row["attempts"], row["asr"]["payload"]) == (30, 0.3)
    assert summary.rate("asr_by_family", "payload", "base", family="context",
                        modality="text") == 0.3
    assert summary.lookup("asr_by_family", mine, family="context", modality="sound") is None
    assert summary.lookup("utility", "base", modality="text") is summary.utility["base/text"]
    assert summary.accuracy(mine, "image", task="capital") == \
        summary.utility[f"{mine}/image/capital"]["accuracy"]
    assert summary.not_answered("base", "image") == 0.0
    assert summary.share("refused", mine, "text") == summary.lookup(
        "asr_by_modality", mine, modality="text")["outcomes"]["refused"]
    assert [r["adapter"] for r in summary.rows("false_refusal", modality="image")] == \
        ["base", mine]
    with pytest.raises(KeyError, match="no section 'asr'"):
        summary.lookup("asr", "base", modality="text")


def test_utility_keys_parse_as_they_are_written():
    for key in ("base/text", "safety-1/image/capital", "base/text/"):
        assert str(UtilityKey.parse(key)) == key
    assert UtilityKey.parse("base/image/capital") == UtilityKey("base", "image", "capital")
    with pytest.raises(ValueError, match="not adapter/modality"):
        UtilityKey.parse("base")


def old_summary() -> dict:
    """The shape of the first `unlearning eval` (2026-11-28): no halves, look-alikes,
    best-of-N or outcomes."""
    data = json.loads(SAVED.read_text())
    for name in ("split", "false_refusal", "best_of_n"):
        data.pop(name)
    for row in [*data["asr_by_family"], *data["asr_by_modality"]]:
        for name in ("outcomes", "other_unreadable"):
            row.pop(name)
    return data


def test_a_summary_from_before_halves_and_outcomes_reads_as_the_test_half():
    summary = EvalSummary.from_dict(old_summary())
    assert summary.split == "test" and summary.false_refusal == ()
    assert not summary.has_outcomes() and summary.share("other", "base", "text") is None
    assert list(by_split([summary])) == ["test"]
    assert summary.not_answered("base", "text") is None


@pytest.mark.parametrize(("data", "message"), [
    ({"model": "m", "judges": ["keyword"]},
     "eval.json: not an evaluation summary, missing asr_by_family, asr_by_modality"),
    ({**old_summary(), "judges": None}, "eval.json: not an evaluation summary, missing judges"),
    ([1, 2], "eval.json: not an evaluation summary (a JSON object), got list"),
    ({**old_summary(), "false_refusal": [{"adapter": "base", "modality": "text"}]},
     "eval.json: false_refusal row 1 lacks attempts, asr"),
])
def test_what_is_not_a_summary_is_refused_naming_what_it_lacks(data, message):
    with pytest.raises(ValueError) as error:
        EvalSummary.from_json(json.dumps(data), "eval.json")
    assert str(error.value).startswith(message)


def test_text_that_is_not_json_is_refused_naming_its_source():
    with pytest.raises(ValueError, match=r"^seed-0/eval.json: not JSON"):
        EvalSummary.from_json("{", "seed-0/eval.json")


def test_summaries_group_by_half_test_first():
    summary = EvalSummary.from_json(SAVED.read_text())
    validation = replace(summary, split="validation")
    assert by_split([validation, summary, validation]) == {
        "test": [summary], "validation": [validation, validation]}
