"""Prometheus config and alert rules, checked and unit-tested by promtool."""

from __future__ import annotations

import re

from tests.deploy.promtool import DEPLOY, ROOT, promtool
from tests.deploy.test_metrics import exported_names


def test_prometheus_config_and_the_rules_it_loads_are_valid():
    out = promtool("check", "config", DEPLOY / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout


def test_alert_rules_are_valid():
    out = promtool("check", "rules", DEPLOY / "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_pass_their_unit_tests():
    out = promtool("test", "rules", ROOT / "tests" / "deploy" / "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_required_alert_exists_and_is_unit_tested():
    rules = (DEPLOY / "alerts.yml").read_text()
    tests = (ROOT / "tests" / "deploy" / "alerts_test.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert set(alerts) >= {
        "CrossguardProbeASRHigh", "CrossguardRefusalRateDrop", "CrossguardProbeRunsStale",
        "CrossguardDown",
    }
    untested = [a for a in alerts if f"alertname: {a}\n" not in tests]
    assert untested == []


def test_rules_only_use_exported_metrics():
    rules = (DEPLOY / "alerts.yml").read_text()
    used = set(re.findall(r"\bcrossguard_[a-z_]+\b", rules))
    assert used and used <= exported_names()
