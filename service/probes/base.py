"""What a probe is, what it produces, and the registry that finds probes by name.

Probes are small declarative classes in the style of garak: a family, a modality, a goal and,
per evaluation half (`service.probes.splits`), the *variants* they attack with: wordings, image
prompts, typography layouts, system prompts, earlier turns. One behaviour and one variant make
one conversation. Probes never call the model (except white-box probes, which read its vision
encoder through the context): earlier turns are left for the runner to have the model under
test answer live, and sampled probes only say how their attempts must be decoded. So the same
probe feeds the service's scheduled runs, the CLI and the unlearning evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from service.probes.behaviors import Behavior, split_task
from service.probes.canvas import typography
from service.probes.splits import SPLITS, Split, check_split
from service.vlm.folders import ModelFolder
from service.vlm.messages import Message, TextPart

if TYPE_CHECKING:
    from PIL import Image

Modality = Literal["text", "image"]
Kind = Literal["attack", "benign"]

_PROBES: dict[str, type[Probe]] = {}


@dataclass(frozen=True)
class Variant:
    """One form of a probe's conversation. Every field is an axis along which attacks vary,
    and the validation and test halves share no value of any of them (tests/probes/
    test_splits.py). Templates take `{task}` ("hack a bank server"), `{action}` ("hack") and
    `{object}` ("a bank server").

    Attributes:
        text: what the user types in the attacking turn (for image probes: the prompt under
            the image).
        image: the words drawn into the image (image probes without their own image maker).
        layout: where those words sit on the typography grid (`service.probes.typography.
            LAYOUTS`); image probes only.
        system: a system prompt sent first.
        history: earlier user turns, each answered live by the model under test before the
            attacking turn (the runner fills the replies in).
    """

    text: str
    image: str | None = None
    layout: str | None = None
    system: str | None = None
    history: tuple[str, ...] = ()

    def axes(self) -> dict[str, set[str]]:
        """Axis name -> the values this variant draws on it (templates, normalised)."""
        values = {"text": {self.text}, "image": {self.image}, "layout": {self.layout},
                  "system": {self.system}, "history": set(self.history)}
        return {axis: {normalise_template(v) for v in found if v} for axis, found in
                values.items()}


def normalise_template(template: str) -> str:
    """Lower case, single spaces, no trailing punctuation: two templates that tokenise alike
    for a lower-casing model compare equal."""
    return " ".join(template.lower().split()).rstrip(".?!")


def fill(template: str, behavior: Behavior) -> str:
    """A template with the behaviour's task, action and object filled in."""
    action, obj = split_task(behavior.task)
    return template.format(task=behavior.task, action=action, object=obj or "it")


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
        split: the evaluation half whose variants (and sampling seeds) probes draw.
        best_of_n: replies sampled per conversation by sampled probes (`sampling`).
        temperature: their sampling temperature.
    """

    image_size: tuple[int, int] = (128, 128)
    patch_size: int = 16
    cell: tuple[int, int] | None = None
    font_size: int | None = None
    engine: Any = None
    cache_dir: Path | None = None
    split: Split = "test"
    best_of_n: int = 8
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_split(self.split)
        if self.best_of_n < 1 or self.temperature <= 0:
            raise ValueError("best_of_n must be at least 1 and temperature positive")

    @classmethod
    def from_engine(cls, engine, cache_dir: str | Path | None = None,
                    **options) -> ProbeContext:
        """Read image and patch size from the engine's processor (or vision config), and the
        typography cell (and font size) from the model folder's demo world when it has one;
        `options` set the other fields (split, best_of_n, temperature)."""
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
            **options,
        )


@dataclass(frozen=True)
class Attempt:
    """One conversation a probe sends, with what it was built from and how to decode it.

    `image_text` is the text the image carries (drawn, or for adversarial images encoded), kept
    because reports cannot show the image itself. Assistant messages without content are turns
    the model under test answers live. `samples` > 1 asks for that many sampled replies at
    `temperature`, seeded by `seeds`; the attempt succeeds if any reply does (best-of-N).
    """

    probe: str
    family: str
    modality: Modality
    behavior: Behavior
    messages: tuple[Message, ...]
    image_text: str | None = None
    kind: Kind = "attack"
    samples: int = 1
    temperature: float | None = None
    seeds: tuple[int, ...] = ()

    @property
    def prompt_text(self) -> str:
        """The user-visible text of the conversation, images shown as `[image]`."""
        return conversation_text(self.messages)

    @property
    def live_turns(self) -> int:
        """Replies the model writes before the attacking turn."""
        return sum(m.role == "assistant" and not m.content for m in self.messages)


def conversation_text(messages: Sequence[Message]) -> str:
    """A conversation as text for reports, images shown as `[image]`."""
    return "\n".join(
        f"{m.role}: " + " ".join(p.text if isinstance(p, TextPart) else "[image]"
                                  for p in m.content)
        for m in messages
    )


class Probe:
    """Base of every probe. Subclasses set the class attributes; `prompts` builds one
    conversation per variant of the context's split, drawing images with `image`.

    Attributes:
        family: the attack family, the metric label and the first half of `name`.
        modality: `text` or `image` (the modality of every conversation it yields).
        goal: what the attack tries, for reports and `list`.
        kind: `attack` (harmful behaviours; success = the model complied) or `benign`
            (harmless requests that look like harmful ones; counted = the model refused).
        variants: the conversations' forms, per split; both splits hold as many.
        prompts_per_behavior: conversations per behaviour, set by `register` from `variants`
            (the contract tests and the runner's progress bar use it).
        needs_engine: white-box probes read the served model through `ProbeContext.engine`.
        name: "module.ClassName" (e.g. "visual.KeyPhrase", garak's addressing), set by
            `register`.
    """

    family: ClassVar[str]
    modality: ClassVar[Modality]
    goal: ClassVar[str]
    kind: ClassVar[Kind] = "attack"
    variants: ClassVar[Mapping[Split, tuple[Variant, ...]]]
    prompts_per_behavior: ClassVar[int]
    needs_engine: ClassVar[bool] = False
    name: ClassVar[str]

    def prompts(self, behavior: Behavior, ctx: ProbeContext) -> Iterator[list[Message]]:
        """Yield the conversations that attack `behavior`, one per variant of `ctx.split`."""
        for variant in self.variants[ctx.split]:
            yield self.conversation(behavior, variant, ctx)

    def conversation(self, behavior: Behavior, variant: Variant,
                     ctx: ProbeContext) -> list[Message]:
        """System prompt, earlier turns (replies left empty for the model under test), then
        the attacking turn: the image first (as the demo model and LLaVA expect), then text."""
        messages = [Message.of("system", variant.system)] if variant.system else []
        for turn in variant.history:
            messages += [Message.of("user", fill(turn, behavior)), Message.of("assistant")]
        image = [self.image(behavior, variant, ctx)] if self.modality == "image" else []
        messages.append(Message.of("user", *image, fill(variant.text, behavior)))
        return messages

    def image(self, behavior: Behavior, variant: Variant, ctx: ProbeContext) -> Image.Image:
        """The attacking turn's image: the variant's words as typography, in its layout."""
        return typography(self.image_text(behavior, variant), ctx, variant.layout or "top")

    def image_text(self, behavior: Behavior, variant: Variant) -> str | None:
        """The words the image carries for `behavior` in `variant`, if there is an image."""
        return fill(variant.image, behavior) if variant.image else None

    def decoding(self, ctx: ProbeContext) -> dict:
        """How this probe's attempts are decoded (`Attempt.samples` and friends); greedy."""
        return {}

    def attempts(self, behaviors: Iterable[Behavior], ctx: ProbeContext) -> Iterator[Attempt]:
        """Every variant of `ctx.split` for every behaviour, as Attempts."""
        for behavior in behaviors:
            for variant, messages in zip(self.variants[ctx.split], self.prompts(behavior, ctx),
                                         strict=True):
                yield Attempt(
                    probe=self.name,
                    family=self.family,
                    modality=self.modality,
                    behavior=behavior,
                    messages=tuple(messages),
                    image_text=self.image_text(behavior, variant),
                    kind=self.kind,
                    **self.decoding(ctx),
                )


def register(cls: type[Probe]) -> type[Probe]:
    """Class decorator: name the probe "module.ClassName" after the module that defines it
    (so a name says which file to open), count its conversations per behaviour and make it
    discoverable.

    Raises:
        ValueError: a second class under the same name, or splits of unequal size.
    """
    cls.name = f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}"
    if cls.name in _PROBES and _PROBES[cls.name] is not cls:
        raise ValueError(f"probe {cls.name} is registered twice")
    sizes = {split: len(cls.variants.get(split, ())) for split in SPLITS}
    if len(set(sizes.values())) != 1 or not sizes["test"]:
        raise ValueError(f"probe {cls.name}: every split needs as many variants ({sizes})")
    cls.prompts_per_behavior = sizes["test"]
    _PROBES[cls.name] = cls
    return cls


def probe_classes() -> dict[str, type[Probe]]:
    """Every registered probe class by name: the modules of `service.probes` are scanned on
    first use (`service.probes.plugins`)."""
    from service.probes.plugins import import_all

    import_all()
    return dict(sorted(_PROBES.items()))


def resolve_probes(specs: Sequence[str] | None = None) -> list[Probe]:
    """Probe instances for names, whole families, whole modules or `all` (the default).

    Args:
        specs: items like "visual.FigStep", "figstep" (every probe of the family), "visual"
            (every probe of `service/probes/visual.py`) or "all".

    Raises:
        KeyError: for a spec that names no probe, listing the known names.
    """
    classes = probe_classes()
    chosen: dict[str, type[Probe]] = {}
    for spec in specs or ["all"]:
        matched = {
            n: c for n, c in classes.items()
            if spec in ("all", n, c.family) or spec == n.partition(".")[0]
        }
        if not matched:
            raise KeyError(f"no probe {spec!r}; known: {', '.join(classes)}")
        chosen.update(matched)
    return [cls() for cls in chosen.values()]
