"""The loss terms of textual unlearning, one small pure function each.

Notation (Yao et al. 2023, "Large Language Model Unlearning", eq. 2):

    L = w_forget * L_forget + w_refusal * L_refusal + w_retain * L_retain

All terms score *response tokens only*: `labels` hold -100 on the prompt (image tokens
included) and on padding, which is the whole difference between unlearning a response and
unlearning the prompt that asked for it. Masks come from the labels, never from comparing ids
with the pad id (which breaks whenever pad == eos).

The representation terms (`hidden_distance`, `reroute`, `rmu_forget`) instead compare hidden
states at chosen decoder layers over every non-padding position of a row (prompt, image tokens
and response), masked by the batch's `attention_mask`, as circuit breakers (Zou et al. 2024,
arXiv 2406.04313) and RMU (Li et al. 2024, arXiv 2403.03218) do. They take one `(batch, length,
hidden)` tensor per layer and average over layers and positions alike.
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


def _stack(hidden) -> torch.Tensor:
    """`(layers, batch, length, hidden)` in float32 from one tensor per layer."""
    return torch.stack([h.float() for h in hidden])


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` `(layers, batch, length)` over the positions where `mask`
    `(batch, length)` is true, in every layer; 0 (with a graph) when nothing is unmasked."""
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp(min=1)


def hidden_distance(hidden, reference, mask: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """L_retain (hidden) = mean over layers l and non-padding positions (b, t) of
    d(h_l[b, t], h^base_l[b, t]), with `h` the adapted model's and `h^base` the original's states.

        l2:     d = ||h - h^base||_2          (circuit breakers' retain term, Zou et al. 2024,
                                               Algorithm 1: L_r = ||rep_orig - rep_cb||_2)
        cosine: d = 1 - cos(h, h^base)        (direction only; norms may drift)
        mse:    d = ||h - h^base||_2^2 / dim  (RMU's retain term, Li et al. 2024, as its code
                                               computes it: the mean over the dimensions)

    Args:
        hidden, reference: one `(batch, length, hidden)` tensor per layer (same layers).
        mask: `(batch, length)`, true on the positions that count (the attention mask).
    """
    current, original = _stack(hidden), _stack(reference)
    if distance == "l2":
        values = (current - original).norm(dim=-1)
    elif distance == "cosine":
        values = 1 - F.cosine_similarity(current, original, dim=-1)
    elif distance == "mse":
        values = (current - original).pow(2).mean(dim=-1)
    else:
        raise ValueError(f"hidden_distance: {distance!r} is not one of l2, cosine, mse")
    return _masked_mean(values, mask.bool())


def reroute(hidden, reference, mask: torch.Tensor) -> torch.Tensor:
    """Representation rerouting, the circuit-breaker loss (Zou et al. 2024, Algorithm 1):

        L_cb = mean over target layers l and non-padding positions (b, t) of
               ReLU(cos(h_l[b, t], h^base_l[b, t]))

    on the harmful rows, with `h^base` the original model's states. It is 1 while the adapted
    states still point where the original ones did, and 0 once they are orthogonal or opposite
    (the ReLU stops the push there, so states are rerouted, not mirrored). Note that at the
    start of LoRA training (B = 0) `h == h^base`, where the cosine's gradient vanishes; the other
    terms move the adapter off that point.
    """
    cosine = F.cosine_similarity(_stack(hidden), _stack(reference), dim=-1)
    return _masked_mean(F.relu(cosine), mask.bool())


def reroute_schedule(step: int, max_steps: int) -> tuple[float, float]:
    """The circuit-breaker coefficients at training progress t / T (Zou et al. 2024,
    Algorithm 1): `(c_forget, c_retain) = (1 - t / (2T), t / (2T))`, multipliers of alpha
    (here of the configured forget and retain weights): rerouting first, retention later."""
    progress = step / (2 * max_steps)
    return 1.0 - progress, progress


def rmu_direction(size: int, seed: int = 0) -> torch.Tensor:
    """RMU's fixed random unit vector u (Li et al. 2024, WMDP / RMU): each entry drawn from
    U[0, 1), then normalised; the fixed seed keeps it the same on every step and process."""
    u = torch.rand(size, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


def rmu_forget(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's forget term (Li et al. 2024, "The WMDP Benchmark", RMU): push the forget rows'
    states at one layer towards a fixed random direction scaled up, `target = c * u`:

        L_forget = mean over non-padding positions (b, t) of ||h[b, t] - c * u||_2^2 / dim

    (the mean over the dimensions, as RMU's code computes it with `mse_loss`).

    Args:
        hidden: `(batch, length, hidden)`, the adapted model's states at the RMU layer.
        target: `(hidden,)`, c * u.
        mask: `(batch, length)`, true on the positions that count (the attention mask).
    """
    values = (hidden.float() - target.float()).pow(2).mean(dim=-1)
    return _masked_mean(values[None], mask.bool())


def combine(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The weighted sum of eq. 2 over the terms that were computed."""
    return sum(weights[name] * value for name, value in terms.items())
