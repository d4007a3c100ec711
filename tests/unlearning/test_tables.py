"""Evaluation tables list families alphabetically, whatever order the probes ran in (probe
names follow their modules, not their families), so tables of different runs line up."""

from unlearning.tables import judged, rate_table


def test_family_rows_are_sorted_by_family_keeping_the_run_order_within_one():
    rows = [("system_prompt", "image"), ("direct", "text"), ("system_prompt", "text"),
            ("best_of_n", "image"), ("best_of_n", "text")]
    summary = {"split": "test", "adapter_name": None, "asr_by_family": [
        {"adapter": "base", "family": f, "modality": m, "asr": {"payload": 0.5}} for f, m in rows]}
    lines = rate_table({"test": [summary]}, "asr_by_family", ("family", "modality"),
                       judged("payload"))
    assert [tuple(line.split(" | ")[:2]) for line in lines[2:]] == [
        ("| best_of_n", "image"), ("| best_of_n", "text"), ("| direct", "text"),
        ("| system_prompt", "image"), ("| system_prompt", "text")]
    assert all(line.endswith("| 50.0 % |") for line in lines[2:])
