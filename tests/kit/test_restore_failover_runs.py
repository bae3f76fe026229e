"""The conformance round trip of `runbook restore RUN` for kafka-failover and kafka-failback, on the
main stack (the primary stays up; the clients' switch is a private file): snapshot -> act (after a run
that succeeded) -> runbook restore -> every offset the snapshot saved on the destination and the
switch are back; a value that moved since the run is said so in the restore's plan, and what the
runbooks cannot undo is named."""
from __future__ import annotations

import json

import pytest

from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import runbook_env  # noqa: F401 (a fixture)
from tests.flows.test_kafka_failover import commit
from tests.flows.test_kafka_failover_kit import checkpointed_group, committed, main_stack  # noqa: F401 (a fixture)
from tests.kit.test_restore_runs import approved_run, restored

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


def restore_preview(run_id: str) -> dict:
    shown = runbook("restore", run_id, "--plan", "--json", timeout=120)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def switch_value(switch_file) -> str:
    return json.loads(switch_file.read_text())["kafka"]["bootstrap_servers"]


def test_kafka_failover_round_trip_after_success_puts_the_standby_offsets_and_the_switch_back(
        main_stack, runbook_env, unique):
    primary, standby, switch_file = main_stack
    settings, catalog = runbook_env("kafka-failover")
    topic, groups = unique("undo-orders"), [unique("undo-a"), unique("undo-b")]
    replica = f"primary.{topic}"
    before = {}
    for index, group in enumerate(groups):
        checkpointed_group(primary, standby, topic, group)  # committed at 10 on the primary
        before[group] = {(replica, 0): 15 + index}  # where each group was on the standby before
        commit(group, before[group], servers=standby)
    view = approved_run(settings, catalog, "kafka-failover", groups=groups)
    assert switch_value(switch_file) == standby
    # MM2 translates conservatively: at most the exact position 10 on the replica
    left = {group: committed(standby, group)[(replica, 0)] for group in groups}
    assert all(offset <= 10 for offset in left.values()), "the failover moved them"
    moved, kept = groups
    commit(moved, {(replica, 0): 12}, servers=standby)  # a consumer read on after the run

    preview = restore_preview(view.id)
    rows = {row["what"]: row for row in preview["rows"]}
    assert set(rows) == {f"{g} {replica}:0 on standby" for g in groups} | {"switch kafka-clients"}
    assert [rows[f"{moved} {replica}:0 on standby"][c] for c in ("now", "restore to", "the run set", "since the run")
            ] == [12, 15, left[moved], f"moved since the run: {left[moved]} -> 12"]
    assert [rows["switch kafka-clients"][c] for c in ("now", "restore to", "the run set")] == [standby, primary, standby]
    assert preview["moved_since"] == [f"{moved} {replica}:0 on standby"]
    assert any("had none on the destination before" in line for line in preview["cannot_undo"])
    assert committed(standby, moved) == {(replica, 0): 12}, "--plan changes nothing"

    restore = restored(settings, catalog, view.id)
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    for group in groups:
        assert committed(standby, group) == before[group], "the snapshot's offsets are back on the standby"
    assert switch_value(switch_file) == primary, "the switch is back"
    assert journal.last(restore.entries, "verification").data["not_restored"] == []
    plan = journal.last(restore.entries, "plan").data
    assert plan["moved_since"] == [f"{moved} {replica}:0 on standby"] and "moved since the run" in plan["markdown"]
    outcome = journal.last(restore.entries, "outcome")
    assert outcome.data["restore_of"] == view.id and "cannot be undone" in outcome.summary
    assert committed(primary, kept) == {(topic, 0): 10}, "the primary is not touched by a failover's restore"


def test_kafka_failback_round_trip_after_success_with_the_switch_moved_since(main_stack, runbook_env, unique):
    primary, standby, switch_file = main_stack
    settings, catalog = runbook_env("kafka-failback")
    topic, group = unique("undo-back"), unique("undo-back-group")
    checkpointed_group(primary, standby, topic, group)  # committed at 10 on the primary
    commit(group, {(f"primary.{topic}", 0): 14}, servers=standby)  # it read on after a failover
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": standby}}))  # as after a failover
    view = approved_run(settings, catalog, "kafka-failback", groups=[group])
    assert committed(primary, group) == {(topic, 0): 14} and switch_value(switch_file) == primary
    elsewhere = "127.0.0.1:1"  # someone pointed the clients elsewhere after the run
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": elsewhere}}))

    preview = restore_preview(view.id)
    assert [[row[c] for c in ("what", "now", "restore to", "the run set", "since the run")] for row in preview["rows"]
            ] == [[f"{group} {topic}:0 on primary", 14, 10, 14, "as the run left it"],
                  ["switch kafka-clients", elsewhere, standby, primary, f"moved since the run: {primary} -> {elsewhere}"]]
    assert preview["moved_since"] == ["switch kafka-clients"]

    restore = restored(settings, catalog, view.id)
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert committed(primary, group) == {(topic, 0): 10}, "the primary's offset the snapshot saved is back"
    assert switch_value(switch_file) == standby, "the switch is back where the snapshot saved it"
    assert committed(standby, group) == {(f"primary.{topic}", 0): 14}, "the standby is not touched by a failback's restore"
    assert journal.last(restore.entries, "plan").data["moved_since"] == ["switch kafka-clients"]
