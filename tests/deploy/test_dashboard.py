"""The Grafana dashboard: valid JSON, valid PromQL (checked by promtool), only exported metric
names, and the panels the ops team asked for."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.promtool import DEPLOY, promtool
from tests.deploy.test_metrics import exported_names

DASHBOARD = DEPLOY / "grafana-dashboard.json"
BENTOML = {"bentoml_service_request_duration_seconds_bucket"}
VARIABLES = {"$__rate_interval": "5m", "$adapter": ".*", "$endpoint": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] if p["type"] != "row"
            for t in p["targets"]]


def panel(title: str) -> dict:
    return next(p for p in dashboard()["panels"] if p["title"] == title)


def test_every_panel_queries_prometheus_through_the_datasource_variable():
    data = dashboard()
    assert data["uid"] == "crossguard"
    assert [v["name"] for v in data["templating"]["list"]] == ["datasource", "adapter", "endpoint"]
    panel_ids = [p["id"] for p in data["panels"]]
    assert len(set(panel_ids)) == len(panel_ids)
    for p in data["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]


def test_every_query_is_valid_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, (_, expr) in enumerate(targets()):
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules["groups"][0]["rules"].append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))
    out = promtool("check", "rules", path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_queries_only_use_exported_metrics():
    used = {m for _, expr in targets() for m in re.findall(r"\b(?:crossguard|bentoml)_\w+", expr)}
    assert used <= exported_names() | BENTOML, used - exported_names() - BENTOML


@pytest.mark.parametrize(
    "title, needles",
    [
        ("Refusal rate by adapter × modality",
         ["crossguard_chat_responses_total", 'outcome="refused"', "by (adapter, modality)"]),
        ("Probe ASR by family (last run)",
         ["crossguard_probe_attack_success_ratio", "family"]),
        ("False refusals by adapter × modality (last run)",
         ["crossguard_probe_false_refusal_ratio", "by (adapter, modality)"]),
        ("Request latency percentiles (BentoML)",
         ["histogram_quantile(0.5,", "histogram_quantile(0.9,", "histogram_quantile(0.99,",
          "bentoml_service_request_duration_seconds_bucket"]),
        ("Generated tokens per second", ["rate(crossguard_generated_tokens_total"]),
        ("Default adapter and canary share",
         ["crossguard_default_adapter_info", "crossguard_canary_share_ratio"]),
        ("Promotions by result", ["crossguard_adapter_promotions_total", "by (result)"]),
        ("Last gate verdict by rule", ["crossguard_gate_value", "crossguard_gate_passed"]),
    ],
)
def test_required_panels(title, needles):
    exprs = " ".join(t["expr"] for t in panel(title)["targets"])
    for needle in needles:
        assert needle in exprs


def test_panels_fit_the_grid_without_overlapping():
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0, p["title"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
