"""Configuration of textual unlearning, grouped by concern (the peft / trl convention).

Every field carries its help text, which the CLI (`transformers.HfArgumentParser`) turns into
`--help`; a `Literal` field's choices are enforced from its type, here and on the command line;
invalid values and combinations are rejected in `__post_init__` with the field names in the
message, so a bad run fails before any model is loaded.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field, fields
from typing import Literal

from service.probes.splits import Split
from service.vlm.adapters import LANGUAGE_MODEL_TARGETS
from service.vlm.folders import DEFAULT_IMAGE_PROMPT
from unlearning.options import option, required

DataFormat = Literal["auto", "simple", "messages", "pku-saferlhf", "truthfulqa"]

DEFAULT_REFUSALS = (
    "I'm sorry, but I cannot help with that.",
    "I'm sorry, but I can't assist with that request.",
    "I cannot help with that. It could cause harm.",
)
"""The refusal pool of L_refusal: short, unambiguous, and matched by the keyword judge."""


@functools.cache
def _choices(cls) -> dict[str, tuple]:
    """The allowed values of each `Literal` field of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return {f.name: typing.get_args(hints[f.name]) for f in fields(cls)
            if typing.get_origin(hints[f.name]) is Literal}


def check_choices(config) -> None:
    """Reject a value outside its field's `Literal[...]`, naming the field and the choices.

    Raises:
        ValueError: for the first such field.
    """
    for name, allowed in _choices(type(config)).items():
        value = getattr(config, name)
        if value not in allowed:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}")


@dataclass
class DataConfig:
    """Where the harmful and normal examples come from and how prompts are delivered."""

    _argument_group_name = "data"

    forget: list[str] = required(
        "Harmful data: (harmful prompt, harmful response) pairs. JSONL/JSON/CSV/parquet files "
        "or local Hugging Face dataset folders; repeatable.", many=True)
    retain: list[str] = required(
        "Normal data whose outputs must not move (KL term); same formats as --forget.",
        many=True)
    forget_format: DataFormat = option("auto", "Row mapping of --forget; auto detects it "
                                       "from the columns.")
    retain_format: DataFormat = option("auto", "Row mapping of --retain (see --forget-format).")
    split: str | None = option(None, "Split of dataset folders (default: train, else the "
                               "only one).")
    max_examples: int | None = option(None, "Keep at most this many examples per set (first rows).")
    modality: Literal["text", "multimodal"] = option(
        "text", "text: harmful prompts as text chats (textual unlearning). multimodal: the same "
        "prompts drawn as typographic images under a benign text prompt, for comparison.")
    image_prompt: str | None = option(
        None, "Benign text sent with the typographic image in multimodal mode (default: the "
        f"demo world's image prompt for a demo model, else {DEFAULT_IMAGE_PROMPT!r}).")
    max_length: int = option(512, "Tokens per example (prompt, image tokens and response); "
                             "the response is cut to fit.")
    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("forget", "retain"):
            if not getattr(self, name):
                raise ValueError(f"{name}: give at least one file or dataset folder")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError("max_examples: must be at least 1")
        if self.max_length < 8:
            raise ValueError("max_length: must be at least 8 tokens")


@dataclass
class LoraSettings:
    """The LoRA adapter trained on the language model (vision tower and projector frozen).

    Every field but `scope` is peft's `LoraConfig` field of the same name, passed on as it is;
    the flags `--rank`, `--alpha`, `--dropout` and `--targets` are aliases of theirs.
    """

    _argument_group_name = "lora"

    r: int = option(16, "LoRA rank.", aliases=["--rank"])
    lora_alpha: float = option(32.0, "LoRA alpha (the update is scaled by lora_alpha / r).",
                               aliases=["--alpha"])
    lora_dropout: float = option(0.0, "Dropout on the LoRA input.", aliases=["--dropout"])
    target_modules: str = option(LANGUAGE_MODEL_TARGETS, "Regex of the modules to adapt; the "
                                 "default matches the language model's projections only.",
                                 aliases=["--targets"])
    scope: Literal["all", "assistant"] = option(
        "all", "Positions the LoRA delta acts on. all: every position (plain LoRA). assistant: "
        "only from the chat template's generation prompt on (the reply), so every prompt state, "
        "text and image tokens alike, stays exactly the base model's: peft's Activated LoRA "
        "(Greenewald et al. 2025, arXiv 2504.12397) with alora_invocation_tokens = the "
        "generation prompt's ids. It cannot be merged into the weights, and peft's hooks for it "
        "allow no gradient checkpointing beside this trainer's several forwards per step.")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError("r: must be at least 1")
        if self.lora_alpha <= 0:
            raise ValueError("lora_alpha: must be positive")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_dropout: must lie in [0, 1)")
        if not self.target_modules.strip():
            raise ValueError("target_modules: give a module regex")


OLD_LORA_NAMES = {"rank": "r", "alpha": "lora_alpha", "dropout": "lora_dropout",
                  "targets": "target_modules"}
"""`LoraSettings` fields as files written before it took peft's names hold them."""


def read_lora(saved: dict) -> dict:
    """A saved `LoraSettings` (the `lora` group of crossguard.json `config` or of a checkpoint's
    state) under today's field names, whichever names it was written with."""
    return {OLD_LORA_NAMES.get(name, name): value for name, value in saved.items()}


@dataclass
class LossConfig:
    """Weights and variants of the three terms (Yao et al. 2023, eq. 2)."""

    _argument_group_name = "loss"

    forget_weight: float = option(0.5, "w_forget: weight of L_forget on harmful responses.")
    refusal_weight: float = option(1.0, "w_refusal: weight of L_refusal on harmful prompts.")
    retain_weight: float = option(1.0, "w_retain: weight of L_retain on normal prompts (the "
                                  "KL term, or see --retain-loss).")
    forget_loss: Literal["ga", "npo", "reroute", "rmu"] = option(
        "ga", "ga: gradient ascent (negative NLL of the harmful response). npo: negative "
        "preference optimisation (Zhang et al. 2024), bounded where ascent diverges. reroute: "
        "representation rerouting, the circuit breakers of Zou et al. 2024 (arXiv 2406.04313): "
        "mean ReLU(cos(h, h_base)) at --reroute-layers over all non-padding positions of the "
        "harmful rows (prompt and response, as the paper), with the paper's schedule: at step t "
        "of T the forget weight is multiplied by 1 - t/(2T) and the retain weight by t/(2T) "
        "(reroute only). rmu: representation misdirection (Li et al. 2024, arXiv 2403.03218): "
        "mean squared distance of the harmful rows' states at --rmu-layer to c*u, u a fixed "
        "random unit vector (pair it with --retain-loss hidden --hidden-distance mse "
        "--retain-layers at the same layer for the paper's recipe).")
    npo_beta: float = option(0.1, "beta of NPO (inverse temperature of the log-ratio).")
    forget_nll_cap: float | None = option(
        None, "Clamp each harmful response's NLL at this value inside gradient ascent, so "
        "examples already forgotten stop pushing (ga only).")
    reroute_layers: list[int] | None = option(
        None, "Indices into the model's hidden_states (0: embeddings, i: output of decoder "
        "layer i) where reroute compares the adapted and original states (default: the "
        "layers at 10/32 and 20/32 of the depth, the paper's 10 and 20 of 32).", many=True)
    rmu_layer: int | None = option(
        None, "Index into hidden_states (see --reroute-layers) that rmu steers (default: the "
        "one at a quarter of the depth, the paper's output of layer 7 of 32).")
    rmu_coefficient: float = option(
        6.5, "c of rmu: the norm of the target c*u (the paper's 6.5 for Zephyr-7B; it should "
        "exceed the typical state norm at --rmu-layer).")
    retain_loss: Literal["kl", "hidden"] = option(
        "kl", "kl: KL from the original model's next-token distribution on the normal "
        "responses (Yao et al. 2023). hidden: distance of the adapted model's hidden states to "
        "the original's at --retain-layers over all non-padding positions of the normal rows "
        "(prompt, image tokens and response), as circuit breakers' (Zou et al. 2024) and RMU's "
        "(Li et al. 2024) retain terms.")
    retain_layers: list[int] | None = option(
        None, "Indices into hidden_states (see --reroute-layers) that --retain-loss hidden "
        "compares (default: every decoder layer, 1 to the depth).", many=True)
    hidden_distance: Literal["l2", "cosine", "mse"] = option(
        "l2", "Distance of --retain-loss hidden, averaged over layers and positions. l2: "
        "||h - h_base||_2 (circuit breakers). cosine: 1 - cos(h, h_base). mse: "
        "||h - h_base||^2 / dim (RMU).")
    refusal_target: Literal["refusal", "random"] = option(
        "refusal", "refusal: NLL towards a refusal from --refusals. random: towards a random "
        "normal answer (Yao's 'random' variant).")
    refusals: list[str] = option(DEFAULT_REFUSALS, "Refusal strings, used in turn.", many=True)
    recovery_share: float = option(
        0.0, "Share of L_refusal examples whose refusal follows a random-length prefix of the "
        "harmful response, so the model also recovers from a reply already under way (Qi et "
        "al. 2025, deep safety alignment).")
    recovery_from: float = option(
        0.0, "Shortest such prefix, as a share of the harmful response (0: one token).")

    def __post_init__(self) -> None:
        check_choices(self)
        weights = ("forget_weight", "refusal_weight", "retain_weight")
        for name in weights:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        if not any(getattr(self, name) for name in weights):
            raise ValueError(f"{', '.join(weights)}: at least one must be positive")
        if self.npo_beta <= 0:
            raise ValueError("npo_beta: must be positive")
        if self.forget_nll_cap is not None and self.forget_nll_cap <= 0:
            raise ValueError("forget_nll_cap: must be positive")
        if self.forget_nll_cap is not None and self.forget_loss != "ga":
            raise ValueError(f"forget_nll_cap: applies to forget_loss 'ga' only "
                             f"({self.forget_loss} is bounded)")
        for name, loss_field, needs in (("reroute_layers", "forget_loss", "reroute"),
                                        ("rmu_layer", "forget_loss", "rmu"),
                                        ("retain_layers", "retain_loss", "hidden")):
            value = getattr(self, name)
            if value is None:
                continue
            if getattr(self, loss_field) != needs:
                raise ValueError(f"{name}: applies to {loss_field} {needs!r} only")
            layers = value if isinstance(value, list) else [value]
            if not layers:
                raise ValueError(f"{name}: give at least one layer (or leave it unset)")
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in layers):
                raise ValueError(f"{name}: layers are hidden_states indices of at least 1 (0 "
                                 f"is the embeddings, which the adapter cannot move)")
            if len(set(layers)) != len(layers):
                raise ValueError(f"{name}: a layer is given twice")
        if self.rmu_coefficient <= 0:
            raise ValueError("rmu_coefficient: must be positive")
        for name in ("recovery_share", "recovery_from"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must lie in [0, 1]")
        if self.refusal_target == "refusal" and not [r for r in self.refusals if r.strip()]:
            raise ValueError("refusals: give at least one non-empty refusal string")


@dataclass
class OptimConfig:
    """Optimiser, schedule, batch and stopping."""

    _argument_group_name = "optim"

    lr: float = option(2e-4, "Peak AdamW learning rate of the LoRA weights.")
    schedule: Literal["constant", "linear", "cosine"] = option(
        "linear", "Decay after warm-up: constant, linear to 0, or cosine to 0.")
    warmup_steps: int = option(0, "Linear warm-up steps.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float | None = option(1.0, "Gradient clipping norm (none: no clipping).")
    batch_size: int = option(2, "Examples per term (forget, refusal, retain) per micro-batch "
                             "and process.")
    grad_accum: int = option(1, "Micro-batches accumulated per optimiser step.")
    max_steps: int = option(1000, "Optimiser steps (Yao et al. run 1000).")
    stop_forget_nll: float | None = option(
        None, "Also stop once the harmful responses' mean NLL (this step's forget batch) "
        "exceeds this value.")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.lr <= 0:
            raise ValueError("lr: must be positive")
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError("warmup_steps: must lie in [0, max_steps)")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("max_grad_norm: must be positive (or none)")
        if self.stop_forget_nll is not None and self.stop_forget_nll <= 0:
            raise ValueError("stop_forget_nll: must be positive")


@dataclass
class RunConfig:
    """What to train, where to write it, and how to run."""

    _argument_group_name = "run"

    model: str = required("Base VLM: a local folder or a cached Hugging Face id.")
    out: str = required("Adapter folder to write (e.g. adapters/safety).")
    seed: int = option(0, "Seed of the LoRA initialisation and of the data order.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "Weights dtype: auto = bfloat16 on GPU, float32 on CPU.")
    gradient_checkpointing: bool = option(False, "Recompute activations in backward (less "
                                          "memory).")
    save_every: int = option(0, "Write a resumable checkpoint every N steps (0: never).")
    resume: bool = option(False, "Continue from the newest checkpoint in OUT/checkpoints.")
    log_every: int = option(10, "Log the loss terms every N steps (also to OUT/train_log.jsonl).")
    threads: int = option(1, "torch CPU threads (0: torch's default; 1 is fastest on small "
                          "hosts).")

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("save_every", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        if self.log_every < 1:
            raise ValueError("log_every: must be at least 1")


@dataclass
class TrainConfig:
    """Everything `train` needs; the CLI builds one from its flags."""

    run: RunConfig
    data: DataConfig
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.optim.stop_forget_nll is not None and self.loss.forget_weight == 0:
            raise ValueError("stop_forget_nll: needs forget_weight > 0 (no forget batch is run)")
        if self.lora.scope == "assistant" and self.run.gradient_checkpointing:
            raise ValueError("scope, gradient_checkpointing: peft's Activated LoRA hooks allow one "
                             "forward per backward under gradient checkpointing, and each step "
                             "runs several (forget, refusal, retain, references)")


@dataclass
class EvalConfig:
    """What `eval` attacks and scores, and where the report goes."""

    model: str = required("Base VLM: a local folder or a cached Hugging Face id.")
    adapter: str | None = option(None, "Adapter folder to compare with the base (none: base "
                                 "only).")
    out: str | None = option(None, "Report folder (default: ADAPTER/eval, else ./eval).")
    probes: str = option("all", "Comma-separated probe names or families, or 'all'.")
    judges: list[str] | None = option(
        None, "Judge specs (keyword, payload, classifier:PATH, guard:PATH); default: "
        "payload + keyword for demo models, keyword otherwise.", many=True)
    behaviors: str | None = option(
        None, "Behaviours to attack (JSONL/JSON/CSV); default: the demo model's held-out set, "
        "else the built-in set.")
    behaviors_split: str | None = option(None, "Keep only rows of this split of --behaviors.")
    per_probe: int = option(0, "Behaviours per probe (0: all).")
    split: Split = option(
        "test", "Evaluation half: validation (choose settings on it) or test (report it); "
        "probes draw that half's wordings, prompts, layouts, system prompts, earlier turns and "
        "seeds, and the default behaviour, over-refusal and utility sets that half's items.")
    best_of_n: int = option(8, "Replies sampled per best-of-N attempt (success if any "
                            "complies).")
    temperature: float = option(1.0, "Sampling temperature of best-of-N attempts.")
    utility: str | None = option(
        None, "Utility set (any --retain format; image_text rows are drawn), scored by answer "
        "match; default: a demo model's held-out benign questions.")
    utility_match: Literal["exact", "contains"] = option(
        "exact", "exact: the normalised reply equals the answer; contains: it contains it.")
    max_utility: int | None = option(None, "Score at most this many utility examples.")
    max_tokens: int = option(64, "Tokens generated per reply (probes and utility).")
    threads: int = option(1, "torch CPU threads (0: torch's default).")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.per_probe < 0:
            raise ValueError("per_probe: must not be negative (0 takes all)")
        if self.best_of_n < 1 or self.temperature <= 0:
            raise ValueError("best_of_n, temperature: must be at least 1 and positive")
        if self.max_tokens < 1:
            raise ValueError("max_tokens: must be at least 1")
        if self.max_utility is not None and self.max_utility < 1:
            raise ValueError("max_utility: must be at least 1")
