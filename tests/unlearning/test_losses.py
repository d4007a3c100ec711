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


def states(seed: int = 0, layers: int = 2, batch_size: int = 2, length: int = 5, size: int = 8):
    """Random hidden states, one `(batch, length, hidden)` tensor per layer."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, length, size, generator=g) for _ in range(layers)]


def padded(batch_size: int = 2, length: int = 5) -> torch.Tensor:
    """An attention mask whose row 1 ends in two padding positions."""
    mask = torch.ones(batch_size, length, dtype=torch.long)
    mask[1, -2:] = 0
    return mask


@pytest.mark.parametrize("distance", ["l2", "cosine", "mse"])
def test_hidden_distance_is_zero_for_identical_states_and_grows_with_the_distance(distance):
    base, mask = states(), padded()
    assert losses.hidden_distance(base, [h.clone() for h in base], mask, distance).item() \
        == pytest.approx(0, abs=1e-6)
    noise = states(seed=1)
    near = losses.hidden_distance([h + 0.1 * n for h, n in zip(base, noise, strict=True)], base,
                                  mask, distance)
    far = losses.hidden_distance([h + 1.0 * n for h, n in zip(base, noise, strict=True)], base,
                                 mask, distance)
    assert 0 < near.item() < far.item()


def test_hidden_distance_l2_and_mse_are_the_masked_means_of_their_definitions():
    current, base, mask = states(seed=1), states(seed=2), padded()
    difference = torch.stack(current) - torch.stack(base)  # (layers, batch, length, hidden)
    keep = mask.bool()
    l2 = difference.norm(dim=-1)[:, keep].mean()
    mse = difference.pow(2).mean(dim=-1)[:, keep].mean()
    assert losses.hidden_distance(current, base, mask, "l2").item() == pytest.approx(l2.item())
    assert losses.hidden_distance(current, base, mask, "mse").item() == pytest.approx(mse.item())


def test_hidden_distance_cosine_ignores_the_norm_and_sees_the_direction():
    base, mask = states(), padded()
    scaled = [3.0 * h for h in base]
    assert losses.hidden_distance(scaled, base, mask, "cosine").item() == pytest.approx(0, abs=1e-6)
    assert losses.hidden_distance(scaled, base, mask, "l2").item() > 1.0
    flipped = [-h for h in base]
    assert losses.hidden_distance(flipped, base, mask, "cosine").item() == pytest.approx(2.0)


def test_padding_positions_do_not_influence_the_representation_terms():
    current, base, mask = states(seed=1), states(seed=2), padded()
    changed = [h.clone() for h in current]
    for h in changed:
        h[1, -2:] += 100.0  # row 1's padding
    for distance in ("l2", "cosine", "mse"):
        assert losses.hidden_distance(changed, base, mask, distance).item() == pytest.approx(
            losses.hidden_distance(current, base, mask, distance).item())
    assert losses.reroute(changed, base, mask).item() == pytest.approx(
        losses.reroute(current, base, mask).item())
    target = torch.full((8,), 2.0)
    assert losses.rmu_forget(changed[0], target, mask).item() == pytest.approx(
        losses.rmu_forget(current[0], target, mask).item())


def test_reroute_is_one_for_the_original_states_and_zero_once_orthogonal_or_opposite():
    base, mask = states(), padded()
    assert losses.reroute([h.clone() for h in base], base, mask).item() == pytest.approx(1.0)
    assert losses.reroute([-h for h in base], base, mask).item() == pytest.approx(0, abs=1e-6)
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # one row, two positions, hidden size 2
    orthogonal = torch.tensor([[[0.0, 5.0], [-3.0, 0.0]]])
    assert losses.reroute([orthogonal], [x], torch.ones(1, 2)).item() == pytest.approx(0, abs=1e-7)
    half = torch.tensor([[[1.0, 3.0 ** 0.5], [0.0, -1.0]]])  # cos 1/2 and -1 (clipped to 0)
    assert losses.reroute([half], [x], torch.ones(1, 2)).item() == pytest.approx(0.25)


def test_reroute_gradient_turns_the_states_away_from_the_original():
    base, mask = states(), padded()
    current = [(h + 0.5 * n).requires_grad_(True) for h, n in zip(base, states(1), strict=True)]
    before = losses.reroute(current, base, mask)
    before.backward()
    stepped = [h.detach() - 1.0 * h.grad for h in current]
    assert losses.reroute(stepped, base, mask).item() < before.item()


def test_reroute_schedule_moves_from_rerouting_to_retention():
    assert losses.reroute_schedule(0, 100) == (1.0, 0.0)
    assert losses.reroute_schedule(50, 100) == (0.75, 0.25)
    assert losses.reroute_schedule(100, 100) == (0.5, 0.5)


def test_rmu_pulls_the_states_to_a_fixed_scaled_random_direction():
    u = losses.rmu_direction(16)
    assert u.norm().item() == pytest.approx(1.0)
    assert (u >= 0).all() and torch.equal(u, losses.rmu_direction(16))
    mask = padded()
    target = 6.5 * u
    at_target = target.expand(2, 5, 16).clone()
    assert losses.rmu_forget(at_target, target, mask).item() == pytest.approx(0, abs=1e-10)
    hidden = torch.zeros(2, 5, 16)
    assert losses.rmu_forget(hidden, target, mask).item() == pytest.approx(6.5 ** 2 / 16)


def test_representation_terms_without_unmasked_positions_are_zero_with_a_graph():
    current = [h.requires_grad_(True) for h in states()]
    mask = torch.zeros(2, 5)
    for value in (losses.hidden_distance(current, states(1), mask),
                  losses.reroute(current, states(1), mask)):
        value.backward()
        assert value.item() == 0
