"""Which adapter answers the requests that name no model: the default, a canary share beside it,
and the gated promotion that changes them (Flagger's and Argo Rollouts' loop, over our probes).

An adapter becomes the default only after the probe battery has run on it, on the current
default and on the base model (the gate's half, validation by default) and every rule of
`service.gate` holds; the verdict is saved (atomically, beside the probe reports) before the
default changes, so a crash at any point mid-gate leaves the default as it was. A failing
candidate stays loaded and reachable by name. A canary sends `percent` % of the un-named
requests to a candidate, sticky per client key; it ends with a promotion (the gate re-run) or a
rollback. The state lives in the worker (one per server by default; scale with replicas): a
restarted worker starts again from the settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from service import metrics
from service.errors import BadRequest, Conflict, CrossguardError, NotFound
from service.gate import Measures, judge
from service.probe_scheduler import read_saved, save_text
from service.settings import ServiceSettings
from service.vlm.folders import BASE, adapter_label

logger = logging.getLogger("crossguard.rollout")

GATE_VERDICT = "gate-verdict.json"
"""This server's last verdict, in its run folder (`service.instance`), as the probe report."""


class GateFailed(Conflict):
    """409 carrying the verdict: which rules failed, with their numbers."""

    def __init__(self, verdict: dict):
        super().__init__(f"adapter {verdict['candidate']!r} failed the promotion gate: "
                         + "; ".join(verdict["failures"]), param="name", code="gate_failed")
        self.verdict = verdict

    def body(self) -> dict:
        return {**super().body(), "verdict": self.verdict}


@dataclass(frozen=True)
class Canary:
    candidate: str
    percent: float
    started_at: float

    def takes(self, client: str | None) -> bool:
        """Whether this request goes to the candidate: a client key always lands on the same
        side (its hash's place in [0, 100)); a request without one draws afresh."""
        if client is None:
            point = random.random()
        else:
            point = int.from_bytes(hashlib.sha256(client.encode()).digest()[:8], "big") / 2**64
        return point * 100 < self.percent


class Rollout:
    def __init__(self, engine, settings: ServiceSettings, run_folder: Path, probes):
        """`probes`: the server's `ProbeScheduler`, whose lock keeps gate and probe runs
        from overlapping."""
        self.engine = engine
        self.settings = settings
        self.probes = probes
        self.verdict_files = (run_folder / GATE_VERDICT,
                              settings.home / "probe-reports" / "gate-latest.json")
        self.default: str | None = settings.default_adapter
        self.canary: Canary | None = None
        self.promoting: str | None = None
        self._changing = threading.Lock()
        metrics.declare_promotions()
        metrics.record_default(adapter_label(self.default), None)
        if settings.canary_adapter:
            self.start_canary(settings.canary_adapter, settings.canary_percent)

    def route(self, client: str | None) -> str | None:
        """The adapter for a request naming no model (None: the base)."""
        canary = self.canary
        return canary.candidate if canary and canary.takes(client) else self.default

    def state(self) -> dict:
        return {"default": adapter_label(self.default),
                "canary": asdict(self.canary) if self.canary else None,
                "promoting": self.promoting, "gate": self.settings.gate}

    def _loaded(self, name: str, what: str) -> None:
        if name in (BASE, self.settings.served_model_name):
            raise BadRequest(f"the base model cannot be a {what}: it is not an adapter",
                             param="name", code="base_not_adapter")
        if name not in self.engine.adapter_names:
            raise NotFound(f"adapter {name!r} is not loaded", param="name",
                           code="model_not_found")
        if name == self.default:
            raise BadRequest(f"adapter {name!r} is already the default", param="name",
                             code="already_default")

    def promote(self, name: str) -> dict:
        """Gate `name` and make it the default if every rule holds; the verdict either way
        (raised inside GateFailed, 409, when a rule fails)."""
        if not self._changing.acquire(blocking=False):
            raise Conflict("a promotion is already in progress", code="promotion_in_progress")
        try:
            self._loaded(name, "default")
            self.promoting = name
            return self._promote_locked(name)
        finally:
            self.promoting = None
            self._changing.release()

    def _promote_locked(self, name: str) -> dict:
        if self.settings.gate == "off":
            logger.warning("PROMOTING %r WITHOUT THE GATE (CROSSGUARD_GATE=off)", name)
            now = time.time()
            verdict = {"candidate": name, "incumbent": adapter_label(self.default),
                       "gate": "off", "passed": None, "promoted": True, "checks": [],
                       "failures": [], "split": None, "started_at": now, "finished_at": now,
                       "seconds": 0.0, "thresholds": None, "report": None}
            return self._apply(name, self._save(verdict), "forced")
        try:
            verdict = self._run_gate(name)
        except Conflict:
            raise
        except Exception as exc:
            metrics.record_promotion("error")
            logger.exception("promotion gate for %r failed to run; the default stays %r",
                             name, adapter_label(self.default))
            raise CrossguardError(f"the promotion gate could not run: {exc}",
                                  code="gate_error") from None
        if not verdict["passed"]:
            metrics.record_promotion("rejected")
            logger.warning("adapter %r failed the promotion gate: %s", name,
                           "; ".join(verdict["failures"]))
            raise GateFailed(verdict)
        return self._apply(name, verdict, "promoted")

    def _run_gate(self, name: str) -> dict:
        """Probe base, the current default and `name`; judge; save the verdict (promoted
        only once saved)."""
        incumbent = self.default
        adapters = [None, *([incumbent] if incumbent else []), name]
        started = time.time()
        logger.info("promotion gate for %r against %r started", name, adapter_label(incumbent))
        report = self.probes.run_for(adapters, self.settings.gate_split)
        gate = judge(*(Measures.from_report(report, adapter_label(a))
                       for a in (name, None, incumbent)), self.settings.gate_limits,
                     self.settings.gate_skip)
        finished = time.time()
        verdict = self._save({
            **gate.to_dict(), "gate": "on", "promoted": gate.passed,
            "split": self.settings.gate_split, "started_at": started, "finished_at": finished,
            "seconds": finished - started, "thresholds": asdict(self.settings.gate_limits),
            "report": report.to_dict(results=False)})
        metrics.record_gate(gate)  # once saved: the gauges and GET /v1/probes/gate agree
        logger.info("promotion gate for %r: %s in %.1f s", name,
                    "passed" if gate.passed else "failed", verdict["seconds"])
        return verdict

    def _save(self, verdict: dict) -> dict:
        text = json.dumps(verdict)
        for file in self.verdict_files:
            save_text(file, text)
        return verdict

    def _apply(self, name: str, verdict: dict, result: str) -> dict:
        previous, self.default = self.default, name
        if self.canary and self.canary.candidate == name:
            self._end_canary()
        metrics.record_promotion(result)
        metrics.record_default(name, adapter_label(previous))
        logger.warning("default adapter is now %r (was %r)", name, adapter_label(previous))
        return verdict

    def latest_verdict(self) -> dict:
        verdict = self.latest_or_none()
        if verdict is None:
            raise NotFound("no promotion gate has run since this server started",
                           code="no_gate_verdict")
        return verdict

    def latest_or_none(self) -> dict | None:
        """This server's last verdict (`None` before the first)."""
        return read_saved(self.verdict_files[0])

    def start_canary(self, name: str, percent: float) -> dict:
        self._loaded(name, "canary")
        if self.canary is not None:
            raise Conflict(f"a canary of {self.canary.candidate!r} is running; promote or roll "
                           "it back first", code="canary_in_progress")
        self.canary = Canary(name, percent, time.time())
        metrics.record_canary(name, percent)
        logger.warning("canary: %.1f %% of requests naming no model go to %r", percent, name)
        return self.state()

    def end_canary(self, action: str) -> dict:
        """`promote`: the gate on the candidate (the canary ends either way); `rollback`: the
        default stays."""
        canary = self.canary
        if canary is None:
            raise NotFound("no canary is running", code="no_canary")
        if action == "rollback":
            self._end_canary()
            metrics.record_promotion("rolled_back")
            logger.warning("canary of %r rolled back", canary.candidate)
            return self.state()
        try:
            return self.promote(canary.candidate)
        except GateFailed:
            self._end_canary()
            raise

    def _end_canary(self) -> None:
        canary, self.canary = self.canary, None
        if canary is not None:
            metrics.record_canary(canary.candidate, 0)

    def guard_unload(self, name: str) -> None:
        """The default, a running canary's candidate and an adapter being gated cannot be
        unloaded (409)."""
        if name in (self.default, self.promoting) or (self.canary and
                                                      self.canary.candidate == name):
            raise Conflict(f"adapter {name!r} is the default, the canary or being gated; "
                           "promote another or end the canary first", param="name",
                           code="adapter_in_use")
