"""One evaluation of the unlearning objective on a micro-step's batches.

The original model needed by the KL term (and by NPO's reference, and by the hidden-state terms)
is the same network with the LoRA adapter switched off (`PeftModel.disable_adapter()`), so no
second copy of the weights is ever held: each reference costs one extra forward pass without
gradients. Hidden states (`output_hidden_states=True`) are only asked for by the terms that use
them (`--forget-loss reroute|rmu`, `--retain-loss hidden`); the default ga + kl path runs the
same forward passes as it always did.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import nullcontext

import torch

from unlearning import losses
from unlearning.config import LossConfig


def weights(config: LossConfig) -> dict[str, float]:
    """Term name -> weight, for the terms that are trained (weight > 0)."""
    named = {"forget": config.forget_weight, "refusal": config.refusal_weight,
             "retain": config.retain_weight}
    return {name: w for name, w in named.items() if w > 0}


def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Forward pass without `labels`, so the model spends nothing on its own loss."""
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def reference_logits(model, peft_model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the original model: the adapter disabled, no gradients."""
    with torch.no_grad(), peft_model.disable_adapter():
        return logits_of(model, batch)


def hidden_states_of(model, peft_model, batch: dict[str, torch.Tensor], logits: bool = False):
    """Forward pass returning `(hidden_states, logits)`; `hidden_states` holds one `(batch,
    length, hidden)` tensor per layer, index 0 the embeddings. Without `logits`, only the last
    position's logits are computed where the model allows it (`logits_to_keep`)."""
    extra = {} if logits or not _keeps_logits(peft_model) else {"logits_to_keep": 1}
    out = model(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True,
                **extra)
    return out.hidden_states, out.logits


def reference_hidden_states(model, peft_model, batch: dict[str, torch.Tensor]):
    """Hidden states of the original model: the adapter disabled, no gradients."""
    with torch.no_grad(), peft_model.disable_adapter():
        return hidden_states_of(model, peft_model, batch)[0]


def layers(config: LossConfig, name: str, hidden_states) -> list[int]:
    """The `hidden_states` indices of field `name` (`reroute_layers`, `retain_layers`,
    `rmu_layer`), or its default for this model's depth.

    Raises:
        ValueError: naming the field, when an index exceeds the model's depth.
    """
    depth = len(hidden_states) - 1
    chosen = getattr(config, name)
    if chosen is None:
        defaults = {"reroute_layers": [round(depth * 10 / 32), round(depth * 20 / 32)],
                    "retain_layers": list(range(1, depth + 1)),
                    "rmu_layer": [round(depth / 4)]}
        return sorted({max(1, i) for i in defaults[name]})
    chosen = chosen if isinstance(chosen, list) else [chosen]
    for index in chosen:
        if not 1 <= index <= depth:
            raise ValueError(f"{name}: layer {index} is out of range; the model has {depth} "
                             f"decoder layers (hidden_states indices 1 to {depth})")
    return chosen


def compute_terms(model, peft_model, batches: dict[str, dict], config: LossConfig,
                  progress: tuple[int, int] | None = None,
                  ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The loss terms (tensors with gradients) and the metrics logged beside them.

    Args:
        model: the model to call (possibly wrapped by DDP/FSDP).
        peft_model: the unwrapped PeftModel, whose adapter can be disabled.
        batches: `forget`, `refusal`, `retain` batches (only those that are trained).
        progress: `(t, T)`, optimiser steps done and planned, for the schedule of
            `forget_loss` reroute (Zou et al. 2024): its forget and retain terms come back
            multiplied by `losses.reroute_schedule(t, T)` and are logged so (what the weights
            then multiply is what is minimised), beside `<term>_scale` and `<term>_unscaled`.
            None: no schedule.
    """
    terms, metrics = {}, {}
    if "forget" in batches:
        batch = batches["forget"]
        if config.forget_loss in ("reroute", "rmu"):
            terms["forget"], metrics["forget_nll"] = _representation_forget(
                model, peft_model, batch, config)
        else:
            logits = logits_of(model, batch)
            if config.forget_loss == "npo":
                nll = losses.sequence_nll(logits, batch["labels"], reduce="sum")
                reference = losses.sequence_nll(
                    reference_logits(model, peft_model, batch), batch["labels"], reduce="sum")
                terms["forget"] = losses.npo(nll, reference, config.npo_beta)
                metrics["forget_nll"] = _per_token(logits, batch["labels"])
            else:
                nll = losses.sequence_nll(logits, batch["labels"])
                terms["forget"] = losses.gradient_ascent(nll, config.forget_nll_cap)
                metrics["forget_nll"] = float(nll.detach().mean())
            del logits
    if "refusal" in batches:
        batch = batches["refusal"]
        nll = losses.sequence_nll(logits_of(model, batch), batch["labels"])
        terms["refusal"] = losses.refusal_nll(nll)
    if "retain" in batches:
        batch = batches["retain"]
        if config.retain_loss == "hidden":
            original = reference_hidden_states(model, peft_model, batch)
            chosen = layers(config, "retain_layers", original)
            current = hidden_states_of(model, peft_model, batch)[0]
            terms["retain"] = losses.hidden_distance(
                [current[i] for i in chosen], [original[i] for i in chosen],
                batch["attention_mask"], config.hidden_distance)
            del current, original
        else:
            original = reference_logits(model, peft_model, batch)
            terms["retain"] = losses.retain_kl(logits_of(model, batch), original,
                                               batch["labels"])
    if config.forget_loss == "reroute" and progress is not None:
        scales = dict(zip(("forget", "retain"), losses.reroute_schedule(*progress), strict=True))
        for name in [n for n in scales if n in terms]:
            metrics[f"{name}_unscaled"] = float(terms[name].detach())
            metrics[f"{name}_scale"] = scales[name]
            terms[name] = terms[name] * scales[name]
    metrics.update({name: float(value.detach()) for name, value in terms.items()})
    return terms, metrics


def _representation_forget(model, peft_model, batch: dict[str, torch.Tensor],
                           config: LossConfig) -> tuple[torch.Tensor, float]:
    """The reroute or rmu term on the forget rows, and their mean response NLL (a metric, from
    the same forward pass, so that `--stop-forget-nll` still applies)."""
    hidden, logits = hidden_states_of(model, peft_model, batch, logits=True)
    nll = _per_token(logits, batch["labels"])
    del logits
    mask = batch["attention_mask"]
    if config.forget_loss == "reroute":
        chosen = layers(config, "reroute_layers", hidden)
        original = reference_hidden_states(model, peft_model, batch)
        return losses.reroute([hidden[i] for i in chosen], [original[i] for i in chosen],
                              mask), nll
    (index,) = layers(config, "rmu_layer", hidden)
    state = hidden[index]
    target = config.rmu_coefficient * losses.rmu_direction(state.shape[-1])
    return losses.rmu_forget(state, target.to(state.device), mask), nll


def _keeps_logits(peft_model) -> bool:
    """Whether the base model's forward takes `logits_to_keep` (recent transformers)."""
    return _forward_keeps_logits(type(peft_model.get_base_model()))


@functools.cache
def _forward_keeps_logits(model_class: type) -> bool:
    """Per model class, read once: the signature is looked up at every hidden-state forward."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def _per_token(logits: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(losses.sequence_nll(logits, labels).mean())


def no_sync(accelerator, model, sync: bool):
    """Skip the gradient all-reduce on micro-steps that only accumulate."""
    return nullcontext() if sync else accelerator.no_sync(model)
