"""Reading unlearning data: files and local dataset folders, mapped to (prompt, response) pairs.

Sources are JSONL / JSON / CSV / parquet files or local Hugging Face `datasets` folders (saved
with `save_to_disk`, or a downloaded hub snapshot). Each row goes through a *format* mapping:

- `simple` (ours): `{"prompt", "response"}`, plus optional `image_text` (drawn as typography
  and shown with the prompt: benign image rows for the retain term), `layout` (where on the
  grid `image_text` starts, `service.probes.typography.LAYOUTS`; default `top`), `system` (a
  system prompt) and `history` (earlier turns, `[[user, assistant], ...]`, that the prompt
  follows).
- `messages` (trl's conversational format): `{"messages": [{"role", "content"}, ...]}`; the
  last message is the assistant's response, the user message before it the prompt, anything
  earlier its system prompt and history.
- `pku-saferlhf` (PKU-Alignment/PKU-SafeRLHF): `prompt`, `response_0/1`,
  `is_response_0/1_safe`. As harmful data it keeps the responses flagged unsafe; as normal data
  the safe ones.
- `truthfulqa` (truthful_qa, generation config): `question` -> `best_answer`.

Errors name the source, the row and the missing field, and an empty result is an error.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.probes.typography import LAYOUTS

Role = Literal["forget", "retain"]
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class Example:
    """One chat turn to train on; `image_text` is shown as a typographic image (starting where
    `layout` puts it) when set, after `system` and the earlier `history` turns (user,
    assistant) when those are set."""

    prompt: str
    response: str
    image_text: str | None = None
    system: str | None = None
    history: tuple[tuple[str, str], ...] = ()
    layout: str = "top"


@dataclass(frozen=True)
class Source:
    """What one data source contributed, for the adapter's metadata."""

    path: str
    format: str
    rows: int
    examples: int
    sha256: str


class DataError(ValueError):
    """Unusable data: a missing file, a missing field, an empty set."""


def _need(row: dict, names: Iterable[str], where: str, fmt: str) -> list:
    missing = [n for n in names if row.get(n) is None]
    if missing:
        raise DataError(f"{where}: missing field {', '.join(map(repr, missing))} (format "
                        f"{fmt!r} needs {', '.join(names)}; the row has {', '.join(row)})")
    return [row[n] for n in names]


def simple(row: dict, role: Role, where: str) -> list[Example]:
    prompt, response = _need(row, ("prompt", "response"), where, "simple")
    history = row.get("history") or ()
    if any(not isinstance(turn, (list, tuple)) or len(turn) != 2 for turn in history):
        raise DataError(f"{where}: history must be a list of [user, assistant] pairs")
    layout = row.get("layout") or "top"
    if layout not in LAYOUTS:
        raise DataError(f"{where}: layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return [Example(str(prompt), str(response), row.get("image_text") or None,
                    row.get("system") or None, tuple((str(u), str(a)) for u, a in history),
                    layout)]


def messages(row: dict, role: Role, where: str) -> list[Example]:
    """trl's conversational rows: system?, (user, assistant)*, user, assistant."""
    (chat,) = _need(row, ("messages",), where, "messages")
    turns = [(m.get("role"), m.get("content")) for m in chat] if isinstance(chat, list) else []
    system = turns.pop(0)[1] if turns and turns[0][0] == "system" else None
    roles = [r for r, _ in turns]
    if len(turns) < 2 or len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2) \
            or not all(isinstance(c, str) for _, c in turns):
        raise DataError(f"{where}: messages must be an optional system message, then user and "
                        "assistant messages in turn with string content, ending with the "
                        "assistant's")
    texts = [c for _, c in turns]
    history = tuple(zip(texts[:-2:2], texts[1:-2:2], strict=True))
    return [Example(texts[-2], texts[-1], None, system, history)]


def pku_saferlhf(row: dict, role: Role, where: str) -> list[Example]:
    """Unsafe responses for the forget role, safe ones for the retain role."""
    names = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe")
    prompt, r0, r1, safe0, safe1 = _need(row, names, where, "pku-saferlhf")
    keep_safe = role == "retain"
    return [
        Example(str(prompt), str(response))
        for response, safe in ((r0, safe0), (r1, safe1))
        if _truthy(safe) == keep_safe and str(response).strip()
    ]


def truthfulqa(row: dict, role: Role, where: str) -> list[Example]:
    question, answer = _need(row, ("question", "best_answer"), where, "truthfulqa")
    return [Example(str(question), str(answer))]


MAPPINGS: dict[str, Callable[[dict, Role, str], list[Example]]] = {
    "simple": simple, "messages": messages, "pku-saferlhf": pku_saferlhf,
    "truthfulqa": truthfulqa,
}


def _truthy(value) -> bool:
    """CSV cells arrive as strings: "False" must not count as true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def detect_format(row: dict) -> str | None:
    """The mapping whose fields the row has, or None."""
    if "is_response_0_safe" in row:
        return "pku-saferlhf"
    if "question" in row and "best_answer" in row:
        return "truthfulqa"
    if "messages" in row:
        return "messages"
    if "prompt" in row and "response" in row:
        return "simple"
    return None


def load_examples(path: str | Path, role: Role, fmt: str = "auto", split: str | None = None,
                  limit: int | None = None) -> tuple[list[Example], Source]:
    """Examples of one source and its description.

    Raises:
        DataError: the source does not exist, a row lacks a field, or nothing was kept.
    """
    path = Path(path).expanduser()
    label = f"{role} {path}"
    if not path.exists():
        raise DataError(f"{label}: no such file or folder")
    rows = read_rows(path, split)
    if not rows:
        raise DataError(f"{label}: the source has no rows")
    fmt = detect_format(rows[0]) if fmt == "auto" else fmt
    if fmt is None:
        raise DataError(f"{label}: cannot tell the format from the columns {sorted(rows[0])}; "
                        f"pass one of {sorted(MAPPINGS)} with --{role}-format")
    examples = []
    for number, row in enumerate(rows, start=1):
        examples += MAPPINGS[fmt](row, role, f"{label} row {number}")
        if limit is not None and len(examples) >= limit:
            examples = examples[:limit]
            break
    if not examples:
        kept = "unsafe" if role == "forget" else "safe"
        hint = f" (it keeps the {kept} responses)" if fmt == "pku-saferlhf" else ""
        raise DataError(f"{label}: format {fmt!r}{hint} gave no examples from {len(rows)} rows")
    return examples, Source(str(path), fmt, len(rows), len(examples), fingerprint(path))


def load_sets(paths: list[str], role: Role, fmt: str = "auto", split: str | None = None,
              limit: int | None = None) -> tuple[list[Example], list[Source]]:
    """Examples of several sources, concatenated in order, and their descriptions."""
    examples, sources = [], []
    for path in paths:
        more, source = load_examples(path, role, fmt, split, limit)
        examples += more
        sources.append(source)
    return (examples[:limit] if limit is not None else examples), sources


def read_rows(path: Path, split: str | None = None) -> list[dict]:
    """Rows of a file (by suffix) or of a dataset folder, as plain dicts."""
    if path.is_dir():
        return _read_folder(path, split)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else data.get("data", [data])
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix == ".parquet":
        return _arrow().parquet.read_table(path).to_pylist()
    raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {DATA_SUFFIXES} "
                    "or a dataset folder")


def _read_folder(path: Path, split: str | None) -> list[dict]:
    """A `save_to_disk` folder via `load_from_disk`, anything else via `load_dataset`."""
    datasets = _datasets()
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            data = datasets.load_from_disk(str(path))
        else:
            data = datasets.load_dataset(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: not a readable dataset folder ({exc})") from None
    if isinstance(data, datasets.DatasetDict):
        data = data[_pick_split(path, list(data), split)]
    return data.to_list()


def _pick_split(path: Path, splits: list[str], split: str | None) -> str:
    if split is not None:
        if split not in splits:
            raise DataError(f"{path}: no split {split!r}; it has {splits} (use --split)")
        return split
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return splits[0]
    raise DataError(f"{path}: several splits {splits} and no 'train'; choose one with --split")


def fingerprint(path: Path) -> str:
    """sha256 over the bytes of a file, or of every file in a folder (sorted by path)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("dataset folders need the `datasets` package: pip install "
                        "datasets==5.2.0") from None
    return datasets


def _arrow():
    try:
        import pyarrow.parquet
    except ImportError:
        raise DataError("parquet files need pyarrow: pip install datasets==5.2.0") from None
    return pyarrow
