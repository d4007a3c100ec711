"""The evaluation protocol's two halves: settings are chosen on `validation`, numbers reported
on `test`, and the halves share nothing along any axis an attack varies on (README "Evaluation
protocol").

Probes carry their own validation and test variants (wordings, image prompts, layouts, system
prompts, earlier turns, sampling seeds); behaviour files carry a `split` column where they have
one (the demo world's do), and `split_of` cuts the others the same way on every machine.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal, get_args

Split = Literal["validation", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)


def split_of(key: str) -> Split:
    """The half a key (a behaviour's task phrase) falls in when its source names none: a
    stable hash, so every process and machine cuts an external behaviour file alike."""
    digest = hashlib.sha256(key.strip().lower().encode()).digest()
    return SPLITS[digest[0] % 2]


def check_split(split: str) -> Split:
    """`split` itself, or a ValueError naming the choices."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]


_WORDS = re.compile(r"\{task\}|[a-z0-9']+")
MIN_CONTEXT_WORDS = 2
"""Words beside the `{task}` slot that make a wording a wording: "how to {task}" is one,
"{task}" and "do {task}" are too short to count (they would be inside every form)."""


def wording(template: str) -> tuple[str, ...]:
    """A template's words as a lower-casing model reads them, punctuation dropped, `{task}`
    kept as one word."""
    return tuple(_WORDS.findall(template.lower()))


def contains(outer: str, inner: str) -> bool:
    """Whether form `outer` holds wording `inner` whole (its `{task}` slot and at least
    `MIN_CONTEXT_WORDS` words beside it, in a row): "explain to me how to {task}" contains
    "how to {task}", so a probe built on it is a trained wording with words around it."""
    words, part = wording(outer), wording(inner)
    if "{task}" not in part or len(part) - 1 < MIN_CONTEXT_WORDS:
        return False
    return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))
