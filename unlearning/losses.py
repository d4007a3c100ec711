"""The loss terms of textual unlearning, one small pure function each.

Notation (Yao et al. 2023, "Large Language Model Unlearning", eq. 2):

    L = w_forget * L_forget + w_refusal * L_refusal + w_retain * L_retain

All terms score *response tokens only*: `labels` hold -100 on the prompt (image tokens
included) and on padding, which is the whole difference between unlearning a response and
unlearning the prompt that asked for it. Masks come from the labels, never from comparing ids
with the pad id (which breaks whenever pad == eos).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1: `(logits[:, :-1], labels[:, 1:])`."""
    return logits[:, :-1], labels[:, 1:]


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood -log p(y_t | x, y_<t) and the response mask.

    Returns:
        `(nll, mask)`, both `(batch, length - 1)`; nll is 0 where mask is False.
    """
    logits, targets = shift(logits, labels)
    mask = targets != IGNORE
    nll = F.cross_entropy(
        logits.float().transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none"
    )
    return nll * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """NLL of each example's response, `(batch,)`: the token mean (`mean`, comparable across
    lengths, what thresholds and logs use) or the sum (`sum`, -log p(y|x), what NPO needs)."""
    nll, mask = token_nll(logits, labels)
    total = nll.sum(dim=1)
    if reduce == "sum":
        return total
    return total / mask.sum(dim=1).clamp(min=1)


def gradient_ascent(nll: torch.Tensor, cap: float | None = None) -> torch.Tensor:
    """L_forget = -E[NLL(y_harmful | x_harmful)] (Yao et al., eq. 2, first term).

    Minimising it *raises* the harmful responses' NLL. With `cap`, each example's NLL is
    clamped at `cap` so that examples already forgotten stop pushing (no gradient past the
    cap), which keeps ascent from diverging.
    """
    if cap is not None:
        nll = nll.clamp(max=cap)
    return -nll.mean()


def npo(nll_sum: torch.Tensor, reference_nll_sum: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative preference optimisation (Zhang et al. 2024, eq. 3):

        L_NPO = (2 / beta) * E[ log(1 + (pi_theta(y|x) / pi_ref(y|x)) ** beta) ]
              = (2 / beta) * E[ softplus(-beta * (NLL_theta - NLL_ref)) ]

    with sequence NLLs (sums). It tends to 0 as the response becomes unlikely, so unlike
    gradient ascent it is bounded below and its gradient vanishes once y is forgotten.
    """
    return 2.0 / beta * F.softplus(-beta * (nll_sum - reference_nll_sum)).mean()


def refusal_nll(nll: torch.Tensor) -> torch.Tensor:
    """L_refusal = E[NLL(y_refusal | x_harmful)] (Yao et al., eq. 2, second term): ordinary
    fine-tuning towards a refusal (or a random normal answer) on the harmful prompts."""
    return nll.mean()


def retain_kl(logits: torch.Tensor, reference_logits: torch.Tensor,
              labels: torch.Tensor) -> torch.Tensor:
    """L_retain = E_t[ KL(p_original(. | x, y_<t) || p_current(. | x, y_<t)) ] over response
    tokens of normal data (Yao et al., eq. 2, third term; forward KL as in their code).

    Only response positions are compared, and the softmax runs on those rows only, which keeps
    memory at (response tokens x vocab) instead of (batch x length x vocab) twice.
    """
    logits, targets = shift(logits, labels)
    reference_logits = reference_logits[:, :-1]
    mask = targets != IGNORE
    if not mask.any():
        return logits.sum() * 0.0
    current = F.log_softmax(logits[mask].float(), dim=-1)
    original = F.log_softmax(reference_logits[mask].float(), dim=-1)
    return F.kl_div(current, original, log_target=True, reduction="batchmean")


def combine(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The weighted sum of eq. 2 over the terms that were computed."""
    return sum(weights[name] * value for name, value in terms.items())
