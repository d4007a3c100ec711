"""Each server's own folder: other servers' folders are left alone while they run, removed once
they have ended; a dead worker's live gauges are dropped (README "Operating it safely")."""

import os
import subprocess
import sys

import psutil
from prometheus_client import CollectorRegistry, Gauge, multiprocess, values

from service import instance


def _ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_folders_of_ended_servers_are_removed_running_ones_kept(tmp_path):
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / instance._name(psutil.Process(running.pid))
        ended = tmp_path / f"{_ended_pid()}-123"
        reused = tmp_path / f"{running.pid}-123"  # the pid now belongs to another process
        unrelated = tmp_path / "notes"
        for folder in (alive, ended, reused, unrelated):
            folder.mkdir()
        mine = instance.instance_dir(tmp_path)
        assert mine.name == instance._name(psutil.Process())
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [alive.name, mine.name, "notes"])
    finally:
        running.kill()


def test_a_dead_workers_live_gauges_are_dropped(tmp_path, monkeypatch):
    """A killed worker never marks itself dead: its `livesum` in-progress gauge would stay 1."""
    target = tmp_path / "prometheus"
    target.mkdir()
    dead = _ended_pid()
    registry = CollectorRegistry()
    value = values.MultiProcessValue(lambda: dead)
    monkeypatch.setenv(instance.MULTIPROC_ENV, str(target))
    monkeypatch.setattr("prometheus_client.values.ValueClass", value)
    in_progress = Gauge("in_progress", "h", multiprocess_mode="livesum", registry=registry)
    in_progress.inc()
    assert {p.name for p in target.iterdir()} == {f"gauge_livesum_{dead}.db"}

    monkeypatch.setenv(instance.MULTIPROC_ENV, str(tmp_path / "bentoml-shared"))
    assert instance.isolate_metrics(tmp_path) == target
    assert list(target.iterdir()) == []
    assert os.environ[instance.MULTIPROC_ENV] == str(target)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, str(target))
    assert all(not m.samples for m in merged.collect())


def test_outside_bentoml_nothing_is_redirected(tmp_path, monkeypatch):
    monkeypatch.delenv(instance.MULTIPROC_ENV, raising=False)
    assert instance.isolate_metrics(tmp_path) is None
    assert instance.owner().pid == os.getpid()
