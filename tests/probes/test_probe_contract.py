"""Contract tests over every registered probe (garak style): whatever a probe attacks with,
in either evaluation half, it must yield valid chat conversations of its declared modality
that the model's processor accepts (once the runner has answered the earlier turns), and
image probes must yield decodable images of the processor's size."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from PIL import Image

from service.probes.base import (
    Probe,
    ProbeContext,
    Variant,
    probe_classes,
    register,
    resolve_probes,
)
from service.probes.behaviors import BUILTIN, BUILTIN_BENIGN, Behavior, sample_behaviors
from service.probes.splits import SPLITS
from service.vlm.messages import ImagePart, Message, TextPart, modality

PROBES = list(probe_classes())
BEHAVIORS = sample_behaviors(BUILTIN, 3) + [Behavior("steal", "theft"),
                                            sample_behaviors(BUILTIN_BENIGN, 1)[0]]
OFFLINE = [n for n, c in probe_classes().items() if not c.needs_engine]


def check_conversation(messages, probe: Probe, size: tuple[int, int]) -> None:
    """A conversation the runner can send: typed messages, a system prompt only first, the
    user asks last, and the only empty messages are assistant placeholders right after a user
    turn (the runner has the model under test answer them live)."""
    assert isinstance(messages, list) and messages, "a conversation is a non-empty list"
    assert all(isinstance(m, Message) for m in messages)
    assert all(m.role in ("system", "user", "assistant") for m in messages)
    assert all(m.role != "system" for m in messages[1:]), "a system prompt comes first"
    assert messages[-1].role == "user", "the model must be asked to answer"
    for index, m in enumerate(messages):
        assert isinstance(m.content, tuple)
        if not m.content:
            assert m.role == "assistant", "only assistant turns are left for the model"
            assert index > 0 and messages[index - 1].role == "user", (
                "a placeholder answers the user turn before it")
        for part in m.content:
            assert isinstance(part, (TextPart, ImagePart))
            if isinstance(part, TextPart):
                assert part.text.strip()
                assert not re.search(r"\{(task|action|object)\}", part.text), "unfilled slot"
            else:
                check_image(part.image, size)
    assert modality(messages) == probe.modality


def check_image(image: Image.Image, size: tuple[int, int]) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    assert decoded.mode == "RGB"
    assert (decoded.height, decoded.width) == size


def answered(messages) -> list[Message]:
    """The conversation as the runner sends it: placeholders filled with a reply."""
    return [Message.of("assistant", "the answer is ok.") if m.role == "assistant"
            and not m.content else m for m in messages]


@pytest.mark.parametrize("name", PROBES)
def test_probe_declares_family_modality_goal_and_name(name):
    cls = probe_classes()[name]
    assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.family)
    assert cls.modality in ("text", "image")
    assert cls.kind in ("attack", "benign")
    assert cls.goal.strip()
    package, _, module = cls.__module__.rpartition(".")
    assert package == "service.probes"
    assert cls.name == f"{module}.{cls.__name__}" == name, "addressed by its module"
    assert cls.prompts_per_behavior >= 1
    assert cls.__doc__ or cls.goal


@pytest.mark.parametrize("name", PROBES)
def test_every_split_holds_as_many_variants(name):
    cls = probe_classes()[name]
    assert set(cls.variants) == set(SPLITS)
    assert all(isinstance(v, Variant) for split in SPLITS for v in cls.variants[split])
    assert {len(cls.variants[split]) for split in SPLITS} == {cls.prompts_per_behavior}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", OFFLINE)
def test_probe_yields_valid_conversations(name, split, ctx):
    ctx = dataclasses.replace(ctx, split=split)
    probe = resolve_probes([name])[0]
    for behavior in BEHAVIORS:
        conversations = list(probe.prompts(behavior, ctx))
        assert len(conversations) == probe.prompts_per_behavior
        for variant, messages in zip(probe.variants[split], conversations, strict=True):
            check_conversation(messages, probe, ctx.image_size)
            placeholders = sum(m.role == "assistant" and not m.content for m in messages)
            assert placeholders == len(variant.history)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", OFFLINE)
def test_attempts_carry_the_behaviour_in_text_or_image(name, split):
    probe = resolve_probes([name])[0]
    behavior = Behavior("hack a bank server", "cybercrime")
    attempts = list(probe.attempts([behavior], ProbeContext(split=split)))
    assert len(attempts) == probe.prompts_per_behavior
    for attempt in attempts:
        assert (attempt.probe, attempt.family, attempt.modality, attempt.kind) == (
            name, probe.family, probe.modality, probe.kind)
        assert attempt.behavior == behavior
        carried = attempt.prompt_text + " " + (attempt.image_text or "")
        assert "hack" in carried and "bank server" in carried
        if probe.modality == "image":
            assert attempt.image_text, "image probes report what their image shows"


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", PROBES)
def test_every_probe_is_accepted_by_a_real_processor(name, split, engine):
    """Against the tiny LLaVA (white-box probes included): the conversation, its earlier
    turns answered, tokenises with the model's chat template and its images become pixel
    values of the right shape."""
    from service.vlm.prompts import encode

    ctx = ProbeContext.from_engine(engine, split=split)
    probe = resolve_probes([name])[0]
    for attempt in probe.attempts(BEHAVIORS[:2], ctx):
        check_conversation(list(attempt.messages), probe, engine.image_size)
        inputs = encode(engine.processor, answered(attempt.messages))
        if probe.modality == "image":
            assert tuple(inputs["pixel_values"].shape[-2:]) == engine.image_size
        else:
            assert "pixel_values" not in inputs


def test_resolve_accepts_names_families_and_all_and_rejects_unknowns():
    assert [p.name for p in resolve_probes(["visual.FigStep"])] == ["visual.FigStep"]
    assert {p.family for p in resolve_probes(["figstep", "direct"])} == {"figstep", "direct"}
    assert {p.modality for p in resolve_probes(["context"])} == {"text", "image"}
    assert len(resolve_probes(["all"])) == len(PROBES) == len(resolve_probes())
    with pytest.raises(KeyError, match="no probe 'nope'"):
        resolve_probes(["nope"])


def test_the_required_families_are_registered():
    families: dict[str, set[str]] = {}
    for cls in probe_classes().values():
        families.setdefault(cls.family, set()).add(cls.modality)
    both = {"text", "image"}
    assert families == {
        "direct": {"text"}, "roleplay": {"text"}, "prefix_injection": {"text"},
        "refusal_suppression": {"text"}, "hypothetical": {"text"}, "paraphrase": {"text"},
        "system_prompt": both, "context": both, "escalation": both, "best_of_n": both,
        "figstep": {"image"}, "mmsafety": {"image"}, "split_payload": {"image"},
        "composition": {"image"}, "typographic": {"image"}, "adversarial_image": {"image"},
        "over_refusal": both,
    }


def test_only_over_refusal_probes_ask_harmless_requests():
    kinds = {name: cls.kind for name, cls in probe_classes().items()}
    assert {n for n, k in kinds.items() if k == "benign"} == {
        n for n, c in probe_classes().items() if c.family == "over_refusal"}
    assert set(kinds.values()) == {"attack", "benign"}


@pytest.mark.parametrize("family", ["context", "escalation"])
def test_multi_turn_probes_leave_earlier_replies_to_the_model(family):
    for probe in resolve_probes([family]):
        for split in SPLITS:
            for attempt in probe.attempts(BEHAVIORS[:1], ProbeContext(split=split)):
                assert attempt.live_turns >= 1
                roles = [m.role for m in attempt.messages if m.role != "system"]
                assert roles == ["user", "assistant"] * attempt.live_turns + ["user"]


@pytest.mark.parametrize("name", PROBES)
def test_only_best_of_n_probes_sample(name):
    probe = probe_classes()[name]()
    ctx = ProbeContext(best_of_n=5, temperature=0.7)
    samples = probe.decoding(ctx).get("samples", 1)
    assert samples == (5 if probe.family == "best_of_n" else 1)


def _probe(name: str, variants: dict) -> type[Probe]:
    return type(name, (Probe,), {"__module__": "service.probes.test_contract",
                                 "family": "test_contract", "modality": "text",
                                 "goal": "a probe for the registry tests",
                                 "variants": variants})


def test_register_counts_variants_per_behaviour():
    from service.probes import base

    cls = _probe("TwoEach", {"validation": (Variant("a {task}"), Variant("b {task}")),
                             "test": (Variant("c {task}"), Variant("d {task}"))})
    try:
        register(cls)
        assert cls.prompts_per_behavior == 2
        assert probe_classes()["test_contract.TwoEach"] is cls
    finally:
        base._PROBES.pop("test_contract.TwoEach", None)


@pytest.mark.parametrize("variants", [
    {"validation": (Variant("a {task}"),), "test": (Variant("b {task}"), Variant("c {task}"))},
    {"test": (Variant("b {task}"),)},
    {"validation": (), "test": ()},
], ids=["unequal", "missing-half", "empty"])
def test_register_rejects_splits_of_unequal_size(variants):
    from service.probes import base

    with pytest.raises(ValueError, match="variants"):
        register(_probe("Uneven", variants))
    assert "test_contract.Uneven" not in base._PROBES


def test_register_rejects_a_name_registered_twice():
    from service.probes import base

    halves = {"validation": (Variant("a {task}"),), "test": (Variant("b {task}"),)}
    first = register(_probe("Twice", halves))
    try:
        assert register(first) is first, "registering the same class again is harmless"
        with pytest.raises(ValueError, match="registered twice"):
            register(_probe("Twice", halves))
        assert probe_classes()["test_contract.Twice"] is first
    finally:
        base._PROBES.pop("test_contract.Twice", None)
