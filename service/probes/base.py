"""What a probe is, what it produces, and the registry that finds probes by name.

Probes are small declarative classes in the style of garak: a family, a modality, a goal and a
`prompts()` generator that turns one harmful behaviour into chat conversations. They never call
the model (except white-box probes, which read its vision encoder through the context), so the
same probe feeds the service's scheduled runs, the CLI and the unlearning evaluation.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from service.probes.behaviors import Behavior
from service.vlm.folders import ModelFolder
from service.vlm.messages import Message, TextPart

Modality = Literal["text", "image"]

PROBE_MODULES = ("service.probes.text", "service.probes.visual", "service.probes.adversarial")
"""Modules whose import registers the built-in probes; imported on first registry lookup so
that `import service.probes` stays free of Pillow drawing and torch."""

_PROBES: dict[str, type[Probe]] = {}


class ProbeUnsupported(Exception):
    """The probe cannot attack this model (e.g. a white-box attack on an unknown vision
    pipeline); runs skip it and say why in the report."""


@dataclass(frozen=True)
class ProbeContext:
    """What probes may know about the model under test.

    Attributes:
        image_size: (height, width) the processor feeds the vision tower; images are drawn at
            this size so no resize blurs the typography.
        patch_size: the vision tower's patch side; typography slots are aligned to it.
        cell: (width, height) of a typography word slot when the model prescribes one (the
            demo model records the layout it learned to read); `None` derives it from the
            image and patch size.
        font_size: the font size that goes with a prescribed cell; `None` is the renderer's
            default there (what the demo model was trained on), else scaled with the slot.
        engine: the served engine, needed only by white-box probes (`needs_engine`).
        cache_dir: where white-box probes keep optimised images between runs; `None` keeps
            them in memory only.
    """

    image_size: tuple[int, int] = (128, 128)
    patch_size: int = 16
    cell: tuple[int, int] | None = None
    font_size: int | None = None
    engine: Any = None
    cache_dir: Path | None = None

    @classmethod
    def from_engine(cls, engine, cache_dir: str | Path | None = None) -> ProbeContext:
        """Read image and patch size from the engine's processor (or vision config), and the
        typography cell (and font size) from the model folder's demo world when it has one."""
        patch = getattr(engine.processor, "patch_size", None)
        if not patch:
            vision = getattr(engine.model.config, "vision_config", None)
            patch = getattr(vision, "patch_size", None) or cls.patch_size
        world = ModelFolder(engine.base_model_id).world()
        return cls(
            image_size=tuple(engine.image_size),
            patch_size=int(patch),
            cell=world.cell if world else None,
            font_size=world.font_size if world else None,
            engine=engine,
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
        )


@dataclass(frozen=True)
class Attempt:
    """One conversation a probe sends, with what it was built from.

    `image_text` is the text the image carries (drawn, or for adversarial images encoded), kept
    because reports cannot show the image itself.
    """

    probe: str
    family: str
    modality: Modality
    behavior: Behavior
    messages: tuple[Message, ...]
    image_text: str | None = None

    @property
    def prompt_text(self) -> str:
        """The user-visible text of the conversation, images shown as `[image]`."""
        return "\n".join(
            f"{m.role}: "
            + " ".join(p.text if isinstance(p, TextPart) else "[image]" for p in m.content)
            for m in self.messages
        )


class Probe:
    """Base of every probe. Subclasses set the class attributes and implement `prompts`.

    Attributes:
        family: the attack family, the metric label and the first half of `name`.
        modality: `text` or `image` (the modality of every conversation it yields).
        goal: what the attack tries, for reports and `list`.
        prompts_per_behavior: how many conversations `prompts` yields per behaviour (the
            contract tests hold probes to it; the runner sizes its progress bar with it).
        needs_engine: white-box probes read the served model through `ProbeContext.engine`.
        name: "family.ClassName", set by `register`.
    """

    family: ClassVar[str]
    modality: ClassVar[Modality]
    goal: ClassVar[str]
    prompts_per_behavior: ClassVar[int] = 1
    needs_engine: ClassVar[bool] = False
    name: ClassVar[str]

    def prompts(self, behavior: Behavior, ctx: ProbeContext) -> Iterator[list[Message]]:
        """Yield the conversations that attack `behavior`."""
        raise NotImplementedError

    def image_text(self, behavior: Behavior) -> str | None:
        """The words this probe's image carries for `behavior`, if it has an image."""
        return None

    def attempts(self, behaviors: Iterable[Behavior], ctx: ProbeContext) -> Iterator[Attempt]:
        """Wrap every conversation for every behaviour into an Attempt."""
        for behavior in behaviors:
            for messages in self.prompts(behavior, ctx):
                yield Attempt(
                    probe=self.name,
                    family=self.family,
                    modality=self.modality,
                    behavior=behavior,
                    messages=tuple(messages),
                    image_text=self.image_text(behavior),
                )


def register(cls: type[Probe]) -> type[Probe]:
    """Class decorator: name the probe "family.ClassName" and make it discoverable."""
    cls.name = f"{cls.family}.{cls.__name__}"
    if cls.name in _PROBES and _PROBES[cls.name] is not cls:
        raise ValueError(f"probe {cls.name} is registered twice")
    _PROBES[cls.name] = cls
    return cls


def probe_classes() -> dict[str, type[Probe]]:
    """Every registered probe class by name, built-ins included."""
    for module in PROBE_MODULES:
        importlib.import_module(module)
    return dict(sorted(_PROBES.items()))


def resolve_probes(specs: Sequence[str] | None = None) -> list[Probe]:
    """Probe instances for names, whole families or `all` (the default).

    Args:
        specs: items like "figstep.FigStep", "figstep" (every probe of the family) or "all".

    Raises:
        KeyError: for a spec that names no probe, listing the known names.
    """
    classes = probe_classes()
    chosen: dict[str, type[Probe]] = {}
    for spec in specs or ["all"]:
        matched = {
            n: c for n, c in classes.items() if spec in ("all", n) or spec == c.family
        }
        if not matched:
            raise KeyError(f"no probe {spec!r}; known: {', '.join(classes)}")
        chosen.update(matched)
    return [cls() for cls in chosen.values()]
