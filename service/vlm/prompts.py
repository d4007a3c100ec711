"""Building model inputs from chat messages with the processor's own chat template."""

from __future__ import annotations

from collections.abc import Sequence

from service.errors import BadRequest
from service.vlm.messages import ImagePart, Message


def processor_image_size(processor) -> tuple[int, int]:
    """(height, width) of the images the processor feeds the vision tower."""
    ip = processor.image_processor
    size = ip.crop_size if getattr(ip, "do_center_crop", False) else ip.size
    if "height" in size:
        return size["height"], size["width"]
    edge = size.get("shortest_edge") or size.get("longest_edge")
    return edge, edge


def to_conversation(messages: Sequence[Message]) -> list[dict]:
    """Hugging Face chat format: every content a list of parts, images as `{"type": "image"}`."""
    return [
        {
            "role": m.role,
            "content": [
                {"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
                for p in m.content
            ],
        }
        for m in messages
    ]


def generation_prompt_ids(processor) -> list[int]:
    """The token ids the chat template appends to open the assistant's turn (the generation
    prompt: `<|assistant|>` for the demo, `ASSISTANT:` for LLaVA-1.5): the ids of a prompt built
    with it, past those of the same prompt built without it.

    An adapter scoped to the assistant turn (peft's Activated LoRA, `alora_invocation_tokens`)
    starts at the last occurrence of these ids, so every prompt `encode` builds activates it
    exactly at the reply.

    Raises:
        ValueError: when the template adds no generation prompt, or the prompt without it is not
            a prefix of the prompt with it (no id sequence then marks the turn).
    """
    conversation = to_conversation([Message.of("user", "hello")])
    with_turn, without = (
        processor.tokenizer(processor.apply_chat_template(conversation, tokenize=False,
                                                          add_generation_prompt=opened),
                            add_special_tokens=False)["input_ids"]
        for opened in (True, False))
    if len(with_turn) <= len(without) or with_turn[: len(without)] != without:
        raise ValueError("the chat template adds no generation prompt that can be told apart "
                         "from the prompt before it; an adapter cannot be scoped to the reply")
    return with_turn[len(without):]


def encode(processor, messages: Sequence[Message], max_prompt_tokens: int | None = None):
    """Tokenise a conversation (with its images) ready for `generate`.

    The prompt ends with the template's generation prompt. Raises BadRequest when the prompt,
    image tokens included, is longer than `max_prompt_tokens`.
    """
    prompt = processor.apply_chat_template(
        to_conversation(messages), add_generation_prompt=True, tokenize=False
    )
    images = [image for m in messages for image in m.images]
    inputs = processor(text=prompt, images=images or None, return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    if max_prompt_tokens is not None and length > max_prompt_tokens:
        raise BadRequest(
            f"the prompt is {length} tokens (images included); the limit is {max_prompt_tokens}",
            param="messages",
            code="context_length_exceeded",
        )
    return inputs
