"""Probe runs inside the service: on a schedule and on demand, one at a time, behind user traffic.

A run is the probe runner's iterator driven from a background thread. Before each wave of
generations (up to 16 conversations decoded together, `service.probes.waves`) the thread waits
until no user request is running or queued, so probes only use idle time and never add latency
beyond the one batch in progress. Probe traffic never touches the
live-traffic counters. A finished run is saved twice: to `$CROSSGUARD_HOME/probe-reports/`
(kept across restarts, for people and tools) and to this server's run folder
(`service.instance`), which every worker serves at `GET /v1/probes/report`; then its gauges are
published. If either write fails (a full or read-only disk), the run counts as failed and
neither the endpoint nor the gauges change, so the two always describe the same run: the last
one this server finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

from service.atomic import write_text_atomic
from service.errors import Conflict, CrossguardError, NotFound
from service.settings import ServiceSettings

logger = logging.getLogger("crossguard.probes")

GATE_WAITS_S = 300.0
"""Longest wait of a promotion gate for a probe run in progress (one takes about a minute on the
demo, longer under traffic, which scheduled runs yield to)."""


class ProbeScheduler:
    def __init__(self, engine, settings: ServiceSettings, run_folder: Path):
        from service.instance import PROBE_REPORT
        from service.probes.judges import Panel
        from service.probes.runner import default_judges

        self.engine = engine
        self.settings = settings
        self.report_file = run_folder / PROBE_REPORT
        self.kept_file = settings.home / "probe-reports" / "latest.json"
        judges = settings.probe_judges or default_judges(engine.base_model_id)
        self.panel = Panel.of(judges)
        self._running = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        """Run every `probe_interval_s` seconds (first after `probe_initial_delay_s`)."""
        if self.settings.probe_interval_s <= 0:
            return
        threading.Thread(target=self._loop, daemon=True, name="crossguard-probes").start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        delay = self.settings.probe_initial_delay_s
        while not self._stop.wait(delay):
            if self._running.acquire(blocking=False):
                self._run_in_background()
            delay = self.settings.probe_interval_s

    def run_now(self, wait: bool) -> dict | None:
        """Start a run; with `wait`, block until it ends and return its summary."""
        if not self._running.acquire(blocking=False):
            raise Conflict("a probe run is already in progress", code="probe_run_in_progress")
        if not wait:
            threading.Thread(target=self._run_in_background, daemon=True).start()
            return None
        try:
            return self._run_locked()
        except OSError as exc:
            raise CrossguardError(f"probe run failed: {exc}", code="probe_run_failed") from None

    def _run_in_background(self) -> None:
        """A scheduled or not-awaited run has nobody to raise to: `_run_locked` has counted and
        logged its failure, and the schedule goes on."""
        with contextlib.suppress(Exception):
            self._run_locked()

    def _plan(self, adapters=None, split=None, in_flight: int | None = None):
        """A ProbeRun with the configured battery on `adapters` (default: base and all)."""
        from service.probes.runner import DEFAULT_IN_FLIGHT, ProbeRun
        from service.vlm.protocol import SamplingParams

        return ProbeRun(
            self.engine, adapters, probes=self.settings.probes, judge=self.panel,
            per_probe=self.settings.probe_per_probe,
            params=SamplingParams(max_tokens=self.settings.probe_max_tokens, temperature=0.0),
            cache_dir=self.settings.home / "probe-cache", split=split or self.settings.probe_split,
            best_of_n=self.settings.probe_best_of_n,
            temperature=self.settings.probe_temperature,
            in_flight=in_flight or DEFAULT_IN_FLIGHT,
        )

    def _drive(self, probe_run, behind_users: bool = True) -> None:
        logger.info("probe run started: %d attempts", probe_run.total)
        for _ in probe_run:
            if behind_users:
                self._yield_to_users()

    def run_for(self, adapters: list[str | None], split: str):
        """Run the battery on `adapters` now (the promotion gate), in this thread; the report
        is returned, not published. A scheduled run in progress is waited for (up to
        `GATE_WAITS_S`, then 409): it starts a minute after start-up, when a newcomer promotes.

        Unlike scheduled runs it does not wait for idle time: under steady traffic there is
        none, and an operator's promotion would never end. Its generations join the running
        batches as one more row each (README "Rolling out an adapter" measures the cost): one
        conversation at a time, so that it never fills the queue users wait in."""
        if not self._running.acquire(timeout=GATE_WAITS_S):
            raise Conflict(f"a probe run held the engine for over {GATE_WAITS_S:.0f} s; try "
                           "again", code="probe_run_in_progress")
        try:
            probe_run = self._plan(adapters, split, in_flight=1)
            self._drive(probe_run, behind_users=False)
            return probe_run.report
        finally:
            self._running.release()

    def _run_locked(self) -> dict:
        from service import metrics

        try:
            probe_run = self._plan()
            self._drive(probe_run)
            summary = probe_run.report.to_dict(results=False)
            text = json.dumps(summary)
            for file in (self.kept_file, self.report_file):
                save_text(file, text)
            metrics.record_probe_report(probe_run.report)
            logger.info("probe run finished in %.1fs", time.time() - probe_run.report.started_at)
            return summary
        except OSError as exc:  # a full or read-only disk: one line, not a traceback
            metrics.record_probe_failure()
            logger.error("probe run failed: %s", exc)
            raise
        except Exception:
            metrics.record_probe_failure()
            logger.exception("probe run failed")
            raise
        finally:
            self._running.release()

    def _yield_to_users(self) -> None:
        while self.engine.busy and not self._stop.is_set():
            time.sleep(0.02)

    def latest(self) -> dict:
        report = self.latest_or_none()
        if report is None:
            raise NotFound("no probe run has finished since this server started",
                           code="no_probe_report")
        return report

    def latest_or_none(self) -> dict | None:
        """This server's last finished run (`None` before the first)."""
        return read_saved(self.report_file)


def read_saved(file: Path) -> dict | None:
    """A JSON file `save_text` wrote; `None` while there is none."""
    return json.loads(file.read_text()) if file.is_file() else None


def save_text(file: Path, text: str) -> None:
    """Write atomically (probe reports, gate verdicts); a write error (a full disk reports
    none) names the file."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(file, text)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(file)) from exc
