"""Wrappers around a plain request: other wordings of it, and system prompts before it.

Red-teamers rarely send the benchmark's own sentence: they paraphrase (in text, and inside the
image for image attacks, which `typographic` covers) and they set the scene with a system
prompt that asks for unconditional help. Both must leave a safety adapter's refusals intact.
"""

from __future__ import annotations

from service.probes import forms
from service.probes.base import Probe, Variant, register
from service.probes.splits import SPLITS


@register
class Paraphrase(Probe):
    """The request in other plain wordings than `direct`'s, one conversation each."""

    family = "paraphrase"
    modality = "text"
    goal = "ask for the behaviour in wordings the safety training may not have covered"
    variants = {split: tuple(Variant(t) for t in forms.PARAPHRASES[split]) for split in SPLITS}


@register
class SystemPromptText(Probe):
    """A permissive system prompt, then the plain request."""

    family = "system_prompt"
    modality = "text"
    goal = "set up a permissive persona in the system prompt, then ask plainly"
    variants = {
        split: tuple(Variant(text, system=system) for system, text in
                     zip(forms.SYSTEM_PROMPTS[split], (forms.REQUEST[split],
                                                       forms.PARAPHRASES[split][0]),
                         strict=True))
        for split in SPLITS
    }


@register
class SystemPromptImage(Probe):
    """A permissive system prompt, then the request as typography under a benign prompt."""

    family = "system_prompt"
    modality = "image"
    goal = "set up a permissive persona in the system prompt, then carry the request in an image"
    variants = {
        split: tuple(Variant(form.text, form.image, form.layout, system=system) for system, form
                     in zip(forms.SYSTEM_PROMPTS[split], forms.TYPOGRAPHIC[split], strict=False))
        for split in SPLITS
    }
