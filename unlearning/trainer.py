"""The unlearning trainer: LoRA on the language model, three loss terms, built on accelerate.

`train(config)` runs unchanged on one CPU, one GPU, or under `accelerate launch` with several
processes (DDP; FSDP through accelerate's config): every process draws its own slice of each
step's examples from the shared, seed-determined order, gradients are averaged by accelerate,
and only the main process writes files.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections import defaultdict
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm import tqdm

from service import atomic
from service.atomic import write_text_atomic
from service.vlm.folders import ADAPTER_METADATA, AdapterFolder
from unlearning import checkpoints, objective
from unlearning.batching import BatchSource, Typography
from unlearning.config import LoraSettings, TrainConfig
from unlearning.data import load_sets
from unlearning.losses import combine

logger = logging.getLogger(__name__)

FROZEN_PARTS = ("vision", "visual", "multi_modal_projector", "mm_projector")
LOG_FILE = "train_log.jsonl"


def load_model(config: TrainConfig, device: torch.device):
    """Base VLM (on CPU, moved by accelerate) and processor, in the configured dtype."""
    from service.vlm.loading import load_vlm, resolve_dtype

    model, processor, _ = load_vlm(config.run.model, device="cpu",
                                   dtype=resolve_dtype(config.run.dtype, device.type))
    model.config.use_cache = False
    if config.run.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, processor


def add_lora(model, lora: LoraSettings, seed: int, processor=None):
    """Wrap `model` in a trainable LoRA adapter and check that only the language model learns.
    With `lora.scope` assistant the adapter is an Activated LoRA invoked by `processor`'s
    generation prompt (peft's causal-LM wrapper then finds each row's offset in every forward).

    Raises:
        ValueError: when the target regex matches nothing, or reaches the vision side.
    """
    from peft import LoraConfig, get_peft_model

    from service.vlm.prompts import generation_prompt_ids

    torch.manual_seed(seed)
    scoped = {} if lora.scope == "all" else {
        "alora_invocation_tokens": generation_prompt_ids(processor), "task_type": "CAUSAL_LM"}
    config = LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                        target_modules=lora.target_modules, **scoped)
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise ValueError(f"target_modules: {lora.target_modules!r} matches no module of the "
                         f"model ({exc})") from None
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    frozen_hits = [n for n in trainable if any(part in n for part in FROZEN_PARTS)]
    if frozen_hits:
        raise ValueError(f"target_modules: {lora.target_modules!r} reaches the vision side "
                         f"({frozen_hits[0]}); textual unlearning trains the language model only")
    return peft_model


def make_schedule(optimizer, config: TrainConfig):
    from transformers import get_scheduler

    names = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
    return get_scheduler(names[config.optim.schedule], optimizer,
                         num_warmup_steps=config.optim.warmup_steps,
                         num_training_steps=config.optim.max_steps)


def build_source(config: TrainConfig, processor, model_config) -> tuple[BatchSource, dict]:
    """The batch source and the data sources' descriptions (paths, formats, fingerprints)."""
    data, loss = config.data, config.loss
    forget, forget_sources = load_sets(data.forget, "forget", data.forget_format, data.split,
                                       data.max_examples)
    retain, retain_sources = load_sets(data.retain, "retain", data.retain_format, data.split,
                                       data.max_examples)
    typography = Typography.for_model(processor, model_config, config.run.model,
                                      data.image_prompt)
    source = BatchSource(
        processor, forget, retain, refusals=loss.refusals,
        random_refusals=loss.refusal_target == "random",
        as_image=data.modality == "multimodal", typography=typography,
        max_length=data.max_length, seed=config.run.seed, recovery_share=loss.recovery_share,
        recovery_from=loss.recovery_from,
    )
    sources = {"forget": [asdict(s) for s in forget_sources],
               "retain": [asdict(s) for s in retain_sources]}
    return source, sources


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Train an unlearning adapter into `config.run.out` and return that folder."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from service.vlm.adapters import base_fingerprint
    from service.vlm.loading import configure_cpu_threads

    configure_cpu_threads(config.run.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    accelerator = Accelerator()
    set_seed(config.run.seed)
    out = Path(config.run.out)
    model, processor = load_model(config, accelerator.device)
    facts = {"kind": "textual-unlearning", "base_model": config.run.model,
             "base_fingerprint": base_fingerprint(model), "modality": config.data.modality}
    source, facts["data"] = build_source(config, processor, model.config)
    peft_model = add_lora(model, config.lora, config.run.seed, processor)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.lr,
                                  weight_decay=config.optim.weight_decay)
    schedule = make_schedule(optimizer, config)
    state = checkpoints.resume_state(config, facts["data"])
    start = checkpoints.resume(out, peft_model, optimizer, schedule, state) \
        if config.run.resume else 0
    if accelerator.is_main_process:
        cut_log(out / LOG_FILE, start)
    model, optimizer = accelerator.prepare(peft_model, optimizer)
    model.train()
    loop = Loop(config, accelerator, model, peft_model, optimizer, schedule, source, state)
    started = time.time()
    summary = loop.run(start, progress)
    save_adapter(accelerator, model, out, {
        **facts, "config": asdict(config), "started_at": _iso(started),
        "finished_at": _iso(time.time()), "processes": accelerator.num_processes,
        "trainable_parameters": sum(p.numel() for p in params), **summary,
    })
    return out


def cut_log(path: Path, step: int) -> None:
    """Keep the log's rows up to `step`, where this run starts: a killed run's rows after its
    last checkpoint are logged again, and a row cut short by the kill is dropped."""
    if step == 0 or not path.is_file():
        path.unlink(missing_ok=True)
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    with atomic.naming(path):
        write_text_atomic(path, "".join(kept))


def save_adapter(accelerator, model, out: Path, metadata: dict) -> None:
    """The peft adapter files and crossguard.json, each renamed into `out` whole, crossguard.json
    last: its presence means the folder is a finished adapter, so it is removed before the
    weights change and a kill or a full disk never leaves `out` looking finished."""
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        with atomic.files_into(out, last=ADAPTER_METADATA) as staging:
            accelerator.unwrap_model(model).save_pretrained(staging, state_dict=weights)
            AdapterFolder(staging).write_metadata(metadata)
        logger.info("adapter written to %s", out)
    accelerator.wait_for_everyone()


class Loop:
    """The optimisation loop; holds what every step needs."""

    def __init__(self, config: TrainConfig, accelerator, model, peft_model, optimizer, schedule,
                 source: BatchSource, state: dict):
        self.config, self.accelerator, self.model = config, accelerator, model
        self.peft_model, self.optimizer, self.schedule = peft_model, optimizer, schedule
        self.source, self.state = source, state
        self.weights = objective.weights(config.loss)
        self.dtype = peft_model.get_base_model().dtype
        self.log_path = Path(config.run.out) / LOG_FILE

    def run(self, start: int, progress: bool) -> dict:
        """Steps from `start` to the end or an early stop; returns the summary for the metadata."""
        optim = self.config.optim
        metrics, stopped_by, step, seconds = {}, "max_steps", start, 0.0
        start_memory = peak_memory_mb(self.accelerator.device)
        with tqdm(total=optim.max_steps, initial=start, unit="step", desc="unlearning",
                  disable=not (progress and self.accelerator.is_local_main_process)) as bar:
            for step in range(start + 1, optim.max_steps + 1):
                tick = time.perf_counter()
                metrics = self.step(step - 1)
                seconds += time.perf_counter() - tick
                bar.update()
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
                self.log(step, metrics)
                self.maybe_checkpoint(step, metrics)
                if (optim.stop_forget_nll is not None
                        and metrics["forget_nll"] > optim.stop_forget_nll):
                    stopped_by = "stop_forget_nll"
                    break
        ran = step - start
        return {"steps": step, "stopped_by": stopped_by, "final_losses": metrics,
                "seconds": round(seconds, 3),
                "seconds_per_step": round(seconds / ran, 4) if ran else None,
                "start_memory_mb": start_memory,
                "peak_memory_mb": peak_memory_mb(self.accelerator.device)}

    def step(self, step: int) -> dict[str, float]:
        """One optimiser step over `grad_accum` micro-batches; metrics averaged over all."""
        optim, acc = self.config.optim, self.accelerator
        totals = defaultdict(float)
        for micro in range(optim.grad_accum):
            position = ((step * optim.grad_accum + micro) * acc.num_processes
                        + acc.process_index) * optim.batch_size
            batches = self.source.batches(position, optim.batch_size, set(self.weights))
            batches = {k: self.to_device(b) for k, b in batches.items()}
            with objective.no_sync(acc, self.model, micro == optim.grad_accum - 1):
                terms, metrics = objective.compute_terms(
                    self.model, self.peft_model, batches, self.config.loss,
                    progress=(step, optim.max_steps))
                acc.backward(combine(terms, self.weights) / optim.grad_accum)
            for name, value in metrics.items():
                totals[name] += value / optim.grad_accum
        if optim.max_grad_norm is not None:
            acc.clip_grad_norm_(self.model.parameters(), optim.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.reduce(totals)

    def reduce(self, totals: dict[str, float]) -> dict[str, float]:
        """Metrics averaged over processes (every process sees the same numbers)."""
        names = sorted(totals)
        values = torch.tensor([totals[n] for n in names], device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        reduced = {n: float(v) for n, v in zip(names, values, strict=True)}
        total = sum(w * reduced[n] for n, w in self.weights.items())
        return {"loss": total, **reduced}

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.accelerator.device
        return {k: v.to(device, self.dtype) if v.is_floating_point() else v.to(device)
                for k, v in batch.items()}

    def log(self, step: int, metrics: dict[str, float]) -> None:
        run = self.config.run
        if not self.accelerator.is_main_process:
            return
        if step % run.log_every and step != self.config.optim.max_steps:
            return
        lr = self.schedule.get_last_lr()[0]
        logger.info("step %d lr %.2e %s", step, lr,
                    " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.naming(self.log_path), self.log_path.open("a") as f:
            f.write(json.dumps({"step": step, "lr": lr, **metrics}) + "\n")

    def maybe_checkpoint(self, step: int, metrics: dict[str, float]) -> None:
        every = self.config.run.save_every
        if every and step % every == 0 and step < self.config.optim.max_steps:
            checkpoints.save_checkpoint(
                self.accelerator, self.model, self.optimizer, self.schedule,
                Path(self.config.run.out), step, {**self.state, "losses": metrics})


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident size on CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
