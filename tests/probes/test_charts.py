"""The probe report's chart: the bars drawn are the report's rates per family, modality and
adapter, and the PNG is valid even for an empty report."""

from __future__ import annotations

from PIL import Image

from service.probes.charts import report_chart, report_panels
from service.probes.report import Report
from tests.probes.test_report import with_false_refusals

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_probe_report_chart_shows_asr_per_family_and_adapter(tmp_path):
    report = with_false_refusals()
    text, image = report_panels(report)
    assert text.title == "text attacks" and image.title == "image attacks"
    assert {(b.row, b.series): b.mean for b in image.bars} == {
        ("figstep", "base"): 0.5, ("false refusals", "safe"): 1.0}
    assert {(b.row, b.series): b.mean for b in report_panels(report, "keyword")[1].bars}[
        ("figstep", "base")] == 1.0
    path = report_chart(report, tmp_path / "report.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    with Image.open(path) as png:
        assert png.size[0] == 1100
    empty = report_chart(Report(model="m", judges={}), tmp_path / "empty.png")
    assert empty.read_bytes().startswith(PNG_MAGIC)
