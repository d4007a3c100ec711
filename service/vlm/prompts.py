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
