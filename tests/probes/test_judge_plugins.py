"""Judge discovery: a judge in a new module of `service.probes` is found by the package scan
that finds probes (`service.probes.plugins`), with no import of it anywhere to add."""

from __future__ import annotations

import ast
import importlib
import textwrap
from pathlib import Path

import pytest

from service.probes import judges
from service.probes.judges import Panel, build_judge, judge_classes, register_judge
from service.probes.plugins import import_all
from tests.probes.conftest import planted_module

MODULE = "crossguard_test_plugin_judge"
NAME = "test_plugin_judge"

SOURCE = textwrap.dedent('''
    from typing import ClassVar

    from service.probes.judges import Judge, register_judge


    @register_judge
    class PluginJudge(Judge):
        """Compliance when the reply says "plugin"."""

        name: ClassVar[str] = "test_plugin_judge"
        kind: ClassVar[str] = "compliance"

        def score(self, response, behavior=None):
            return None if not response.strip() else float("plugin" in response)
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on the package's path holding a new judge module (`planted_module`)."""
    yield from planted_module(tmp_path, monkeypatch, MODULE, SOURCE, judges._JUDGES, NAME)


def test_a_judge_in_a_new_module_is_discovered(plugin_dir):
    assert NAME not in judges._JUDGES, "nothing imported the module yet"
    classes = judge_classes()
    assert classes[NAME].__module__ == f"service.probes.{MODULE}"
    judge = build_judge(NAME)
    assert judge.score("a plugin reply") == 1.0 and judge.score("no") == 0.0
    assert Panel.of(["keyword", NAME]).names == [NAME, "keyword"], "compliance judges first"
    assert f"service.probes.{MODULE}" in import_all()


def test_the_model_backed_judges_are_found_by_the_scan_not_by_a_hand_kept_import():
    """`judges.py` names no module of judges: the classifier judges register through the same
    scan, so `judges` and `classifiers` do not import each other."""
    tree = ast.parse(Path(importlib.util.find_spec("service.probes.judges").origin).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "service.probes.classifiers" not in imported
    assert "service.probes.plugins" in imported
    assert {cls.__module__ for cls in judge_classes().values()} <= set(import_all())
    assert {"classifier", "guard"} <= set(judge_classes())


def test_a_second_judge_under_a_taken_name_is_refused():
    class Impostor(judges.KeywordRefusalJudge):
        name = "keyword"

    with pytest.raises(ValueError, match="judge keyword is registered twice"):
        register_judge(Impostor)
    assert judge_classes()["keyword"] is judges.KeywordRefusalJudge


def test_the_plugin_is_gone_after_the_test():
    assert NAME not in judge_classes()
