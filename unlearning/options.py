"""Dataclass fields that document themselves (the peft / trl config convention).

`option` and `required` put each field's help text in its metadata, where
`transformers.HfArgumentParser` reads it for `--help` (and `add_argument`'s other keywords:
the list action, aliases). The training configs (`unlearning.config`) and the demo recipe
(`unlearning.demo.recipe`) declare their fields with them. This module imports nothing of the
project, so the demo model's cache key (the source of every module its build imports) does not
move when a training setting does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import field


class Accumulate(argparse.Action):
    """A list flag that adds up: `--x a b --x c` gives [a, b, c]. Unlike argparse's `extend`,
    the first use replaces the field's default instead of adding to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [*([] if items is self.default else items), *values])


def _metadata(help: str, many: bool, aliases: Sequence[str]) -> dict:
    """Field metadata; `HfArgumentParser` passes it to `add_argument`."""
    metadata: dict = {"help": help}
    if many:
        metadata["action"] = Accumulate
    if aliases:
        metadata["aliases"] = list(aliases)
    return metadata


def option(default, help: str, many: bool = False, aliases: Sequence[str] = ()):
    """A dataclass field with a default and help text.

    Args:
        default: the value; a list or tuple becomes a factory of fresh lists.
        help: what the field means, shown by `--help`.
        many: a list flag whose uses add up (`Accumulate`).
        aliases: more flag names, e.g. `("--rank",)` beside peft's `--r`.
    """
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default),
                     metadata=_metadata(help, many, aliases))
    return field(default=default, metadata=_metadata(help, many, aliases))


def required(help: str, many: bool = False):
    """A dataclass field without a default (a required flag), with help text."""
    return field(metadata=_metadata(help, many, ()))
