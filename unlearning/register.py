"""`register`: import an adapter folder into the BentoML model store.

The store versions adapters and ships them inside a Bento; the service then names an adapter
by tag (`CROSSGUARD_ADAPTERS=safety=safety:latest`, resolved by `service.model_store`). The
adapter's crossguard.json becomes the model's metadata, and its key facts (base model,
modality, loss, steps, latest ASRs) become labels, which `bentoml models list` can filter on.

`register --gate` first judges the adapter's latest evaluation (the validation half's, by
default) by the service's promotion gate (`service.gate`), so that an adapter the service would
refuse to promote does not enter the store either.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from service.evaluation import EvalSummary
from service.gate import GateVerdict, Measures, Thresholds, judge
from service.probes.splits import Split
from service.vlm.folders import BASE, AdapterFolder
from unlearning import checkpoints

logger = logging.getLogger(__name__)

SKIPPED = (checkpoints.CHECKPOINTS,)
"""Sub-folders left behind: resumable checkpoints are training state, not the adapter."""


def store_name(folder: Path) -> str:
    """A valid model-store name from the folder name (lowercase letters, digits, `-_.`)."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", folder.name.lower()).strip("-._")
    if not name:
        raise ValueError(f"name: cannot derive a model-store name from {folder}; pass --name")
    return name


def labels_of(metadata: dict) -> dict[str, str]:
    """Flat string labels from crossguard.json: what identifies and summarises the adapter."""
    config = metadata.get("config", {})
    labels = {
        "kind": metadata.get("kind"),
        "base_model": metadata.get("base_model"),
        "base_fingerprint": metadata.get("base_fingerprint"),
        "modality": metadata.get("modality"),
        "forget_loss": config.get("loss", {}).get("forget_loss"),
        "seed": config.get("run", {}).get("seed"),
        "steps": metadata.get("steps"),
    }
    if metadata.get("evaluations"):
        latest = EvalSummary.from_dict(metadata["evaluations"][-1], EVALUATIONS)
        for row in latest.rows("asr_by_modality", latest.label):
            for judge, value in row["asr"].items():
                if value is not None:
                    labels[f"asr_{judge}_{row['modality']}"] = f"{value:.4f}"
    return {k: str(v) for k, v in labels.items() if v is not None}


EVALUATIONS = "crossguard.json evaluations"
"""Where registration reads evaluation summaries, for their error messages."""


def latest_evaluation(metadata: dict, split: Split) -> EvalSummary | None:
    """The last evaluation on `split` in crossguard.json; an evaluation on the other half,
    even a later one, is never read in its place (the test half decides nothing)."""
    summaries = (EvalSummary.from_dict(e, EVALUATIONS)
                 for e in reversed(metadata.get("evaluations", [])))
    return next((s for s in summaries if s.split == split), None)


def gate_verdict(folder: str | Path, split: Split, limits: Thresholds,
                 skip: Sequence[str] = ()) -> GateVerdict:
    """The promotion gate on the adapter's latest `split` evaluation, against the base model
    of that same evaluation. Offline there is no current default, so the base is the incumbent
    too. `skip`: rules turned off, as `CROSSGUARD_GATE_SKIP` turns them off in the service.

    Raises:
        LookupError: when crossguard.json holds no evaluation on `split`: a gate never passes
            on nothing measured.
    """
    metadata = AdapterFolder(folder).metadata()
    summary = latest_evaluation(metadata, split)
    if summary is None:
        model = metadata.get("base_model", "MODEL")
        raise LookupError(f"gate: {folder} has no {split} evaluation in crossguard.json; run "
                          f"`python -m unlearning eval --model {model} --adapter {folder} "
                          f"--split {split}` first")
    base = Measures.from_evaluation(summary, BASE)
    return judge(Measures.from_evaluation(summary, summary.label), base, base, limits, skip)


def register_adapter(adapter: str | Path, name: str | None = None) -> str:
    """Copy the adapter folder into the model store; returns the new tag ("name:version").

    Raises:
        NotAnAdapter: (a ValueError) when the folder is not a peft LoRA adapter.
    """
    import bentoml

    folder = Path(adapter)
    AdapterFolder(folder).config()
    metadata = AdapterFolder(folder).metadata()
    with bentoml.models.create(
        name or store_name(folder), labels=labels_of(metadata),
        metadata={"crossguard": _plain(metadata)}, module="crossguard.unlearning",
    ) as model:
        shutil.copytree(folder, model.path, dirs_exist_ok=True,
                        ignore=lambda _, names: [n for n in names if n in SKIPPED])
    logger.info("registered %s as %s", folder, model.tag)
    return str(model.tag)


def _plain(value):
    """JSON-like data with None dropped (BentoML metadata rejects None values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if v is not None]
    return value
