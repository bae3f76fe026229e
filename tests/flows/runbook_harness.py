"""Helpers to test any runbook end to end with real runs: a catalog holding only the runbook under
test (its gate timeout shortened), starting a run, and waiting for the run to reach a point.

    settings, catalog = runbook_env("kafka-drain-stuck")            # in a test, via the fixture
    run_id = start_runbook(settings, catalog, "kafka-drain-stuck", group="billing")
    view = wait_until(run_id, paused)
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from mq_runbooks.app import runs, starts
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runbook_env(tmp_path, monkeypatch):
    """configure(runbook_id, timeout="60s", **env) -> (settings, catalog) for the runs of one test:
    a catalog of that runbook alone, its own snapshot directory, and extra RUNBOOK_* variables."""
    catalog_dir = tmp_path / "runbooks"
    catalog_dir.mkdir()

    def configure(runbook_id: str, timeout: str = "60s", **env: str):
        text = (REPO / "mq_runbooks" / "runbooks" / f"{runbook_id}.yaml").read_text()
        (catalog_dir / f"{runbook_id}.yaml").write_text(text.replace("timeout: 30m", f"timeout: {timeout}"))
        monkeypatch.setenv("RUNBOOK_CATALOG", str(catalog_dir))
        monkeypatch.setenv("RUNBOOK_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings.from_environ()
        return settings, load_catalog(settings.catalog, settings.team_catalog)

    return configure


@pytest.fixture
def team_catalog_env(tmp_path, monkeypatch):
    """configure(team_dir) -> (settings, catalog) with a team's own catalog directory alone
    (RUNBOOK_TEAM_CATALOG; the shipped catalog is left out) and the test's own snapshot directory."""

    def configure(team_dir: Path):
        empty = tmp_path / "catalog"
        empty.mkdir(exist_ok=True)
        monkeypatch.setenv("RUNBOOK_CATALOG", str(empty))
        monkeypatch.setenv("RUNBOOK_TEAM_CATALOG", str(team_dir))
        monkeypatch.setenv("RUNBOOK_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
        settings = Settings.from_environ()
        return settings, load_catalog(settings.catalog, settings.team_catalog)

    return configure


def start_runbook(settings, catalog, runbook_id: str, requested_by: str = "alice", **raw) -> str:
    """Validate `raw` parameters (cluster defaults to primary) and start a real run; its id."""
    runbook = catalog.get(runbook_id)
    params = runbook.validate_parameters({"cluster": "primary", **raw})
    return starts.start_run(settings, runbook, params, requested_by=requested_by)


def wait_until(run_id, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    view = None
    while time.monotonic() < deadline:
        view = runs.read_run(run_id)
        if predicate(view):
            return view
        time.sleep(0.3)
    last = view.entries[-3:] if view else []
    raise AssertionError(f"run {run_id} did not get there in {timeout}s; last: {view and view.state} {last}")


def paused(view):
    return view.state_type == "PAUSED" and journal.last(view.entries, "approval_requested") is not None


def finished(view):
    return view.finished


def kinds(view):
    return [entry.kind for entry in view.entries]


def drift_after_one_approval(view):
    """The run succeeded on the first answer at its gate (asked once, no answer refused); its journal's
    drift note (what moved by itself while the gate waited, reported, not asked again)."""
    assert view.succeeded, (view.message, view.entries[-4:])
    assert [e.data["gate"] for e in view.entries if e.kind == "approval_requested"] == [1], "asked once"
    assert "approval_refused" not in kinds(view)
    [drift] = [e for e in view.entries if e.kind == "note" and "drift" in e.data]
    assert "the approved plan still holds" in drift.summary, drift.summary
    return drift


def asked_again(view):
    """The run asked a second time after a changed intent: (the note of what changed, the plan asked),
    checked to agree with each other and with the digest the gate asks about."""
    note = next(e for e in view.entries if e.kind == "note" and "changed" in e.data)
    assert "the plan changed after approval" in note.summary
    asked = journal.last(view.entries, "plan")
    assert asked.data["changed_since_approval"] == note.data["changed"]
    assert asked.data["markdown"].startswith("**Changed since the approved plan** (old -> new):")
    assert journal.last(view.entries, "approval_requested").data["plan_digest"] == asked.data["digest"]
    return note, asked


def at_second_gate(view):
    """wait_until predicate: the run waits at its gate's second round."""
    return paused(view) and journal.last(view.entries, "approval_requested").data["gate"] == 2
