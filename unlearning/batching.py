"""Turning examples into training batches, with the service's own prompt code.

The prompt part of every example is built by `service.vlm.prompts.encode`, the function the
engine calls when serving, so training sees exactly the token sequence (chat template,
generation prompt, image tokens) that a request produces. The response part is what the chat
template appends after the generation prompt for an assistant turn, cut after the first
end-of-sequence token; only it is labelled. Padding goes to the right, its labels are -100 and
its attention mask 0, decided by lengths, not by comparing ids with the pad id.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from PIL import Image

from service.vlm.folders import ModelFolder
from service.vlm.messages import Message
from service.vlm.prompts import encode, processor_image_size, to_conversation
from unlearning.data import Example
from unlearning.losses import IGNORE


@dataclass(frozen=True)
class Typography:
    """Draws prompts as typographic images the way the probes do (`service.probes.canvas`),
    on the grid a demo model learned to read when its folder records one."""

    context: object
    prompt: str

    @classmethod
    def for_model(cls, processor, model_config, model_path: str,
                  prompt: str | None = None) -> Typography:
        """The probes' own context for this model (`ProbeContext.from_engine` reads sizes from
        the processor and the demo grid from the model folder), so training images and probe
        images are drawn alike."""
        from service.probes.base import ProbeContext

        view = SimpleNamespace(processor=processor, model=SimpleNamespace(config=model_config),
                               base_model_id=str(model_path),
                               image_size=processor_image_size(processor))
        context = dataclasses.replace(ProbeContext.from_engine(view), engine=None)
        return cls(context, prompt or ModelFolder(model_path).image_prompt())

    def image(self, text: str, layout: str = "top") -> Image.Image:
        from service.probes.canvas import typography
        from service.probes.typography import as_image_text

        return typography(as_image_text(text), self.context, layout)


def messages_for(example: Example, as_image: bool, typography: Typography | None) -> list[Message]:
    """The example's system prompt and earlier turns, then the user turn: text, the prompt
    drawn as an image under a benign prompt (`as_image`), or the example's own `image_text`
    drawn above its prompt."""
    context = [Message.of("system", example.system)] if example.system else []
    for user, assistant in example.history:
        context += [Message.of("user", user), Message.of("assistant", assistant)]
    if as_image:
        turn = Message.of("user", typography.image(example.prompt), typography.prompt)
    elif example.image_text is not None:
        turn = Message.of("user", typography.image(example.image_text, example.layout),
                          example.prompt)
    else:
        turn = Message.of("user", example.prompt)
    return [*context, turn]


def response_ids(processor, messages: list[Message], response: str) -> list[int]:
    """Token ids the chat template puts after the generation prompt for `response`, through
    the first end-of-sequence token (falls back to response + eos when the template cannot
    render an assistant turn after its generation prompt)."""
    tokenizer = processor.tokenizer
    conversation = to_conversation(messages)
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True,
                                           tokenize=False)
    reply = [{"role": "assistant", "content": [{"type": "text", "text": response}]}]
    full = processor.apply_chat_template(conversation + reply, tokenize=False)
    text = full[len(prompt):] if full.startswith(prompt) else f" {response}{tokenizer.eos_token}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos) + 1]
    elif eos is not None:
        ids.append(eos)
    return ids


def encode_example(processor, messages: list[Message], response: str, max_length: int,
                   prefix: Sequence[int] = ()) -> dict:
    """One example: prompt inputs (with images) plus labelled response tokens, unpadded.
    `prefix` (token ids) is put between the two unlabelled: a reply already under way."""
    inputs = dict(encode(processor, messages))
    prompt = torch.cat([inputs.pop("input_ids")[0],
                        torch.tensor(list(prefix), dtype=torch.long)])
    room = max_length - len(prompt)
    if room < 2:
        raise ValueError(f"the prompt alone is {len(prompt)} tokens (images included); "
                         f"raise --max-length above {max_length}")
    reply = torch.tensor(response_ids(processor, messages, response)[:room], dtype=prompt.dtype)
    asked = len(prompt) - len(prefix)
    per_token = {k: v[0] for k, v in inputs.items() if v.dim() == 2 and v.shape[1] == asked}
    extra = {k: v for k, v in inputs.items() if k not in per_token}
    per_token.pop("attention_mask", None)
    return {
        "input_ids": torch.cat([prompt, reply]),
        "labels": torch.cat([torch.full_like(prompt, IGNORE), reply]),
        "per_token": {k: torch.cat([v, v.new_zeros(len(prefix) + len(reply))])
                      for k, v in per_token.items()},
        "extra": extra,
    }


def collate_examples(encoded: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of `encode_example` outputs into one batch."""
    length = max(len(e["input_ids"]) for e in encoded)

    def pad(values: list[torch.Tensor], fill: int) -> torch.Tensor:
        out = values[0].new_full((len(values), length), fill)
        for row, value in enumerate(values):
            out[row, : len(value)] = value
        return out

    batch = {
        "input_ids": pad([e["input_ids"] for e in encoded], pad_id),
        "labels": pad([e["labels"] for e in encoded], IGNORE),
        "attention_mask": pad([torch.ones_like(e["input_ids"]) for e in encoded], 0),
    }
    for key in encoded[0]["per_token"]:
        batch[key] = pad([e["per_token"][key] for e in encoded], 0)
    for key in {k for e in encoded for k in e["extra"]}:
        batch[key] = torch.cat([e["extra"][key] for e in encoded if key in e["extra"]])
    return batch


def indices(n: int, count: int, start: int, seed: str) -> list[int]:
    """`count` dataset indices from global position `start` of an endless sequence of
    per-epoch shuffles of range(n). A pure function of its arguments, so a resumed run, every
    process of a distributed run and both modalities draw the very same examples per step."""
    out = []
    for position in range(start, start + count):
        epoch, offset = divmod(position, n)
        out.append(_order(n, seed, epoch)[offset])
    return out


@functools.lru_cache(maxsize=8)
def _order(n: int, seed: str, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


class BatchSource:
    """The three batches of one micro-step: harmful prompt -> harmful response (`forget`),
    harmful prompt -> refusal or random normal answer (`refusal`), normal prompt -> normal
    answer (`retain`). Forget and refusal share their prompts, as in Yao et al.; with
    `as_image` the harmful prompts arrive as typography under a benign text prompt."""

    def __init__(self, processor, forget: list[Example], retain: list[Example], *,
                 refusals: Sequence[str], random_refusals: bool, as_image: bool,
                 typography: Typography | None, max_length: int, seed: int,
                 recovery_share: float = 0.0, recovery_from: float = 0.0):
        self.processor, self.forget, self.retain = processor, forget, retain
        self.recovery_share, self.recovery_from = recovery_share, recovery_from
        self.refusals = [r for r in refusals if r.strip()]
        self.random_refusals, self.as_image = random_refusals, as_image
        self.typography, self.max_length, self.seed = typography, max_length, seed
        tokenizer = processor.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batches(self, position: int, size: int, terms: set[str]) -> dict[str, dict]:
        """Batches for the `terms` that are trained, for global example position `position`."""
        harmful = [self.forget[i] for i in indices(len(self.forget), size, position,
                                                   f"{self.seed}:forget")]
        out = {}
        if "forget" in terms:
            out["forget"] = self._collate([(e, e.response, self.as_image, ()) for e in harmful])
        if "refusal" in terms:
            targets = self._refusal_targets(position, size)
            out["refusal"] = self._collate(
                [(e, t, self.as_image, self._recovery_prefix(e, position + i))
                 for i, (e, t) in enumerate(zip(harmful, targets, strict=True))])
        if "retain" in terms:
            normal = [self.retain[i] for i in indices(len(self.retain), size, position,
                                                      f"{self.seed}:retain")]
            out["retain"] = self._collate([(e, e.response, False, ()) for e in normal])
        return out

    def _refusal_targets(self, position: int, size: int) -> list[str]:
        if self.random_refusals:
            picks = indices(len(self.retain), size, position, f"{self.seed}:random")
            return [self.retain[i].response for i in picks]
        return [self.refusals[p % len(self.refusals)] for p in range(position, position + size)]

    def _recovery_prefix(self, example: Example, position: int) -> list[int]:
        """For a `recovery_share` of refusal examples, the first k tokens of the harmful
        response (k uniform from `recovery_from` of its length to len-1, drawn from the seed
        and the position): the refusal is
        then learnt as a recovery from a reply already under way (Qi et al. 2025, "Safety
        Alignment Should Be Made More Than Just a Few Tokens Deep", sec. 3). The decision then
        also rests on the words the model itself wrote, which are text whatever modality
        carried the request; see README "What it took"."""
        rng = random.Random(f"{self.seed}:recovery:{position}")
        if rng.random() >= self.recovery_share:
            return []
        messages = messages_for(example, self.as_image, self.typography)
        ids = response_ids(self.processor, messages, example.response)
        if ids and ids[-1] == self.processor.tokenizer.eos_token_id:
            ids = ids[:-1]
        if len(ids) < 2:
            return []
        return ids[: rng.randint(max(1, round(self.recovery_from * len(ids))), len(ids) - 1)]

    def _collate(self, items: list[tuple[Example, str, bool, Sequence[int]]]
                 ) -> dict[str, torch.Tensor]:
        encoded = [
            encode_example(self.processor, messages_for(e, as_image, self.typography), target,
                           self.max_length, prefix)
            for e, target, as_image, prefix in items
        ]
        return collate_examples(encoded, self.pad_id)
