"""The loss terms as pure functions: masking, signs, bounds, and agreement with the equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unlearning import losses

IGNORE = losses.IGNORE


def batch(seed: int = 0, batch_size: int = 2, length: int = 6, vocab: int = 11):
    """Random logits and labels whose first two positions are prompt and last one padding."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, length, vocab, generator=g)
    labels = torch.randint(0, vocab, (batch_size, length), generator=g)
    labels[:, :2] = IGNORE
    labels[1, -1] = IGNORE
    return logits, labels


def test_token_nll_matches_cross_entropy_on_response_tokens_only():
    logits, labels = batch()
    nll, mask = losses.token_nll(logits, labels)
    assert mask.tolist() == [[False, True, True, True, True], [False, True, True, True, False]]
    expected = F.cross_entropy(logits[0, 1:5], labels[0, 2:6], reduction="none")
    assert torch.allclose(nll[0, 1:], expected)
    assert nll[~mask].abs().sum() == 0


def test_masked_positions_do_not_influence_any_term():
    logits, labels = batch()
    changed = logits.clone()
    changed[:, 0] += 100.0  # predicts a prompt token (label masked)
    changed[1, -2] -= 100.0  # predicts padding of row 1
    for reduce in ("mean", "sum"):
        assert torch.allclose(losses.sequence_nll(logits, labels, reduce),
                              losses.sequence_nll(changed, labels, reduce))
    assert losses.retain_kl(changed, logits, labels).item() == pytest.approx(0, abs=1e-6)
    assert losses.retain_kl(logits, changed, labels).item() == pytest.approx(0, abs=1e-6)


def test_sequence_nll_mean_is_sum_over_response_length():
    logits, labels = batch()
    total = losses.sequence_nll(logits, labels, "sum")
    mean = losses.sequence_nll(logits, labels, "mean")
    assert torch.allclose(total, mean * torch.tensor([4.0, 3.0]))


def test_gradient_ascent_is_negative_nll_and_its_step_raises_the_nll():
    logits, labels = batch()
    logits.requires_grad_(True)
    nll = losses.sequence_nll(logits, labels)
    loss = losses.gradient_ascent(nll)
    assert torch.allclose(loss, -nll.mean())
    loss.backward()
    stepped = logits.detach() - 0.5 * logits.grad
    assert (losses.sequence_nll(stepped, labels) > nll.detach()).all()


def test_gradient_ascent_cap_stops_the_push_of_forgotten_examples():
    nll = torch.tensor([2.0, 9.0], requires_grad=True)
    loss = losses.gradient_ascent(nll, cap=6.0)
    loss.backward()
    assert loss.item() == pytest.approx(-(2.0 + 6.0) / 2)
    assert nll.grad.tolist() == [-0.5, 0.0]


def test_npo_matches_its_definition_and_is_bounded():
    beta = 0.1
    nll = torch.tensor([5.0, 7.0])
    reference = torch.tensor([5.0, 4.0])
    ratio = torch.exp(-(nll - reference))  # pi_theta / pi_ref
    expected = (2 / beta * torch.log1p(ratio ** beta)).mean()
    assert losses.npo(nll, reference, beta).item() == pytest.approx(expected.item())
    assert losses.npo(reference, reference, beta).item() == pytest.approx(2 / beta * math.log(2))
    far = losses.npo(torch.tensor([1e4]), torch.tensor([0.0]), beta)
    assert 0 <= far.item() < 1e-6


def test_npo_gradient_raises_the_nll_and_vanishes_once_forgotten():
    nll = torch.tensor([3.0, 300.0], requires_grad=True)
    losses.npo(nll, torch.tensor([3.0, 3.0]), beta=0.1).backward()
    assert nll.grad[0] < 0  # descending the loss increases the NLL
    assert abs(nll.grad[1]) < 1e-6


def test_refusal_nll_is_the_mean():
    assert losses.refusal_nll(torch.tensor([1.0, 3.0])).item() == 2.0


def test_retain_kl_is_forward_kl_from_the_original_over_response_tokens():
    logits, labels = batch(seed=1)
    reference, _ = batch(seed=2)
    assert losses.retain_kl(logits, logits.clone(), labels).item() == pytest.approx(0, abs=1e-6)
    value = losses.retain_kl(logits, reference, labels)
    mask = labels[:, 1:] != IGNORE
    p = F.softmax(reference[:, :-1][mask], -1)
    q = F.log_softmax(logits[:, :-1][mask], -1)
    expected = (p * (p.log() - q)).sum(-1).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert value.item() > 0


def test_retain_kl_without_response_tokens_is_zero_with_a_graph():
    logits, labels = batch()
    labels[:] = IGNORE
    logits.requires_grad_(True)
    value = losses.retain_kl(logits, logits.detach(), labels)
    value.backward()
    assert value.item() == 0


def test_combine_weights_the_terms_that_were_computed():
    terms = {"forget": torch.tensor(-2.0), "retain": torch.tensor(0.5)}
    total = losses.combine(terms, {"forget": 0.5, "refusal": 1.0, "retain": 1.0})
    assert total.item() == pytest.approx(-0.5)
