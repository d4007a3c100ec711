"""One evaluation of the unlearning objective on a micro-step's batches.

The original model needed by the KL term (and by NPO's reference) is the same network with the
LoRA adapter switched off (`PeftModel.disable_adapter()`), so no second copy of the weights is
ever held: each reference costs one extra forward pass without gradients.
"""

from __future__ import annotations

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


def compute_terms(model, peft_model, batches: dict[str, dict], config: LossConfig,
                  ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The loss terms (tensors with gradients) and the metrics logged beside them.

    Args:
        model: the model to call (possibly wrapped by DDP/FSDP).
        peft_model: the unwrapped PeftModel, whose adapter can be disabled.
        batches: `forget`, `refusal`, `retain` batches (only those that are trained).
    """
    terms, metrics = {}, {}
    if "forget" in batches:
        batch = batches["forget"]
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
        original = reference_logits(model, peft_model, batch)
        terms["retain"] = losses.retain_kl(logits_of(model, batch), original, batch["labels"])
    metrics.update({name: float(value.detach()) for name, value in terms.items()})
    return terms, metrics


def _per_token(logits: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(losses.sequence_nll(logits, labels).mean())


def no_sync(accelerator, model, sync: bool):
    """Skip the gradient all-reduce on micro-steps that only accumulate."""
    return nullcontext() if sync else accelerator.no_sync(model)
