"""A run whose process dies gets its postmortem draft (outcome crashed) when someone looks at it.
(SIGKILL, noticed only by the missing heartbeats, is in test_durable_runs.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mq_runbooks.app import runs, starts
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.kit.postmortem.store import find_by_run
from mq_runbooks.base.settings import Settings
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit import journal
from tests.kafka_groups import group_at_end
from tests.run_processes import executors_of


import pytest

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


def applying_replay_run(clusters, unique, prefix: str, monkeypatch) -> tuple[str, dict, str, str]:
    """A kafka-replay run started as `runbook run` starts it, approved, and stalled right after it
    moved the offsets (its process still alive): (run id, kafka config, topic, group); the group was
    committed at the end of a one-partition topic of 2 records."""
    config, topic, group = group_at_end(clusters, unique, prefix)
    monkeypatch.setenv("RUNBOOK_INJECT_FAULT", "stall-after:alter-offsets")
    settings = Settings.from_environ()
    catalog = load_catalog(settings.catalog)
    runbook = catalog.get("kafka-replay")
    run_id = starts.start_run(settings, runbook, runbook.validate_parameters(
        {"cluster": "primary", "group": group, "to_earliest": "true"}), requested_by="alice")
    deadline = time.monotonic() + 90
    while runs.read_run(run_id).state_type != "PAUSED":
        assert time.monotonic() < deadline, "the run never reached its gate"
        time.sleep(0.3)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    while journal.last(runs.read_run(run_id).entries, "action") is None:
        assert time.monotonic() < deadline + 90, "the approved run never applied its change"
        time.sleep(0.3)
    return run_id, config, topic, group


def kill_executor(run_id: str, sig: int) -> None:
    pids = executors_of(run_id)
    assert pids, "the run's executor process was not found"
    for pid in pids:
        os.kill(int(pid), sig)


def test_status_of_a_crashed_run_writes_its_draft(clusters, unique, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_POSTMORTEM_DIR", str(tmp_path / "postmortems"))
    run_id, config, topic, group = applying_replay_run(clusters, unique, "crash", monkeypatch)
    settings = Settings.from_environ()
    kill_executor(run_id, signal.SIGTERM)  # the process dies right after it changed the offsets
    deadline = time.monotonic() + 60
    while not runs.read_run(run_id).finished:
        assert time.monotonic() < deadline, "the run was never marked as ended"
        time.sleep(0.3)
    assert runs.read_run(run_id).state_type == "CRASHED"

    shown = subprocess.run([str(Path(sys.executable).parent / "runbook"), "status", run_id],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    draft = find_by_run(settings.postmortem_dir, "kafka-replay", run_id)
    assert draft is not None and draft.meta["outcome"] == "crashed"
    outcome = journal.last(runs.read_run(run_id).entries, "outcome")
    assert "after applying" in outcome.summary and "Restore with: runbook run kafka-replay" in outcome.summary
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 0}, "the change it made is still there"
