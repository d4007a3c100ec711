"""Contract tests over every registered probe (garak style): whatever a probe attacks with,
it must yield valid chat conversations of its declared modality that the model's processor
accepts, and image probes must yield decodable images of the processor's size."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from service.probes.base import Probe, ProbeContext, probe_classes, resolve_probes
from service.probes.behaviors import BUILTIN, Behavior, sample_behaviors
from service.vlm.messages import ImagePart, Message, TextPart, modality

PROBES = list(probe_classes())
BEHAVIORS = sample_behaviors(BUILTIN, 3) + [Behavior("steal", "theft")]
OFFLINE = [n for n, c in probe_classes().items() if not c.needs_engine]


def check_conversation(messages, probe: Probe, size: tuple[int, int]) -> None:
    assert isinstance(messages, list) and messages, "a conversation is a non-empty list"
    assert all(isinstance(m, Message) for m in messages)
    assert all(m.role in ("system", "user", "assistant") for m in messages)
    assert messages[-1].role == "user", "the model must be asked to answer"
    for m in messages:
        assert isinstance(m.content, tuple) and m.content
        for part in m.content:
            assert isinstance(part, (TextPart, ImagePart))
            if isinstance(part, TextPart):
                assert part.text.strip()
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


@pytest.mark.parametrize("name", PROBES)
def test_probe_declares_family_modality_goal_and_name(name):
    cls = probe_classes()[name]
    assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.family)
    assert cls.modality in ("text", "image")
    assert cls.goal.strip()
    assert cls.name == f"{cls.family}.{cls.__name__}" == name
    assert cls.prompts_per_behavior >= 1
    assert cls.__doc__ or cls.goal


@pytest.mark.parametrize("name", OFFLINE)
def test_probe_yields_valid_conversations(name, ctx):
    probe = resolve_probes([name])[0]
    for behavior in BEHAVIORS:
        conversations = list(probe.prompts(behavior, ctx))
        assert len(conversations) == probe.prompts_per_behavior
        for messages in conversations:
            check_conversation(messages, probe, ctx.image_size)


@pytest.mark.parametrize("name", OFFLINE)
def test_attempts_carry_the_behaviour_in_text_or_image(name):
    probe = resolve_probes([name])[0]
    behavior = Behavior("hack a bank server", "cybercrime")
    (attempt,) = probe.attempts([behavior], ProbeContext())
    assert (attempt.probe, attempt.family, attempt.modality) == (name, probe.family,
                                                               probe.modality)
    assert attempt.behavior == behavior
    carried = attempt.prompt_text + " " + (attempt.image_text or "")
    assert "bank server" in carried
    if probe.modality == "image":
        assert attempt.image_text, "image probes report what their image shows"


@pytest.mark.parametrize("name", PROBES)
def test_every_probe_is_accepted_by_a_real_processor(name, engine):
    """Against the tiny LLaVA (white-box probes included): the conversation tokenises with
    the model's chat template and its images become pixel values of the right shape."""
    from service.vlm.prompts import encode

    ctx = ProbeContext.from_engine(engine)
    probe = resolve_probes([name])[0]
    for attempt in probe.attempts(BEHAVIORS[:2], ctx):
        check_conversation(list(attempt.messages), probe, engine.image_size)
        inputs = encode(engine.processor, attempt.messages)
        if probe.modality == "image":
            assert tuple(inputs["pixel_values"].shape[-2:]) == engine.image_size
        else:
            assert "pixel_values" not in inputs


def test_resolve_accepts_names_families_and_all_and_rejects_unknowns():
    assert [p.name for p in resolve_probes(["figstep.FigStep"])] == ["figstep.FigStep"]
    assert {p.family for p in resolve_probes(["figstep", "direct"])} == {"figstep", "direct"}
    assert len(resolve_probes(["all"])) == len(PROBES) == len(resolve_probes())
    with pytest.raises(KeyError, match="no probe 'nope'"):
        resolve_probes(["nope"])


def test_the_required_families_are_registered():
    families = {c.family: c.modality for c in probe_classes().values()}
    assert families == {
        "direct": "text", "roleplay": "text", "prefix_injection": "text",
        "refusal_suppression": "text", "hypothetical": "text",
        "figstep": "image", "mmsafety": "image", "split_payload": "image",
        "adversarial_image": "image", "typographic": "image",
    }
