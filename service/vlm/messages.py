"""Chat messages as the runtime sees them: decoded images, no transport details.

The HTTP layer turns OpenAI content parts into these; probes and the unlearning tools build
them directly, so every caller reaches the model through the same prompt code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: Image.Image


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[Part, ...]

    @classmethod
    def of(cls, role: Role, *parts: str | Image.Image) -> Message:
        """Build a message from strings and PIL images in display order."""
        return cls(
            role,
            tuple(TextPart(p) if isinstance(p, str) else ImagePart(p) for p in parts),
        )

    @property
    def images(self) -> list[Image.Image]:
        return [p.image for p in self.content if isinstance(p, ImagePart)]


def modality(messages: list[Message] | tuple[Message, ...]) -> Literal["text", "image"]:
    """`image` when any message carries an image: the label used by metrics and reports."""
    return "image" if any(m.images for m in messages) else "text"
