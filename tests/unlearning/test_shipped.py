"""The shipped demo files (`unlearning/demo/built/`): served when this code built them, refused
with the reason when it did not, refreshed by `make demo-ship`, reproduced by a rebuild
(README "The demo model")."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import pytest

from service.vlm.folders import AdapterFolder, ModelFolder, file_sha256
from unlearning import fingerprint
from unlearning.demo import build as demo_build
from unlearning.demo import content, rebuild, safety, shipping
from unlearning.demo.__main__ import main as demo_main
from unlearning.demo.build import BuildPlan, build, stale_model
from unlearning.demo.evaluate import DemoEvaluation
from unlearning.demo.recipe import Recipe


def _never(*args, **kwargs):
    raise AssertionError("built or trained although the shipped files fit")


def test_the_shipped_files_are_what_this_code_builds():
    """CI's freshness check: a change to any build or training input (recipe, data, the
    module closures' sources, library versions) without `make demo-ship` fails here."""
    assert rebuild.freshness() == []


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """The shipped folder copied to `tmp_path`, which the code then reads as the shipped one."""
    copy = tmp_path / "built"
    shutil.copytree(shipping.BUILT, copy)
    monkeypatch.setattr(shipping, "BUILT", copy)
    monkeypatch.setattr(shipping, "MODEL", copy / "model")
    monkeypatch.setattr(shipping, "MANIFEST", copy / "manifest.json")
    return copy


def test_stale_shipped_files_fail_the_freshness_check_with_the_refresh_command(
        shipped_copy, monkeypatch):
    (shipped_copy / "adapters" / "seed-1" / "adapter_model.safetensors").write_bytes(b"edited")
    problems = rebuild.freshness()
    assert problems == [
        "shipped demo files stale, safety seed 1: shipped files changed since they were shipped: "
        "adapters/seed-1/adapter_model.safetensors; refresh them with `make demo-ship`"]
    monkeypatch.setattr(content, "VARIED_TEMPLATES", content.VARIED_TEMPLATES[:-1])
    problems = rebuild.freshness()
    assert "model: built from other inputs (data.data/forget.jsonl" in problems[0]
    assert all(p.endswith("refresh them with `make demo-ship`") for p in problems)
    assert len(problems) == 1 + len(safety.REPORT_SEEDS), "the adapters' model changed too"


def test_a_fresh_home_gets_the_shipped_model_and_adapter_without_building(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_build, "build_into", _never)
    monkeypatch.setattr("unlearning.trainer.train", _never)
    model = build(Recipe(), tmp_path)
    assert stale_model(model, BuildPlan.of(Recipe())) is None
    assert file_sha256(model / "model.safetensors") == file_sha256(
        shipping.MODEL / "model.safetensors")
    adapter = safety.safety_adapter(model, 0, progress=False)
    assert safety.stale_adapter(adapter, model, 0) is None
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(model)
    assert AdapterFolder(adapter).metadata()["data"]["forget"][0]["path"] == str(
        ModelFolder(model).forget)
    assert not any(shipping.MODEL_PATH in p.read_text(errors="ignore")
                   for p in adapter.iterdir())


def test_an_edited_build_input_refuses_the_shipped_model_and_builds_saying_why(
        tmp_path, monkeypatch, caplog):
    """The very edit a data-wording change makes: the shipped folder is not served for it."""
    calls = []

    def fake_build_into(plan, folder):
        calls.append(plan.name)
        (folder / "model.safetensors").write_bytes(b"weights")
        demo_build.write_data(plan.files, folder)
        demo_build.write_record(plan, folder, 0.0)

    monkeypatch.setattr(content, "VARIED_TEMPLATES", content.VARIED_TEMPLATES[:-1])
    monkeypatch.setattr(demo_build, "build_into", fake_build_into)
    with caplog.at_level(logging.WARNING, logger="unlearning.demo.build"):
        model = build(Recipe(), tmp_path)
    assert calls == [model.name]
    assert "not using the shipped one: built from other inputs (data.data/forget.jsonl" \
        in caplog.text


def test_changed_adapter_settings_refuse_the_shipped_adapter(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_build, "build_into", _never)
    model = build(Recipe(), tmp_path)
    assert safety.shipped_adapter_problem(model, 0) is None
    settings = safety.safety_config
    monkeypatch.setattr(safety, "safety_config", lambda *args: dataclasses.replace(
        settings(*args), loss=dataclasses.replace(settings(*args).loss, recovery_share=0.25)))
    assert safety.shipped_adapter_problem(model, 0) == \
        "trained from other inputs (loss.recovery_share)"
    assert safety.shipped_adapter_problem(model, 7) == "no shipped adapter for seed 7"


def test_shipped_files_hold_no_machine_path_and_are_all_fingerprinted():
    manifest = shipping.manifest()
    files = {str(p.relative_to(shipping.BUILT)) for p in shipping.BUILT.rglob("*")
             if p.is_file() and p != shipping.MANIFEST}
    assert set(manifest["files"]) == files
    assert manifest["adapters"] == {str(s): safety.adapter_dir(
        shipping.MODEL.with_name(manifest["model"]), s).name for s in safety.REPORT_SEEDS}
    for path in shipping.BUILT.rglob("*"):
        if path.suffix in shipping.PORTABLE_SUFFIXES:
            text = path.read_text()
            assert not any(root in text for root in ("/tmp/", "/root/", "/home/", "/work/")), path
    config = json.loads((shipping.adapter(0) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == shipping.MODEL_PATH
    assert "evaluations" not in AdapterFolder(shipping.adapter(0)).metadata()


def test_a_rebuild_may_land_above_the_shipped_table_not_more_than_one_attempt_below():
    shipped = DemoEvaluation(asr={"text": 0.5, "image": 0.4}, lookalike={"text": 1.0},
                     attempts={"asr/text": 10, "asr/image": 4, "lookalike/text": 50})
    rebuilt = DemoEvaluation(asr={"text": 0.6, "image": 0.1}, lookalike={"text": 0.96})
    assert rebuild.tables_worse(shipped, rebuilt) == [
        "asr image: shipped 0.400, rebuilt 0.1", "lookalike text: shipped 1.000, rebuilt 0.96"]
    assert rebuild.tables_worse(shipped, DemoEvaluation(asr={"text": 0.4, "image": 1.0},
                                                lookalike={"text": 0.98})) == []
    assert rebuild.tables_worse(shipped, DemoEvaluation(asr={"text": 0.5})) == [
        "asr image: shipped 0.400, rebuilt None", "lookalike text: shipped 1.000, rebuilt None"]


def test_rebuild_exits_1_naming_the_differences_and_the_refresh_command(monkeypatch, capsys):
    monkeypatch.setattr(rebuild, "compare_rebuild",
                        lambda home, adapters_only: ["model/model.safetensors"])
    with pytest.raises(SystemExit) as exit_:
        demo_main(["rebuild"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "differs: model/model.safetensors" in err and "`make demo-ship`" in err


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_retraining_seed_0_reproduces_the_shipped_adapter(tmp_path):
    """CI's rebuild check (the model's own rebuild, 20-40 min, is `make demo-report`'s): the
    seed-0 adapter trained from code on the shipped model has the shipped adapter's bytes, on
    the CPU the shipped adapter was trained on (its `crossguard.json` `built_on`)."""
    reference = AdapterFolder(shipping.adapter(0)).metadata()["built_on"]
    if fingerprint.machine() != reference:
        pytest.skip(f"bitwise only on the shipped adapters' CPU ({reference['cpu']})")
    model = build(Recipe(), tmp_path)
    adapter = safety.safety_adapter(model, 0, progress=False, force=True)
    assert AdapterFolder(adapter).metadata()["built_on"] == reference
    assert rebuild.adapter_differences(model, {0: adapter}) == []


def test_rekey_carries_the_shipped_files_over_a_change_that_builds_the_same_bytes(
        shipped_copy, tmp_path, monkeypatch):
    """`make demo-rekey`'s last step on two homes of equal bytes: the shipped weights stay, the
    keys follow the changed code, and the freshness check passes for it; one byte of a weights
    file that differs refuses the lot, naming the file."""
    old_model = build(Recipe(), home=tmp_path / "old")
    old_adapters = {s: safety.safety_adapter(old_model, s) for s in safety.REPORT_SEEDS}
    weights = {p: file_sha256(p) for p in shipped_copy.rglob("*.safetensors")}
    monkeypatch.setattr(fingerprint, "sources_digest", lambda *entries: "refactored")
    monkeypatch.setattr(fingerprint, "machine", lambda: shipping.manifest()["built_on"])
    assert rebuild.freshness(), "the patched code change must re-key the shipped files"
    new_model = demo_build.model_dir(Recipe(), home=tmp_path / "new")
    shutil.copytree(old_model, new_model, ignore=shutil.ignore_patterns("build.json"))
    demo_build.write_record(BuildPlan.of(Recipe()), new_model, seconds=1.0)
    for seed, old in old_adapters.items():
        new = safety.adapter_dir(new_model, seed)
        new.mkdir(parents=True)
        for path in old.iterdir():
            new.joinpath(path.name).write_bytes(path.read_bytes().replace(
                str(old_model).encode(), str(new_model).encode()))
        AdapterFolder(new).write_metadata({**AdapterFolder(new).metadata(),  # as safety writes
                                           "cache_key": safety.key_inputs(new_model, seed)})

    flipped = safety.adapter_dir(new_model, 1) / "adapter_model.safetensors"
    original = flipped.read_bytes()
    flipped.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    manifest = shipping.manifest()
    assert rebuild.rekey(tmp_path / "old", tmp_path / "new") == [
        "adapters/seed-1/adapter_model.safetensors"]
    assert shipping.manifest() == manifest, "nothing re-keyed on a difference"

    flipped.write_bytes(original)
    assert rebuild.rekey(tmp_path / "old", tmp_path / "new") == []
    assert rebuild.freshness() == []
    assert {p: file_sha256(p) for p in shipped_copy.rglob("*.safetensors")} == weights
    record = shipping.manifest()
    assert record["model"] == new_model.name and record["built_on"] == manifest["built_on"]
    assert record["rekeyed"][-1]["from"] == {"model": manifest["model"],
                                             "adapters": manifest["adapters"]}
