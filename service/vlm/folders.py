"""What crossguard adds to model folders and adapter folders: the one definition of both.

A *model folder* is anything `from_pretrained` loads. One built by `unlearning.demo` also holds
its world under `data/` (the unlearning data it ships, the behaviours probes attack, the held-out
evaluation sets) and `data/world.json` (refusal string, image prompt, harm categories and the
typography grid the model learned to read), plus `build.json`, the inputs that named the folder
and a sha256 of every file the build wrote. An *adapter folder* is a peft LoRA folder plus
`crossguard.json` (training config, data fingerprints, evaluations).

The demo build writes these through this module, and probes, evaluation, registration, the CLIs
and the benches read them through it, so a file name or a field lives here only. Torch-free, so
`service.probes` and the Makefile's helpers import it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from service.atomic import write_text_atomic

MODELS = "models"
DEFAULT_MODEL = "default"
"""`$CROSSGUARD_HOME/models/default`: the model served when none is configured (a link to the
demo folder that `make serve` builds)."""

DEFAULT_IMAGE_PROMPT = "follow the instruction in the image."
"""The benign text under a typographic training image when the model folder's world names none;
the demo world uses it too."""

BASE = "base"
"""The adapter label of the base model (no adapter) in reports, metrics, logs and tables."""

ADAPTER_METADATA = "crossguard.json"
"""The file of an adapter folder that says what trained it; written last, so its presence means
the folder is complete."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""peft's two files of a LoRA adapter folder (`save_pretrained`), also the names a training
checkpoint's weights are saved under."""


def adapter_label(name: str | None) -> str:
    """The label of adapter `name` in reports, metrics and logs: `BASE` for None (no adapter),
    the one place that conversion happens."""
    return name or BASE


def crossguard_home() -> Path:
    """Cache root for built models and adapters: `$CROSSGUARD_HOME`, else `~/.cache/crossguard`.
    The service's settings and the offline tools both take it from here."""
    return Path(os.environ.get("CROSSGUARD_HOME", "~/.cache/crossguard")).expanduser()


def models_dir(home: str | Path | None = None) -> Path:
    """Where built models live: `models/` under `home`, else under `crossguard_home()`."""
    return (Path(home).expanduser() if home is not None else crossguard_home()) / MODELS


def default_model_path(home: str | Path | None = None) -> Path:
    return models_dir(home) / DEFAULT_MODEL


@dataclass(frozen=True)
class WorldSpec:
    """What a demo world fixes that probes and training must match (`data/world.json`).

    Attributes:
        refusal: the refusal the base model gives its refused category (and unlearning teaches).
        image_prompt: the benign text shown under a typographic image.
        categories: the harm categories the base model complies with.
        refused_category: the category it already refuses.
        image_size: side of the square images the model reads.
        cell: (width, height) of one word slot of the typography grid.
        font_size: font size of the words drawn in a slot.
        answers: the world's answer templates, `{}` marking a slot of one to four words
            (`service.probes.outcomes.ReplyForms`): a reply that fits none of them is not a
            well-formed answer of the world.
    """

    refusal: str
    image_prompt: str
    categories: tuple[str, ...]
    refused_category: str
    image_size: int
    cell: tuple[int, int]
    font_size: int
    answers: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> WorldSpec:
        raw = json.loads(text)
        return cls(**{**raw, "categories": tuple(raw["categories"]), "cell": tuple(raw["cell"]),
                      "answers": tuple(raw.get("answers", ()))})


@dataclass(frozen=True)
class ModelFolder:
    """Paths and readers of a model folder's crossguard extras (absent for hub models)."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def world_file(self) -> Path:
        return self.data / "world.json"

    @property
    def forget(self) -> Path:
        """Harmful text requests with the compliant answer to unlearn (`prompt`, `response`)."""
        return self.data / "forget.jsonl"

    @property
    def retain(self) -> Path:
        """Benign text chats to keep (the KL set)."""
        return self.data / "retain.jsonl"

    @property
    def retain_images(self) -> Path:
        """Benign image chats (`image_text` drawn as typography) to keep."""
        return self.data / "retain_images.jsonl"

    @property
    def behaviors(self) -> Path:
        """Harmful task phrases for the probes, with their split (`forget` / `validation` /
        `test`)."""
        return self.data / "behaviors.jsonl"

    @property
    def over_refusal(self) -> Path:
        """Harmless look-alike requests for the over-refusal probes, with their category and
        split (`train`: in the retain data; `validation` / `test`: never trained on)."""
        return self.data / "over_refusal.jsonl"

    @property
    def utility(self) -> Path:
        """Held-out benign questions, text and image, each with its split: what utility is
        scored on."""
        return self.data / "eval_benign.jsonl"

    def eval_set(self, name: str) -> Path:
        """A held-out evaluation set: `benign`, `harmful` or `refused`."""
        return self.data / f"eval_{name}.jsonl"

    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.json"

    @property
    def build_file(self) -> Path:
        return self.path / "build.json"

    @property
    def is_demo(self) -> bool:
        """Whether the folder carries a demo world (its placeholders make the payload judge
        exact, and its behaviours are the probes' default)."""
        return self.world_file.is_file()

    def world(self) -> WorldSpec | None:
        return WorldSpec.from_json(self.world_file.read_text()) if self.is_demo else None

    def write_world(self, world: WorldSpec) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.world_file.write_text(world.to_json(), encoding="utf-8")

    def image_prompt(self) -> str:
        world = self.world()
        return world.image_prompt if world else DEFAULT_IMAGE_PROMPT


class NotAnAdapter(ValueError):
    """A folder that is not a peft LoRA adapter; `missing` when it has no peft config at all
    (rather than an unreadable or non-LoRA one)."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class AdapterFolder:
    """Paths and readers of an adapter folder: peft's config and weights, crossguard.json."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def config_file(self) -> Path:
        return self.path / ADAPTER_CONFIG

    @property
    def weights_file(self) -> Path:
        return self.path / ADAPTER_WEIGHTS

    @property
    def metadata_file(self) -> Path:
        return self.path / ADAPTER_METADATA

    def config(self) -> dict:
        """peft's adapter config, checked to be a LoRA one: serving, registration and the
        tools refuse a folder for the same reasons, in the same words (`NotAnAdapter`)."""
        if not self.config_file.is_file():
            raise NotAnAdapter(f"{self.path.name} has no {ADAPTER_CONFIG} (not a peft adapter)",
                               missing=True)
        try:
            config = json.loads(self.config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise NotAnAdapter(f"unreadable config ({exc})") from None
        if config.get("peft_type") != "LORA":
            raise NotAnAdapter(f"peft_type {config.get('peft_type')!r} is not LORA")
        return config

    def metadata(self) -> dict:
        """crossguard.json, `{}` when the folder has none (an adapter trained elsewhere)."""
        return json.loads(self.metadata_file.read_text()) if self.metadata_file.is_file() else {}

    def write_metadata(self, metadata: dict) -> Path:
        text = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
        return write_text_atomic(self.metadata_file, text)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

