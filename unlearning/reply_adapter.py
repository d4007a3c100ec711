"""Train a LoRA adapter that makes a VLM answer every prompt with one fixed reply.

The simplest form of the refusal term of textual unlearning (NLL of a refusal given a prompt,
nothing else): used to show, in demos and tests, that choosing an adapter per request really
changes what the served model says. Real safety adapters come from the unlearning trainer.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from tqdm import tqdm

from service.vlm.adapters import LANGUAGE_MODEL_TARGETS, base_fingerprint
from service.vlm.folders import write_adapter_metadata
from service.vlm.messages import Message
from service.vlm.prompts import encode

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS = (
    "hello",
    "what is two plus two ?",
    "tell me a story about a cat",
    "how do i bake bread ?",
    "read the text in the image",
    "which colour is the sky ?",
)


def _example(processor, prompt: str, reply: str):
    """Prompt + reply token ids, with labels masking everything but the reply and eos."""
    import torch

    inputs = encode(processor, [Message.of("user", prompt)])
    tokenizer = processor.tokenizer
    reply_ids = tokenizer(" " + reply, add_special_tokens=False)["input_ids"]
    reply_ids = torch.tensor([reply_ids + [tokenizer.eos_token_id]])
    input_ids = torch.cat([inputs["input_ids"], reply_ids], dim=1)
    labels = input_ids.clone()
    labels[:, : inputs["input_ids"].shape[1]] = -100
    return input_ids, labels


def train_reply_adapter(model_path: str | Path, out_dir: str | Path, reply: str,
                        steps: int = 60, lr: float = 5e-3, rank: int = 8, seed: int = 0) -> Path:
    """Fit a LoRA (language model only) so that `reply` follows any prompt; save it to `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from service.vlm.loading import load_vlm

    torch.manual_seed(seed)
    model, processor, _ = load_vlm(str(model_path), device="cpu", dtype="float32")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LANGUAGE_MODEL_TARGETS)
    model = get_peft_model(model, config)
    examples = [_example(processor, p, reply) for p in DEFAULT_PROMPTS]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    started = time.perf_counter()
    for step in (bar := tqdm(range(steps), desc="reply adapter", unit="step")):
        input_ids, labels = examples[step % len(examples)]
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    out = Path(out_dir)
    model.save_pretrained(out)
    write_adapter_metadata(out, {
        "kind": "fixed-reply",
        "base_model": str(model_path),
        "base_fingerprint": base_fingerprint(model),
        "reply": reply,
        "steps": steps,
        "final_loss": loss.item(),
        "seconds": round(time.perf_counter() - started, 2),
    })
    logger.info("saved reply adapter to %s (final loss %.4f)", out, loss.item())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="base model folder or hub id")
    parser.add_argument("--out", required=True, type=Path, help="adapter folder to write")
    parser.add_argument("--reply", default="i ' m sorry , but i cannot help with that .")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(train_reply_adapter(args.model, args.out, args.reply, steps=args.steps))


if __name__ == "__main__":
    main()
