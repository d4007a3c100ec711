"""One batched `generate` over rows that each keep their own request settings.

transformers' `generate` decodes a batch with one set of settings, and its continuous-batching
manager takes token ids only (no images, no peft adapters). So rows are left-padded into one
batch, peft serves each row with its own adapter (`adapter_names=`, `"__base__"` for the base
model; a batch whose rows share one adapter sets it globally instead, which is cheaper; an
adapter scoped to the reply gets each row's offset, `service.vlm.adapters.activation_offsets`),
and two hooks make every row behave as if decoded alone:

- `RowSampler` (a logits processor) picks every row's next token itself: logit bias and
  presence/frequency penalties, eos held back until `min_tokens`, then greedy or sampling with
  the row's own seeded generator through transformers' own temperature/top-k/top-p warpers. It
  records raw log-probabilities for rows that asked for them. `generate` itself runs greedy, so
  it takes the one token the sampler left.
- `RowMonitor` (a stopping criterion) streams each row's new text (a row that wants no deltas
  is detokenised once, at its end, unless it has stop sequences), applies its stop sequences,
  `max_tokens`, deadline and cancellation, and finishes that row alone.

A sampled row draws from a generator seeded with its own seed, so its text does not depend on
what else is in the batch, and a batch of one gives exactly what `generate` gives with
`torch.manual_seed(seed)` (tests/vlm/test_batching.py).
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    StoppingCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from service.vlm.adapters import activation_offsets
from service.vlm.protocol import LOGPROB_FLOOR, Delta, SamplingParams, Stream, TokenScore
from service.vlm.stops import cut_at_stop

logger = logging.getLogger(__name__)

BASE_ROW = "__base__"
"""peft's name for "no adapter" in a mixed-adapter batch."""

_PADDED_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


@dataclass
class Row:
    """One choice of one request, as the decoding loop sees it."""

    stream: Stream
    inputs: dict
    params: SamplingParams
    max_tokens: int
    adapter: str | None
    tokens: list[int] = field(default_factory=list)
    emitted: int = 0
    pending: list[TokenScore] = field(default_factory=list)
    done: bool = False
    generator: torch.Generator | None = None
    warpers: list = field(default_factory=list)


def model_sampling(generation_config: GenerationConfig) -> dict:
    """The model's sampling settings, unset ones filled with transformers' own defaults (top-k
    50 among them), so that a row samples exactly as `generate` would."""
    defaults = GenerationConfig._get_default_generation_params()
    keys = ("do_sample", "temperature", "top_k", "top_p")
    own = {key: getattr(generation_config, key, None) for key in keys}
    return {key: defaults[key] if value is None else value for key, value in own.items()}


def prepare_row(row: Row, model: dict) -> None:
    """Resolve the row's sampling against the model's settings (`model_sampling`;
    `temperature=None` keeps the model's choice, as vLLM does) and seed its generator."""
    p, row.warpers, row.generator = row.params, [], None
    if p.temperature is None:
        sampling, temperature = bool(model["do_sample"]), model["temperature"]
    else:
        sampling, temperature = p.temperature > 0, p.temperature
    if not sampling:
        return
    top_p = model["top_p"] if p.top_p is None else p.top_p
    top_k = model["top_k"]
    if temperature != 1.0:
        row.warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        row.warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        row.warpers.append(TopPLogitsWarper(top_p))
    seed = p.seed + row.stream.index if p.seed is not None else random.getrandbits(63)
    row.generator = torch.Generator().manual_seed(seed)


def collate(rows: list[Row], pad_id: int) -> dict:
    """Left-pad the token tensors and stack the image tensors of image rows in row order (how
    LLaVA-style and Qwen2-VL-style models match images to their placeholder tokens)."""
    width = max(r.inputs["input_ids"].shape[1] for r in rows)
    batch: dict = {}
    for key in {k for r in rows for k in r.inputs}:
        values = [r.inputs[key] for r in rows if key in r.inputs]
        if key in _PADDED_KEYS:
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.cat([
                torch.nn.functional.pad(v, (width - v.shape[1], 0), value=fill) for v in values
            ])
        else:
            batch[key] = torch.cat(values)
    return batch


class RowSampler(LogitsProcessor):
    """Chooses each row's next token; returns scores that leave only that token possible."""

    def __init__(self, rows: list[Row], eos_ids: set[int], tokenizer):
        self.rows, self.eos = rows, sorted(eos_ids)
        self.tokenizer = tokenizer

    def __call__(self, input_ids, scores):
        raw = scores.float()
        adjusted = self._adjusted(raw)
        chosen = adjusted.argmax(-1)  # greedy rows, all at once
        for i, row in enumerate(self.rows):
            if row.done:
                continue
            if row.generator is not None:
                chosen[i] = self._sample(row, input_ids[i: i + 1], adjusted[i: i + 1])
            if row.params.logprobs is not None:
                row.pending.append(self._logprob(raw[i], int(chosen[i]), row.params.logprobs))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(self.rows), device=scores.device), chosen] = 0.0
        return out

    def _adjusted(self, raw):
        """Logit bias, presence/frequency penalties and eos held back before `min_tokens`, on
        the rows that ask for them (a copy only when some row does; the hold-back is one
        indexing for all its rows)."""
        live = [(i, row) for i, row in enumerate(self.rows) if not row.done]
        biased = [(i, row) for i, row in live if row.params.logit_bias
                  or row.params.presence_penalty or row.params.frequency_penalty]
        holding = [i for i, row in live if len(row.tokens) < row.params.min_tokens]
        if not biased and not holding:
            return raw
        scores = raw.clone()
        for i, row in biased:
            p = row.params
            for token, bias in p.logit_bias.items():
                scores[i, token] += bias
            if row.tokens and (p.presence_penalty or p.frequency_penalty):
                counts = torch.bincount(torch.tensor(row.tokens), minlength=scores.shape[1])
                counts = counts[: scores.shape[1]].to(scores.device, scores.dtype)
                scores[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
        if holding:
            rows = torch.tensor(holding, device=scores.device)[:, None]
            scores[rows, torch.tensor(self.eos, device=scores.device)] = float("-inf")
        return scores

    @staticmethod
    def _sample(row: Row, ids, scores) -> int:
        for warp in row.warpers:
            scores = warp(ids, scores)
        probs = torch.softmax(scores, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _logprob(self, raw, token: int, top: int) -> TokenScore:
        logprobs = torch.log_softmax(raw, dim=-1)
        best = torch.topk(logprobs, top).indices.tolist() if top else []
        name = self.tokenizer.decode

        def value(t: int) -> float:
            return max(float(logprobs[t]), LOGPROB_FLOOR)

        return TokenScore(name([token]), value(token), tuple((name([t]), value(t))
                                                                for t in best))


class RowMonitor(StoppingCriteria):
    """Streams every row's new text and finishes rows one by one (see module docstring)."""

    def __init__(self, rows: list[Row], eos_ids: set[int], tokenizer, deadline: float):
        self.rows, self.eos, self.tokenizer, self.deadline = rows, eos_ids, tokenizer, deadline

    def __call__(self, input_ids, scores, **kwargs):
        now = time.monotonic()
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last, strict=True):
            if not row.done:
                self._step(row, token, now)
        return torch.tensor([r.done for r in self.rows], device=input_ids.device)

    def _step(self, row: Row, token: int, now: float) -> None:
        if row.stream.cancelled:
            return self.close(row, "stop", "client gone")
        row.tokens.append(token)
        if token in self.eos:
            return self.close(row, "stop")
        text = None  # a row that wants no deltas and has no stops is detokenised at its end
        if row.params.deltas or row.params.stop:
            text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut, stopped = cut_at_stop(text, row.params.stop)
            if stopped:
                return self.close(row, "stop", text=cut)
        if len(row.tokens) >= row.max_tokens or now >= self.deadline:
            return self.close(row, "length", text=text)
        if not row.params.deltas:
            return None
        hold = max((len(s) for s in row.params.stop), default=1) - 1
        safe = len(text) - hold
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            safe = min(safe, len(text) - 1)
        self._emit(row, text[row.emitted: max(safe, row.emitted)])

    def _emit(self, row: Row, text: str) -> None:
        if text or row.pending:
            row.stream.push(Delta(text, tuple(row.pending)))
            row.emitted += len(text)
            row.pending = []

    def close(self, row: Row, reason: str, why: str | None = None, text: str | None = None):
        """Finish `row`: emit the text not yet sent, then its finish reason."""
        if text is None:
            text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        self._emit(row, text[row.emitted:])
        row.done = True
        row.stream.finish(reason, len(row.tokens))
        if why:
            logger.info("generation halted after %d tokens (%s)", len(row.tokens), why)


def _adapter_routing(model, rows: list[Row], peft: bool):
    """How the batch's rows reach their adapters: (a context for the generation, extra
    `generate` arguments). Rows on different adapters use peft's per-row dispatch; rows that
    share one adapter set it globally, which costs less per layer."""
    adapters = {r.adapter for r in rows}
    if not peft:
        return nullcontext(), {}
    if len(adapters) > 1:
        return nullcontext(), {"adapter_names": [r.adapter or BASE_ROW for r in rows]}
    (only,) = adapters
    if only is None:
        return model.disable_adapter(), {}
    model.set_adapter(only)
    return nullcontext(), {}


def run_batch(model, rows: list[Row], *, tokenizer, eos_ids: set[int], pad_id: int,
              timeout_s: float | None, peft: bool) -> None:
    """Decode `rows` together until each has finished; results go to the rows' streams."""
    settings = model_sampling(model.generation_config)
    for row in rows:
        prepare_row(row, settings)
        row.stream.started()
    monitor = RowMonitor(rows, eos_ids, tokenizer, time.monotonic() + (timeout_s or float("inf")))
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max(r.max_tokens for r in rows),
        eos_token_id=sorted(eos_ids), pad_token_id=pad_id,
    )
    adapters, extra = _adapter_routing(model, rows, peft)
    inputs = collate(rows, pad_id)
    offsets = activation_offsets(model, inputs["input_ids"], [r.adapter for r in rows]) \
        if peft else None
    if offsets is not None:
        extra["alora_offsets"] = offsets
    with torch.inference_mode(), adapters:
        model.generate(
            **inputs, generation_config=config, **extra,
            logits_processor=[RowSampler(rows, eos_ids, tokenizer)],
            stopping_criteria=[monitor],
        )
    for row in rows:  # generate ended on its own limit before a row's criterion fired
        if not row.done:
            monitor.close(row, "length")
