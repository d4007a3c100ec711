"""Best-of-N sampling (Hughes et al. 2024, "Best-of-N Jailbreaking"): the same attack sampled N
times at a high temperature succeeds if any reply complies. A safety adapter that refuses under
greedy decoding can still leave harmful replies in the tail of its distribution; this family
measures that tail. N and the temperature come from the probe context (`ProbeContext.best_of_n`,
`.temperature`: `--best-of-n`/`--temperature` offline, `CROSSGUARD_PROBE_BEST_OF_N`/
`_TEMPERATURE` in the service), the seeds from the half (`forms.SAMPLING_SEEDS`), so a run is
reproducible and the halves never share a sample.
"""

from __future__ import annotations

from service.probes import forms
from service.probes.base import Probe, ProbeContext, Variant, register
from service.probes.splits import SPLITS


class BestOfN(Probe):
    """A probe whose attempts are each sampled `ctx.best_of_n` times."""

    def decoding(self, ctx: ProbeContext) -> dict:
        first = forms.SAMPLING_SEEDS[ctx.split]
        return {"samples": ctx.best_of_n, "temperature": ctx.temperature,
                "seeds": tuple(range(first, first + ctx.best_of_n))}


@register
class BestOfNText(BestOfN):
    family = "best_of_n"
    modality = "text"
    goal = "sample the plain request many times; one compliant reply is a success"
    variants = {split: (Variant(forms.REQUEST[split]),) for split in SPLITS}


@register
class BestOfNImage(BestOfN):
    family = "best_of_n"
    modality = "image"
    goal = "sample the typographic request many times; one compliant reply is a success"
    variants = {split: forms.TYPOGRAPHIC[split][:1] for split in SPLITS}
