"""A folder of this server's own, so that two servers on one host never mix their state.

BentoML points every worker of every server at `$BENTOML_HOME/prometheus_multiproc_dir` and
empties that folder whenever a server starts. Two servers on one host (or a restart beside a
running one) then share it: the second start deletes the files the first one's workers keep
writing to, and the first server's `/metrics` shows only the second one's traffic. So each start
of `bentoml serve` gets a folder of its own, `<run_dir>/<arbiter pid>-<arbiter start time>/`,
shared by its workers and by no one else. It holds Prometheus' multiprocess files
(`prometheus/`) and the latest probe report (`probe-report.json`), so that the report endpoint
and the probe gauges always describe the same runs: this server's. Folders of servers that are
gone are removed at start-up; so are the live-gauge files of this server's dead workers
(prometheus_client's `mark_process_dead`), or a worker killed mid-request would keep counting
as a request in progress. README "Operating it safely" says what an operator sees.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import psutil
from prometheus_client import multiprocess

logger = logging.getLogger("crossguard")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by BentoML for its workers and read by prometheus_client (not a crossguard setting)."""
PROBE_REPORT = "probe-report.json"
_FOLDER = re.compile(r"(\d+)-(\d+)")
_METRICS_FILE = re.compile(r"[a-z_]+_(\d+)\.db")


def owner() -> psutil.Process:
    """The process whose lifetime the folder follows: the BentoML arbiter that started this
    worker (it restarts workers and outlives them), or this process outside BentoML."""
    here = psutil.Process()
    return here.parent() if MULTIPROC_ENV in os.environ else here


def _name(process: psutil.Process) -> str:
    return f"{process.pid}-{int(process.create_time() * 1000)}"


def instance_dir(run_dir: Path) -> Path:
    """This server's folder under `run_dir`, created if needed; other servers' folders whose
    process has ended (or whose pid now belongs to another process) are removed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = run_dir / _name(owner())
    for other in run_dir.iterdir():
        match = _FOLDER.fullmatch(other.name)
        if match and other != folder and not _running(int(match[1]), other.name):
            shutil.rmtree(other, ignore_errors=True)
            logger.info("removed the run folder of a server that has ended: %s", other)
    folder.mkdir(exist_ok=True)
    return folder


def _running(pid: int, name: str) -> bool:
    try:
        return _name(psutil.Process(pid)) == name
    except psutil.Error:
        return False


def isolate_metrics(folder: Path) -> Path | None:
    """Point prometheus_client at `folder/prometheus` (under BentoML only), after dropping the
    live gauges of this server's dead workers.

    Must run in each worker before any metric value exists (prometheus_client opens its files
    on a process's first value): `service/app.py` calls it before importing the runtime.
    """
    if MULTIPROC_ENV not in os.environ:
        return None
    target = folder / "prometheus"
    target.mkdir(exist_ok=True)
    for pid in {int(m[1]) for f in target.iterdir() if (m := _METRICS_FILE.fullmatch(f.name))}:
        if not psutil.pid_exists(pid):
            multiprocess.mark_process_dead(pid, str(target))
            logger.warning("dropped the live metrics of worker %d, which died", pid)
    os.environ[MULTIPROC_ENV] = str(target)
    return target
