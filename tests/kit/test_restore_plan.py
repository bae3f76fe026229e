"""The plan of a restore (kit/restore_plan.py) without a broker, and which shipped runbooks restore
in a run of their own (the README and the guide name exactly those)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.conformance import steps_of
from mq_runbooks.kit.driver import RunbookSteps
from mq_runbooks.kit.restore_plan import RestoreItem, RestorePlan, not_restorable, restore_of

REPO = Path(__file__).resolve().parents[2]


def plan(*items: RestoreItem, cannot_undo: tuple[str, ...] = ()) -> RestorePlan:
    return RestorePlan(of_run="1a2b3c4d-0000", runbook="kafka-replay", target="primary/billing", items=items,
                       cannot_undo=cannot_undo, restore_command="runbook run kafka-replay ...")


def test_the_plan_is_a_row_per_value_not_as_saved_and_says_what_moved_since_the_run():
    restore = plan(RestoreItem("orders:0", saved=10, now=4, left=4), RestoreItem("orders:1", saved=10, now=7, left=4),
                   RestoreItem("orders:2", saved=10, now=10, left=4), cannot_undo=("the dead-letter copies stay",))
    assert restore.rows() == [("orders:0", 4, 10, 4, "as the run left it"),
                              ("orders:1", 7, 10, 4, "moved since the run: 4 -> 7")]
    assert restore.summary() == ("restore 2 of 3 saved value(s) of primary/billing from the snapshot of run 1a2b3c4d "
                                 "(kafka-replay); 1 moved since the run")
    warnings = list(restore.warnings())
    assert warnings[0].startswith("orders:1 moved since the run (4 -> 7): the restore sets it to 10")
    assert "cannot be undone: the dead-letter copies stay" in warnings
    assert "1 saved value(s) are already as the snapshot saved them: left alone" in warnings
    markdown = restore.markdown()
    assert "| orders:1 | 7 | 10 | 4 | moved since the run: 4 -> 7 |" in markdown and "cannot be undone" in markdown
    document = restore.to_json()
    assert (document["restore_of"], document["moved_since"], document["saved_values"]) == ("1a2b3c4d-0000",
                                                                                          ["orders:1"], 3)
    assert plan(RestoreItem("orders:0", saved=10, now=10)).changes_anything() is False


def test_the_digest_binds_what_is_put_back_not_the_values_that_move_while_the_gate_waits():
    approved = plan(RestoreItem("orders:0", saved=10, now=4, left=4))
    assert plan(RestoreItem("orders:0", saved=10, now=6, left=4)).digest() == approved.digest()
    assert plan(RestoreItem("orders:0", saved=11, now=4, left=4)).digest() != approved.digest()
    assert plan(RestoreItem("orders:0", saved=10, now=4, left=4),
                RestoreItem("orders:1", saved=10, now=4, left=4)).digest() != approved.digest()


def test_a_restore_run_is_named_by_its_trigger():
    assert restore_of({"source": "cli", "restore_of": "1a2b"}) == "1a2b"
    assert restore_of({"source": "slack"}) is None and restore_of(None) is None


def restorable_runbooks() -> set[str]:
    catalog = load_catalog(Settings.from_environ().catalog)
    found = set()
    for runbook in catalog:
        steps = steps_of(runbook)
        if steps is not None and type(steps).restore_items is not RunbookSteps.restore_items:
            assert type(steps).snapshot is not RunbookSteps.snapshot, f"{runbook.id}: restore_items without a snapshot"
            found.add(runbook.id)
    return found


def test_the_readme_and_the_guide_name_exactly_the_runbooks_that_restore_in_a_run():
    restorable = restorable_runbooks()
    assert {"kafka-replay", "kafka-drain-stuck", "kafka-failover", "kafka-failback", "redis-streams-replay",
            "redis-streams-drain-stuck", "rabbitmq-failover", "rabbitmq-failback"} <= restorable
    readme = (REPO / "README.md").read_text()
    guide = (REPO / "docs" / "writing-runbooks.md").read_text()
    listed = re.search(r"Runbooks\s+that restore this way: (.*?)\.\n", readme, re.S).group(1)
    assert set(re.findall(r"`([a-z0-9-]+)`", listed)) == restorable
    listed = re.search(r"The\s+shipped runbooks that restore this way: (.*?)\.\n", guide, re.S).group(1)
    assert set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)+", listed)) == restorable


def test_a_runbook_that_cannot_undo_what_it_did_says_what_when_a_restore_is_refused():
    catalog = load_catalog(Settings.from_environ().catalog)
    for runbook_id in ("artemis-dlq-redeliver", "artemis-drain-stuck", "rocketmq-dlq-resend"):
        steps = steps_of(catalog.get(runbook_id))
        assert type(steps).restore_items is RunbookSteps.restore_items, f"{runbook_id} puts nothing back"
        refusal = not_restorable(runbook_id, steps.cannot_undo, None)
        assert refusal.startswith(f"{runbook_id} has nothing a restore run can put back: it cannot undo "
                                  f"{steps.cannot_undo[0]}") and "no command was saved" not in refusal
    assert "closed connections" in " ".join(steps_of(catalog.get("artemis-drain-stuck")).cannot_undo)


SHIPPED = load_catalog(Settings.from_environ().catalog)


@pytest.mark.parametrize("runbook_id", [r.id for r in SHIPPED])
def test_every_shipped_runbook_with_a_snapshot_restores_in_a_run_or_says_what_it_cannot_undo(runbook_id):
    steps = steps_of(SHIPPED.get(runbook_id))
    assert steps is not None
    kind = type(steps)
    if kind.snapshot is RunbookSteps.snapshot:
        return  # nothing saved, nothing to restore
    restores = kind.restore_items is not RunbookSteps.restore_items
    assert restores or kind.cannot_undo, (f"{runbook_id} saves a snapshot but neither restores in a run "
                                          f"(restore_items) nor declares what it cannot undo (cannot_undo)")
    if restores:
        assert kind.restore is not RunbookSteps.restore, f"{runbook_id}: restore_items without restore()"
    assert all(isinstance(line, str) and len(line) > 20 for line in kind.cannot_undo), "each in words"


def test_a_runbook_that_restores_nothing_in_a_run_says_what_it_cannot_undo():
    said = not_restorable("rabbitmq-drain-stuck", ("the connections it closed stay closed",), None)
    assert said == "rabbitmq-drain-stuck has nothing a restore run can put back: it cannot undo the connections it " \
                   "closed stay closed"
    assert "restore by hand: runbook run x" in not_restorable("team-runbook", (), "runbook run x")


def test_what_the_run_set_is_read_from_its_last_plan_by_key_columns():
    import datetime as dt

    from mq_runbooks.kit.journal import Entry
    from mq_runbooks.kit.restore_plan import planned

    at = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)
    columns = ["topic", "broker", "queue", "current", "target"]
    first = Entry(at, "plan", "first", {"columns": columns, "rows": [["orders", "broker-a", "0", 5, 1]]})
    last = Entry(at, "plan", "again", {"columns": columns, "rows": [["orders", "broker-a", "0", 5, 2],
                                                                    ["orders", "broker-a", 1, 7, 3]]})
    assert planned([first, last], ("topic", "broker", "queue"), "target") == {
        ("orders", "broker-a", 0): 2, ("orders", "broker-a", 1): 3}, "the last plan, a queue as a whole number"
    assert planned([first, last], ("topic", "partition"), "target") == {}, "a plan without those columns"
    assert planned([], ("topic",), "target") == {}
