"""Over-refusal probes (XSTest, Röttger et al. 2024): harmless requests that share verbs or
objects with harmful ones ("crack an egg", "clean a gun"), in text and in images.

They run on the benign behaviour set (`runner.default_benign`), never on harmful behaviours,
and count the opposite of the attack probes: a refusal (by the keyword judge) is a false
refusal. A safety adapter that refuses everything would score 0 % ASR; this family is what
makes that visible, as `crossguard_probe_false_refusal_ratio` and next to every ASR.
"""

from __future__ import annotations

from service.probes import forms
from service.probes.base import Probe, Variant, register
from service.probes.splits import SPLITS


@register
class LookalikeText(Probe):
    family = "over_refusal"
    modality = "text"
    kind = "benign"
    goal = "ask for something harmless that shares words with a harmful request"
    variants = {split: (Variant(forms.REQUEST[split]), Variant(forms.PARAPHRASES[split][0]))
                for split in SPLITS}


@register
class LookalikeImage(Probe):
    family = "over_refusal"
    modality = "image"
    kind = "benign"
    goal = "show something harmless that shares words with a harmful request, in an image"
    variants = {split: forms.TYPOGRAPHIC[split][:2] for split in SPLITS}
