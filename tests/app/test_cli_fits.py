"""The CLI fits a terminal and a pipe: `runs`, `status --plan`, `plan` and `postmortems list` at 80
and 120 columns (a real terminal, through `script`) keep every column or fold rows, and never cut an
id, a target, a runbook id or a number; piped they print whole values, tab-separated with a header;
`--json` gives plan rows as objects and the outcome with its numbers."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import uuid

import pytest

from mq_runbooks.app.cli_base import column_widths
from mq_runbooks.kit.postmortem.store import save_draft
from tests.app.test_cli import RUNBOOK, runbook
from tests.flows.runbook_harness import finished, paused, wait_until
from tests.kafka_groups import commit_at_end, topic_of_two

WIDTHS = (80, 120)


def on_terminal(args: list[str], columns: int, env: dict[str, str] | None = None) -> str:
    """What a person sees running `runbook ARGS` in a terminal `columns` wide (colours and the pty's CR off)."""
    result = subprocess.run(["script", "-qec", shlex.join([str(RUNBOOK), *args]), "/dev/null"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": str(columns), **(env or {})})
    assert result.returncode == 0, result.stdout
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", result.stdout).replace("\r", "")


def assert_whole(text: str, values: list[str], columns: int) -> None:
    for value in values:
        assert value in text, f"{value!r} is not whole at {columns} columns:\n{text}"
    assert "…" not in text, text


# Lines of prose, not of a table: they run on, whole, and the terminal wraps them.
PROSE = re.compile(r"^(message: |run |waiting for |plan computed |plan digest |plan \(|  approve: |  reject: |\d\d:\d\d:\d\d )")


def assert_fits(text: str, columns: int, longest_value: int) -> None:
    """Every line of a table fits the terminal, but for a `column: value` pair longer than it (which
    runs on, whole)."""
    for line in text.splitlines():
        if PROSE.match(line):
            continue
        assert len(line) <= max(columns, longest_value + 20), f"{len(line)} > {columns}: {line!r}"


def test_column_widths_cut_no_word_and_fold_when_nothing_fits():
    # n columns take sum(widths) + 2 (n - 1) characters; a word, and a no_wrap value, is never cut
    assert column_widths(["id", "message"], [["a1b2", "done in 3 s"]], ["id"], 13) == [4, 7]
    assert column_widths(["id", "message"], [["a1b2", "done in 3 s"]], ["id"], 40) == [4, 11]
    assert column_widths(["id", "message"], [["a1b2", "reconciliation"]], ["id"], 19) is None  # 4 + 14 + 2
    assert column_widths(["id", "message"], [["a1b2c3d4e5", "ok"]], ["id"], 14) is None  # the id is never wrapped


@pytest.fixture(scope="module")
def long_run(clusters):
    """A kafka-replay run on a long topic and group, requested by alice, waiting at its gate."""
    config = clusters.kafka_cluster("primary").client_config()
    suffix = uuid.uuid4().hex[:8]
    topic = topic_of_two(config, f"payments-settlement-reconciliation-events-{suffix}")
    group = commit_at_end(config, topic, f"billing-settlement-reconciliation-consumers-{suffix}")
    started = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p",
                      "to_earliest=true", "--as", "alice", "--json")
    assert started.returncode == 0, started.stderr
    view = wait_until(json.loads(started.stdout)["run_id"], paused, timeout=90)
    return view, topic, group


def test_runs_keeps_every_column_whole_on_a_terminal_and_piped(long_run):
    view, topic, group = long_run
    target = f"primary/{group}"  # the runbook's own words (the lock key is `lock` in --json)
    for columns in WIDTHS:
        text = on_terminal(["runs", "--runbook", "kafka-replay", "--limit", "3"], columns)
        assert_whole(text, [view.id[:8], view.name, "kafka-replay", "Suspended", target, "alice"], columns)
        ours = text[text.index(view.id[:8]):]
        for column in ("run", "name", "runbook", "state", "target", "requested", "started", "message"):
            assert column in text, (column, text)
        assert "started: 20" in ours or "started" in text.split(view.id[:8])[0], "the started column is kept"
        assert "waiting for 1 of @kafka-oncall" in " ".join(ours.split()), "the message is kept, wrapped by words"
        assert_fits(text, columns, len(target))
    piped = runbook("runs", "--runbook", "kafka-replay", "--limit", "3")
    header, *lines = piped.stdout.splitlines()
    assert header.split("\t") == ["run", "name", "runbook", "state", "target", "requested by", "started", "message"]
    [ours] = [line.split("\t") for line in lines if line.startswith(view.id)]
    assert ours[:6] == [view.id, view.name, "kafka-replay", "Suspended", target, "alice"]
    assert ours[6].startswith(dt.date.today().isoformat()[:4]) and ours[7].startswith("waiting for")


def test_status_plan_shows_the_deadline_the_plan_age_and_every_value_whole(long_run):
    view, topic, group = long_run
    values = [view.id, topic, group, "kafka-replay"]
    for columns in WIDTHS:
        text = on_terminal(["status", view.id, "--plan"], columns)
        assert_whole(text, values, columns)
        flat = " ".join(text.split())
        assert re.search(r"waiting for 1 approval\(s\) from @kafka-oncall[^:]* until 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC "
                         r"\((29|30)m \d+s left\)", flat), text
        assert re.search(r"plan computed at 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC, (\d+m )?\d+s ago", flat), text
        for number in ("partition: 0", "current: 2", "target: 0", "log end: 2") if columns == 80 else ():
            assert number in text, (number, text)  # folded at 80: each value named
        assert_fits(text, columns, len(topic))
    piped = runbook("status", view.id, "--plan")
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    header = lines.index("topic\tpartition\tcurrent\ttarget\tlog start\tlog end\treplayed (+) / skipped (-)")
    assert lines[header + 1].split("\t") == [topic, "0", "2", "0", "0", "2", "+2"]
    assert "│" not in piped.stdout and "…" not in piped.stdout


def test_plan_keeps_every_value_whole_and_json_rows_are_objects(long_run):
    _, topic, group = long_run
    args = ["plan", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true"]
    for columns in WIDTHS:
        text = on_terminal(args, columns)
        assert_whole(text, [topic, group, "+2"], columns)
        assert_fits(text, columns, len(f"runbook run kafka-replay {' '.join(args[2:])}") + 40)
    piped = runbook(*args)
    assert f"{topic}\t0\t2\t0\t0\t2\t+2" in piped.stdout.splitlines()
    document = json.loads(runbook(*args, "--json").stdout)
    assert document["rows"] == [{"topic": topic, "partition": 0, "current": 2, "target": 0, "log start": 0,
                                 "log end": 2, "replayed (+) / skipped (-)": "+2"}]


# After the renderings (tests run in file order): it approves the shared run.
def test_status_json_has_plan_rows_as_objects_the_deadline_and_the_outcome_with_its_numbers(long_run):
    view, topic, group = long_run
    waiting = json.loads(runbook("status", view.id, "--json").stdout)
    deadline = dt.datetime.fromisoformat(waiting["deadline"])
    assert dt.timedelta(minutes=25) < deadline - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(minutes=30)
    assert waiting["plan_at"] and 0 <= waiting["plan_age_s"] < 300
    [plan] = [entry for entry in waiting["journal"] if entry["kind"] == "plan"]
    assert plan["data"]["rows"] == [{"topic": topic, "partition": 0, "current": 2, "target": 0, "log start": 0,
                                     "log end": 2, "replayed (+) / skipped (-)": "+2"}]
    assert waiting["outcome"] is None
    approved = runbook("approve", view.id, "--as", "carol")
    assert approved.returncode == 0, approved.stderr
    wait_until(view.id, finished, timeout=90)
    done = json.loads(runbook("status", view.id, "--json").stdout)
    assert done["state"] == "Completed", done["message"]
    assert done["deadline"] is None and done["outcome"]["outcome"] == "succeeded"
    assert done["outcome"]["partitions"] == 1 and done["outcome"]["partitions_checked"] == 1, done["outcome"]


def test_postmortems_list_keeps_long_ids_and_targets_whole(tmp_path):
    directory = tmp_path / "pm"
    now = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.timezone.utc)
    runbook_id = "rabbitmq-drain-stuck-consumers-of-the-settlement-team"
    target = "primary/settlement-reconciliation/orders-settlement-reconciliation-dead-letters"
    first = save_draft(directory, runbook_id, str(uuid.uuid4()), "rolled back", "# Postmortem\n", now=now,
                       targets=[target])[0]
    second = save_draft(directory, "kafka-replay", str(uuid.uuid4()), "succeeded", "# Postmortem\n",
                        now=now + dt.timedelta(minutes=5), targets=["primary/billing-settlement-reconciliation-consumers"])[0]
    env = {"RUNBOOK_POSTMORTEM_DIR": str(directory)}
    for columns in WIDTHS:
        text = on_terminal(["postmortems", "list"], columns, env)
        assert_whole(text, [first.id, second.id, "draft", target, "primary/billing-settlement-reconciliation-consumers"],
                     columns)
        assert "rolled back" in " ".join(text.split())
        assert "target" in text, "the target column is kept"
        assert_fits(text, columns, len(first.id) + len(str(directory)))
    piped = runbook("postmortems", "list", env=env)
    header, *lines = piped.stdout.splitlines()
    assert header.split("\t")[:5] == ["id", "runbook", "target", "status", "outcome"]
    rows = [line.split("\t") for line in lines]
    assert [row[:5] for row in rows] == [
        [second.id, "kafka-replay", "primary/billing-settlement-reconciliation-consumers", "draft", "succeeded"],
        [first.id, runbook_id, target, "draft", "rolled back"]]
