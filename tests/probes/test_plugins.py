"""Plugin discovery: a probe in a new module of `service.probes` is found by scanning the
package, with no list anywhere to edit."""

from __future__ import annotations

import textwrap

import pytest

from service.probes import base
from service.probes.base import ProbeContext, probe_classes, resolve_probes
from service.probes.behaviors import Behavior
from service.probes.plugins import import_all
from tests.probes.conftest import planted_module

MODULE = "crossguard_test_plugin_probe"
NAME = f"{MODULE}.PluginProbe"
"""Probes are addressed by module, as garak does: the name says which file defines it."""

SOURCE = textwrap.dedent('''
    from service.probes.base import Probe, Variant, register


    @register
    class PluginProbe(Probe):
        family = "test_plugin"
        modality = "text"
        goal = "prove that a probe in a new module is discovered"
        variants = {"validation": (Variant("Plugin validation: {task}?"),),
                    "test": (Variant("Plugin test: {task}?"),)}
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on the package's path holding a new probe module (`planted_module`)."""
    yield from planted_module(tmp_path, monkeypatch, MODULE, SOURCE, base._PROBES, NAME)


def test_a_probe_in_a_new_module_is_discovered(plugin_dir):
    assert NAME not in base._PROBES, "nothing imported the module yet"
    classes = probe_classes()
    assert NAME in classes
    assert classes[NAME].__module__ == f"service.probes.{MODULE}"
    assert classes[NAME].prompts_per_behavior == 1
    assert [p.name for p in resolve_probes([MODULE])] == [NAME]
    (probe,) = resolve_probes(["test_plugin"])
    (attempt,) = probe.attempts([Behavior("pick a lock", "theft")], ProbeContext(split="test"))
    assert attempt.prompt_text == "user: Plugin test: pick a lock?"
    assert f"service.probes.{MODULE}" in import_all()


def test_discovery_scans_every_probe_module_but_not_main():
    names = import_all()
    assert "service.probes.__main__" not in names
    assert {cls.__module__ for cls in probe_classes().values()} <= set(names)
    assert {"service.probes.sampling", "service.probes.benign"} <= set(names)


def test_the_plugin_is_gone_after_the_test():
    assert NAME not in probe_classes()
