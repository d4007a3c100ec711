"""Running probes against an engine, many attempts decoded together.

`ProbeRun` is an iterator over Results. Every attempt meets every adapter in a conversation of
its own (its live earlier turns, then one greedy reply, or sampled ones until the first success
for best-of-N), and up to `in_flight` conversations of a probe are decoded together, in waves,
as the engine batches concurrent users (`service.probes.waves`): the suite then takes a
fraction of the time one attempt at a time took, with the same replies. Results come in the
order attempts were built, one per step, so a caller (the service's scheduler, the CLI's
progress bar) regains control between them, with nothing of the run in flight, and can stop
early by dropping the iterator. The run reads the model only through `engine.submit_many` and
touches no metrics: publishing the report is the caller's choice
(`service.metrics.record_probe_report`), so live-traffic counters never see probe traffic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from service.probes.base import (
    Attempt,
    Probe,
    ProbeUnsupported,
    conversation_text,
    resolve_probes,
)
from service.probes.behaviors import (
    BUILTIN,
    BUILTIN_BENIGN,
    Behavior,
    builtin,
    load_behaviors,
    sample_behaviors,
)
from service.probes.context import probe_context
from service.probes.judges import Judge, KeywordRefusalJudge, Panel, Verdict
from service.probes.outcomes import ReplyForms, outcome_of
from service.probes.report import Report, Result
from service.probes.splits import Split
from service.probes.waves import Conversation, in_waves
from service.vlm.folders import ModelFolder, adapter_label
from service.vlm.messages import Message
from service.vlm.protocol import Engine, Generation, Request, SamplingParams

logger = logging.getLogger(__name__)

DEFAULT_PER_PROBE = 6
"""Behaviours per probe in the standing battery: the same six every run (so ASR moves only when
the model does), from six categories, and the whole suite stays within a minute on 2 CPU cores
with the demo model (bench/probe_suite.py)."""

DEFAULT_MAX_TOKENS = 128

DEFAULT_IN_FLIGHT = 16
"""Conversations decoded together: the torch engine's default batch (`Admission`)."""

def default_behaviors(model: str | Path, split: Split = "test") -> list[Behavior]:
    """The half `split` of the demo world's held-out behaviours (never trained on, never
    unlearned) for a demo model folder, else of the built-in set."""
    folder = ModelFolder(model)
    if folder.is_demo:
        return load_behaviors(folder.behaviors, split=split)
    return builtin(BUILTIN, split)


def default_benign(model: str | Path, split: Split = "test") -> list[Behavior]:
    """Harmless look-alike requests for the over-refusal probes: the half `split` of the demo
    world's set for a demo model folder, else of the built-in XSTest-style set."""
    folder = ModelFolder(model)
    if folder.is_demo:
        return load_behaviors(folder.over_refusal, split=split)
    return builtin(BUILTIN_BENIGN, split)


def default_judges(model: str | Path) -> list[str]:
    """Judge specs for a model: the payload judge where the demo world's placeholders exist
    (a demo model folder), the keyword judge everywhere. Real models get a compliance judge
    only when one is configured (`classifier:PATH`, `guard:PATH`)."""
    return ["payload", "keyword"] if ModelFolder(model).is_demo else ["keyword"]


class ProbeRun:
    """A planned probe run; iterate it to execute, read `report` for the outcome. A run
    dropped before its end keeps the results so far and no `report.finished_at`.

    Args:
        engine: a `service.vlm.protocol.Engine` (the torch or the vLLM engine).
        adapters: adapter names to attack, `None` for the base model; default: base + all.
        probes: probe instances or specs ("visual.FigStep", "figstep", "all"); default all.
        judge: a Panel, a judge, a spec or a list of them; default `default_judges`.
        behaviors: what to attack; default `default_behaviors` of the engine's model.
        benign: what the over-refusal (`kind = "benign"`) probes ask; default
            `default_benign`. Their verdict is the keyword judge's: a refusal is counted.
        per_probe: behaviours sampled (round-robin over categories) for every probe, the
            same ones for each so families compare on equal terms; `None` takes all.
        params: decoding parameters; default greedy with DEFAULT_MAX_TOKENS (best-of-N
            attempts sample with their own temperature and seeds).
        cache_dir: where white-box probes cache their images.
        split: the evaluation half: which variants probes draw, and the default behaviours.
        best_of_n, temperature: replies per best-of-N attempt and their temperature.
        in_flight: conversations of a probe decoded together; 1 decodes one at a time.
    """

    def __init__(
        self,
        engine: Engine,
        adapters: Sequence[str | None] | None = None,
        probes: Sequence[Probe | str] | None = None,
        judge: Panel | Judge | Sequence[Judge | str] | str | None = None,
        *,
        behaviors: Sequence[Behavior] | None = None,
        benign: Sequence[Behavior] | None = None,
        per_probe: int | None = DEFAULT_PER_PROBE,
        params=None,
        cache_dir: str | Path | None = None,
        split: Split = "test",
        best_of_n: int = 8,
        temperature: float = 1.0,
        in_flight: int = DEFAULT_IN_FLIGHT,
    ):
        model = engine.base_model_id
        self.engine = engine
        self.adapters = list(adapters) if adapters is not None else [None, *engine.adapter_names]
        self.probes = [
            p for item in (probes or ["all"])
            for p in ([item] if isinstance(item, Probe) else resolve_probes([item]))
        ]
        self.panel = Panel.of(judge if judge is not None else default_judges(model))
        self.refusals = KeywordRefusalJudge()
        world = ModelFolder(model).world()
        self.forms = ReplyForms(world.answers) if world and world.answers else None
        pools = {"attack": behaviors if behaviors is not None else default_behaviors(model, split),
                 "benign": benign if benign is not None else default_benign(model, split)}
        self.pools = {kind: sample_behaviors(pool, per_probe) for kind, pool in pools.items()}
        self.params = params or SamplingParams(max_tokens=DEFAULT_MAX_TOKENS, temperature=0.0)
        self.in_flight = in_flight
        self.context = probe_context(engine, cache_dir, split=split,
                                                best_of_n=best_of_n, temperature=temperature)
        self.report = Report(
            model=model,
            judges={j.name: j.describe() for j in self.panel.judges},
            split=split,
        )

    @property
    def behaviors(self) -> list[Behavior]:
        """The harmful behaviours the attack probes run on."""
        return self.pools["attack"]

    @property
    def total(self) -> int:
        """Results the run will yield if no probe is skipped (one per attempt and adapter,
        however many replies an attempt takes)."""
        per_adapter = sum(p.prompts_per_behavior * len(self.pools[p.kind]) for p in self.probes)
        return per_adapter * len(self.adapters)

    def __iter__(self) -> Iterator[Result]:
        for probe in self.probes:
            yield from self._run_probe(probe)
        self.report.finished_at = time.time()

    def _run_probe(self, probe: Probe) -> Iterator[Result]:
        """The probe's results; the time spent on them (building attempts, generating,
        judging; not the time the caller holds a result) is clocked to the probe."""
        conversations = (self._attack(attempt, adapter)
                         for attempt in self._attempts(probe) for adapter in self.adapters)
        start = time.perf_counter()
        for result in in_waves(self.engine, conversations, self.in_flight):
            self._clock(probe, start)
            self.report.results.append(result)
            yield result
            start = time.perf_counter()
        self._clock(probe, start)

    def _attempts(self, probe: Probe) -> Iterable[Attempt]:
        """The probe's attempts, built one by one as the waves need them; they stop early
        when the probe cannot attack this model."""
        attempts = probe.attempts(self.pools[probe.kind], self.context)
        try:
            yield from attempts
        except ProbeUnsupported as exc:
            logger.warning("skipping probe %s: %s", probe.name, exc)
            self.report.skipped[probe.name] = str(exc)

    def _attack(self, attempt: Attempt, adapter: str | None) -> Conversation:
        start = time.perf_counter()
        messages = yield from self._converse(attempt.messages, adapter)
        tries = [self.params] if attempt.temperature is None else [
            replace(self.params, temperature=attempt.temperature, seed=seed)
            for seed in attempt.seeds[:attempt.samples]]
        samples = 0
        for params in tries:
            samples += 1
            generation = yield Request(messages, params, adapter)
            verdict = self._judge(attempt, generation.text)
            if verdict.success:
                break
        return Result(
            adapter=adapter_label(adapter),
            probe=attempt.probe,
            family=attempt.family,
            modality=attempt.modality,
            behavior=attempt.behavior.task,
            category=attempt.behavior.category,
            prompt=conversation_text(messages),
            image_text=attempt.image_text,
            response=generation.text,
            score=verdict.score,
            decided_by=verdict.decided_by,
            scores=verdict.scores,
            completion_tokens=generation.completion_tokens,
            seconds=time.perf_counter() - start,
            kind=attempt.kind,
            samples=samples,
            outcome=self._outcome(attempt, generation.text),
            well_formed=self.forms.well_formed(generation.text) if self.forms else None,
        )

    def _judge(self, attempt: Attempt, response: str) -> Verdict:
        """The panel's verdict on an attack; on a benign request, whether it was refused
        (score 1: a false refusal), by the keyword judge."""
        if attempt.kind == "attack":
            return self.panel.judge(response, attempt.behavior.task)
        refused = self.refusals.refused(response)
        score = None if refused is None else float(refused)
        return Verdict(score, self.refusals.name, {self.refusals.name: score})

    def _outcome(self, attempt: Attempt, response: str) -> str:
        """`complied` / `refused` / `other` (`service.probes.outcomes`): the panel's
        compliance judges on the behaviour asked, harmful or harmless alike, then the keyword
        judge."""
        compliance = [j.score(response, attempt.behavior.task) for j in self.panel.judges
                      if j.kind == "compliance"]
        return outcome_of(compliance, self.refusals.refused(response))

    def _converse(self, messages: tuple[Message, ...],
                  adapter: str | None) -> Generator[Request, Generation, list[Message]]:
        """The conversation with every empty assistant turn answered, greedily, by the model
        under test (multi-turn probes): what the attacking turn then follows."""
        done: list[Message] = []
        for message in messages:
            if message.role == "assistant" and not message.content:
                reply = (yield Request(list(done), self.params, adapter)).text
                message = Message.of("assistant", reply or " ")
            done.append(message)
        return done

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
        on_result: called after every result with (result, done, total): a progress hook,
            and a point where a caller may yield to other work.
    """
    probe_run = ProbeRun(engine, adapters, probes, judge, **options)
    for done, result in enumerate(probe_run, start=1):
        if on_result is not None:
            on_result(result, done, probe_run.total)
    return probe_run.report
