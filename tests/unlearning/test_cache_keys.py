"""Cached demo folders are named by everything that decides their content, and reused only
while intact (README "Reproducing the numbers")."""

from __future__ import annotations

import pytest

from service.vlm.folders import AdapterFolder, ModelFolder
from unlearning import fingerprint
from unlearning.demo import build as demo_build
from unlearning.demo import content, shipping
from unlearning.demo.build import BuildPlan, build, model_dir, stale_model, write_record
from unlearning.demo.data import write_data
from unlearning.demo.recipe import Recipe


@pytest.fixture(scope="module")
def plan():
    return BuildPlan.of(Recipe())


def test_the_key_is_stable_and_follows_the_recipe(tmp_path, plan):
    assert model_dir(Recipe(), tmp_path) == tmp_path / "models" / plan.name
    assert plan.name == BuildPlan.of(Recipe()).name and plan.name.startswith("demo-")
    assert BuildPlan.of(Recipe(seed=1)).name != plan.name
    assert BuildPlan.of(Recipe(align_steps=10)).name != plan.name


def test_a_change_to_the_data_generation_changes_the_key(monkeypatch, plan):
    """The failure this key exists for: data wording changed, the recipe did not."""
    monkeypatch.setattr(content, "VARIED_TEMPLATES", content.VARIED_TEMPLATES[:-1])
    changed = BuildPlan.of(Recipe())
    assert changed.files[ModelFolder(".").forget] != plan.files[ModelFolder(".").forget]
    assert changed.name != plan.name


def test_library_versions_are_part_of_the_key(monkeypatch, plan):
    versions = {**fingerprint.library_versions(), "torch": "0.0.0"}
    monkeypatch.setattr(fingerprint, "library_versions", lambda: versions)
    assert BuildPlan.of(Recipe()).name != plan.name


def test_the_build_closure_follows_function_level_imports():
    modules = fingerprint.closure("unlearning.demo.build")
    assert {"unlearning.demo.train", "unlearning.demo.data", "unlearning.demo.content",
            "service.probes.typography", "service.vlm.folders"} <= set(modules)
    assert "service.vlm.engine" not in modules, "serving code must not force a demo rebuild"


def test_an_edit_to_any_module_in_the_closure_changes_the_digest(tmp_path, monkeypatch):
    package = tmp_path / "service"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "entry.py").write_text("def run():\n    from service import helper\n")
    (package / "helper.py").write_text("VALUE = 1\n")
    (package / "unrelated.py").write_text("VALUE = 1\n")
    monkeypatch.setattr(fingerprint, "ROOT", tmp_path)
    assert set(fingerprint.closure("service.entry")) == {"service", "service.entry",
                                                         "service.helper"}
    before = fingerprint.sources_digest("service.entry")
    (package / "unrelated.py").write_text("VALUE = 2\n")
    assert fingerprint.sources_digest("service.entry") == before
    (package / "helper.py").write_text("VALUE = 2\n")
    assert fingerprint.sources_digest("service.entry") != before


def _fake_build_into(calls):
    """build_into without training: the plan's data files and a record, counted."""
    def fake(plan, folder):
        calls.append(folder)
        (folder / "model.safetensors").write_bytes(b"weights")
        write_data(plan.files, folder)
        write_record(plan, folder, 0.0)
    return fake


def test_build_reuses_an_intact_folder_and_rebuilds_an_edited_one(tmp_path, monkeypatch, plan):
    calls = []
    monkeypatch.setattr(demo_build, "build_into", _fake_build_into(calls))
    monkeypatch.setattr(shipping, "MANIFEST", tmp_path / "nothing-shipped.json")
    folder = build(Recipe(), tmp_path)
    assert folder.name == plan.name and stale_model(folder, plan) is None
    assert build(Recipe(), tmp_path) == folder and len(calls) == 1
    forget = ModelFolder(folder).forget
    forget.write_text(forget.read_text() + '{"prompt": "x", "response": "y"}\n')
    assert "data/forget.jsonl changed" in stale_model(folder, plan)
    assert build(Recipe(), tmp_path) == folder and len(calls) == 2
    assert stale_model(folder, plan) is None
    ModelFolder(folder).build_file.unlink()
    assert "no build.json" in stale_model(folder, plan)


def test_a_safety_adapter_is_reused_only_for_its_inputs_and_unchanged_data(tmp_path):
    from unlearning.data import fingerprint as data_fingerprint
    from unlearning.demo.safety import adapter_dir, key_inputs, stale_adapter

    model = tmp_path / "models" / "demo-0123456789ab"
    ModelFolder(model).data.mkdir(parents=True)
    forget = ModelFolder(model).forget
    forget.write_text('{"prompt": "p", "response": "r"}\n')
    adapter = adapter_dir(model, seed=0)
    assert adapter.parent.name == f"{model.name}-adapters"
    assert adapter_dir(model, seed=1) != adapter
    assert "no crossguard.json" in stale_adapter(adapter, model, 0)
    adapter.mkdir(parents=True)
    sources = {"forget": [{"path": str(forget), "sha256": data_fingerprint(forget)}]}
    AdapterFolder(adapter).write_metadata({"data": sources, "cache_key": key_inputs(model, 0)})
    assert stale_adapter(adapter, model, 0) is None
    assert "other inputs" in stale_adapter(adapter, model, 1)
    forget.write_text('{"prompt": "p", "response": "other"}\n')
    assert "changed since it was trained on" in stale_adapter(adapter, model, 0)
