"""`runbook postmortems list` as people read it: whole ids, targets and whole words at 80 columns,
and tab-separated lines when piped."""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess

from mq_runbooks.kit.postmortem.store import mark_reviewed, save_draft
from tests.app.test_cli import RUNBOOK, runbook

RUN_IDS = ["1a2b3c4d-0000-4000-8000-00000000000a", "5e6f7a8b-0000-4000-8000-00000000000b"]


def _drafts(directory):
    now = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.timezone.utc)
    first = save_draft(directory, "rabbitmq-drain-stuck", RUN_IDS[0], "succeeded", "# Postmortem\n", now=now,
                       targets=["primary//orders"])[0]
    second = save_draft(directory, "kafka-failover", RUN_IDS[1], "rolled back", "# Postmortem\n",
                        now=now + dt.timedelta(minutes=5), targets=["primary->standby/billing"])[0]
    mark_reviewed(directory, first.id, "carol", "fine")
    return first, second


def test_postmortems_list_is_readable_at_80_columns(tmp_path):
    first, second = _drafts(tmp_path / "pm")
    result = subprocess.run(["script", "-qec", f"{RUNBOOK} postmortems list", "/dev/null"], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "80", "RUNBOOK_POSTMORTEM_DIR": str(tmp_path / "pm")})
    assert result.returncode == 0, result.stdout
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).replace("\r", "")  # colours, bold and the pty's CR off
    title, *table = text.splitlines()
    assert title.startswith("2 postmortem(s) in ")  # the directory's path is never cut
    assert max(len(line) for line in table) <= 80, text
    # 80 columns hold no table of whole ids and targets: each row folds into `column: value` pairs.
    flat = " ".join(text.split())
    assert f"id: {second.id} target: primary->standby/billing status: draft outcome: rolled back at: 03:05" in flat, text
    assert f"id: {first.id} target: primary//orders status: reviewed outcome: succeeded at: 03:00 reviewed by: carol" \
        in flat, text
    assert "…" not in text


def test_postmortems_list_piped_is_tab_separated(tmp_path):
    first, second = _drafts(tmp_path / "pm")
    result = runbook("postmortems", "list", env={"RUNBOOK_POSTMORTEM_DIR": str(tmp_path / "pm")})
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header == ["id", "runbook", "target", "status", "outcome", "created", "reviewed by"]
    assert rows == [[second.id, "kafka-failover", "primary->standby/billing", "draft", "rolled back", rows[0][5], ""],
                    [first.id, "rabbitmq-drain-stuck", "primary//orders", "reviewed", "succeeded", rows[1][5], "carol"]]
    assert rows[0][5].startswith("2026-11-29")
