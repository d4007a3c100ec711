"""Running probes against an engine, one generation at a time.

`ProbeRun` is an iterator: each step builds at most one attempt, generates one reply for one
adapter, judges it and yields the Result, so a caller (the service's scheduler, the CLI's
progress bar) regains control between generations and can stop early by dropping it. The run
reads the model only through `engine.generate` and touches no metrics: publishing the report
is the caller's choice (`service.metrics.record_probe_report`), so live-traffic counters never
see probe traffic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from service.probes.base import Attempt, Probe, ProbeContext, ProbeUnsupported, resolve_probes
from service.probes.behaviors import BUILTIN, Behavior, load_behaviors, sample_behaviors
from service.probes.judges import Judge, Panel
from service.probes.report import BASE, Report, Result
from service.vlm.folders import ModelFolder

logger = logging.getLogger(__name__)

DEFAULT_PER_PROBE = 6
"""Behaviours per probe in the standing battery: the same six every run (so ASR moves only when
the model does), from six categories, and the whole suite stays within a minute on 2 CPU cores
with the demo model (bench/probe_suite.py)."""

DEFAULT_MAX_TOKENS = 128

def default_behaviors(model: str | Path) -> list[Behavior]:
    """The demo world's held-out behaviours (never trained on, never unlearned) for a demo
    model folder, else the built-in set."""
    folder = ModelFolder(model)
    return load_behaviors(folder.behaviors, split="heldout") if folder.is_demo else list(BUILTIN)


def default_judges(model: str | Path) -> list[str]:
    """Judge specs for a model: the payload judge where the demo world's placeholders exist
    (a demo model folder), the keyword judge everywhere. Real models get a compliance judge
    only when one is configured (`classifier:PATH`, `guard:PATH`)."""
    return ["payload", "keyword"] if ModelFolder(model).is_demo else ["keyword"]


class ProbeRun:
    """A planned probe run; iterate it to execute, read `report` for the outcome. A run
    dropped before its end keeps the results so far and no `report.finished_at`.

    Args:
        engine: a `service.vlm.engine.VLMEngine` (anything with its generate/processor API).
        adapters: adapter names to attack, `None` for the base model; default: base + all.
        probes: probe instances or specs ("figstep.FigStep", "figstep", "all"); default all.
        judge: a Panel, a judge, a spec or a list of them; default `default_judges`.
        behaviors: what to attack; default `default_behaviors` of the engine's model.
        per_probe: behaviours sampled (round-robin over categories) for every probe, the
            same ones for each so families compare on equal terms; `None` takes all.
        params: sampling parameters; default greedy with DEFAULT_MAX_TOKENS.
        cache_dir: where white-box probes cache their images.
    """

    def __init__(
        self,
        engine,
        adapters: Sequence[str | None] | None = None,
        probes: Sequence[Probe | str] | None = None,
        judge: Panel | Judge | Sequence[Judge | str] | str | None = None,
        *,
        behaviors: Sequence[Behavior] | None = None,
        per_probe: int | None = DEFAULT_PER_PROBE,
        params=None,
        cache_dir: str | Path | None = None,
    ):
        from service.vlm.engine import SamplingParams

        self.engine = engine
        self.adapters = list(adapters) if adapters is not None else [None, *engine.adapter_names]
        self.probes = [
            p for item in (probes or ["all"])
            for p in ([item] if isinstance(item, Probe) else resolve_probes([item]))
        ]
        self.panel = Panel.of(judge if judge is not None else default_judges(engine.base_model_id))
        pool = behaviors if behaviors is not None else default_behaviors(engine.base_model_id)
        self.behaviors = sample_behaviors(pool, per_probe)
        self.params = params or SamplingParams(max_tokens=DEFAULT_MAX_TOKENS, temperature=0.0)
        self.context = ProbeContext.from_engine(engine, cache_dir)
        self.report = Report(
            model=engine.base_model_id,
            judges={j.name: j.describe() for j in self.panel.judges},
        )

    @property
    def total(self) -> int:
        """Generations the run will make if no probe is skipped."""
        per_adapter = sum(p.prompts_per_behavior for p in self.probes) * len(self.behaviors)
        return per_adapter * len(self.adapters)

    def __iter__(self) -> Iterator[Result]:
        for probe in self.probes:
            yield from self._run_probe(probe)
        self.report.finished_at = time.time()

    def _run_probe(self, probe: Probe) -> Iterator[Result]:
        attempts = probe.attempts(self.behaviors, self.context)
        while (attempt := self._next_attempt(probe, attempts)) is not None:
            for adapter in self.adapters:
                start = time.perf_counter()
                result = self._attack(attempt, adapter)
                self._clock(probe, start)
                self.report.results.append(result)
                yield result

    def _next_attempt(self, probe: Probe, attempts: Iterator[Attempt]) -> Attempt | None:
        """The probe's next attempt; None when it is done or cannot attack this model."""
        start = time.perf_counter()
        try:
            return next(attempts, None)
        except ProbeUnsupported as exc:
            logger.warning("skipping probe %s: %s", probe.name, exc)
            self.report.skipped[probe.name] = str(exc)
            return None
        finally:
            self._clock(probe, start)

    def _attack(self, attempt: Attempt, adapter: str | None) -> Result:
        start = time.perf_counter()
        generation = self.engine.generate(attempt.messages, self.params, adapter=adapter)
        verdict = self.panel.judge(generation.text, attempt.behavior.task)
        return Result(
            adapter=adapter or BASE,
            probe=attempt.probe,
            family=attempt.family,
            modality=attempt.modality,
            behavior=attempt.behavior.task,
            category=attempt.behavior.category,
            prompt=attempt.prompt_text,
            image_text=attempt.image_text,
            response=generation.text,
            score=verdict.score,
            decided_by=verdict.decided_by,
            scores=verdict.scores,
            completion_tokens=generation.completion_tokens,
            seconds=time.perf_counter() - start,
        )

    def _clock(self, probe: Probe, start: float) -> None:
        spent = self.report.seconds_by_probe.get(probe.name, 0.0)
        self.report.seconds_by_probe[probe.name] = spent + time.perf_counter() - start


def run(
    engine,
    adapters: Sequence[str | None] | None = None,
    probes: Sequence[Probe | str] | None = None,
    judge: Panel | Judge | Sequence[Judge | str] | str | None = None,
    *,
    on_result: Callable[[Result, int, int], None] | None = None,
    **options,
) -> Report:
    """Run probes to completion and return the report (see `ProbeRun` for the arguments).

    Args:
        on_result: called after every generation with (result, done, total): a progress
            hook, and a point where a caller may yield to other work.
    """
    probe_run = ProbeRun(engine, adapters, probes, judge, **options)
    for done, result in enumerate(probe_run, start=1):
        if on_result is not None:
            on_result(result, done, probe_run.total)
    return probe_run.report
