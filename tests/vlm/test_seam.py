"""The engine seam holds: code above `service/vlm/` asks an engine only what `protocol.Engine`
declares, so the vLLM engine can stand where the torch engine stands (README "Engines")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABOVE_THE_SEAM = ("service", "unlearning", "bench")
BELOW = ROOT / "service" / "vlm"
ALLOWED = {
    "bench/adapter_scope.py": "times the torch engine's peft paths (aLoRA), which vLLM does "
                              "not serve; it waits for batches through the torch engine's "
                              "admission",
    "service/probes/base.py": "ProbeContext.from_engine reads a processor and a model config, "
                              "for the trainer's drawings; engines go through "
                              "service/probes/context.py. base.py is part of the demo build's "
                              "key: see that module's docstring",
}
"""Modules allowed past the contract, by design, with why."""


def engine_members() -> set[str]:
    """Attributes and methods `protocol.Engine` declares."""
    tree = ast.parse((BELOW / "protocol.py").read_text())
    engine = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Engine")
    names = set()
    for node in engine.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


def _is_engine(node: ast.expr) -> bool:
    """`engine`, `self.engine`, `ctx.engine`, `runtime.engine`, ..."""
    return (isinstance(node, ast.Name) and node.id == "engine") or (
        isinstance(node, ast.Attribute) and node.attr == "engine")


def reach_ins(source: str, allowed: set[str]) -> list[tuple[int, str]]:
    """(line, attribute) for every attribute of an engine that `allowed` does not name."""
    return sorted({(node.lineno, node.attr) for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.Attribute) and _is_engine(node.value)
                   and node.attr not in allowed})


def test_the_protocol_declares_what_callers_need():
    assert {"submit", "wait_started", "generate", "image_size", "patch_size", "vocab_size",
            "white_box", "base_model_id", "adapter_names", "add_adapter",
            "remove_adapter"} <= engine_members()


def test_nothing_above_the_seam_touches_an_engines_own_attributes():
    allowed = engine_members()
    found = {}
    for package in ABOVE_THE_SEAM:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if path.is_relative_to(BELOW) or relative in ALLOWED:
                continue
            if hits := reach_ins(path.read_text(), allowed):
                found[relative] = hits
    assert found == {}


def test_a_planted_reach_in_is_found():
    planted = ("def typography(engine):\n"
               "    return engine.processor.patch_size, engine.image_size\n"
               "class Probe:\n"
               "    def run(self, ctx):\n"
               "        return ctx.engine.model.config\n")
    assert reach_ins(planted, engine_members()) == [(2, "processor"), (5, "model")]


def _class_members(path: Path, name: str) -> set[str]:
    """Methods, properties and `self.x = ...` attributes of class `name` in `path` (read, not
    imported: the vLLM engine imports vLLM, which the main venv lacks)."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    found = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    for node in ast.walk(cls):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) \
                        and leaf.value.id == "self":
                    found.add(leaf.attr)
    return found


def test_both_engines_implement_the_whole_contract():
    for module, name in (("engine.py", "VLMEngine"), ("vllm_engine.py", "VLLMEngine")):
        assert engine_members() - _class_members(BELOW / module, name) == set(), name
