"""The plans of kafka-failover and kafka-failback against the kit's plan contract, without a broker:
what changes anything, what is missing, and the table `runbook status RUN --plan` renders."""
from __future__ import annotations

import json

from mq_runbooks.flows.kafka_failback import BackPartition, FailbackPlan
from mq_runbooks.flows.kafka_failover_plan import FailoverPlan, GroupPartition
from mq_runbooks.kit.plans import table_json


def back_partition(group: str, primary_committed: int | None, primary_offset: int = 7) -> BackPartition:
    return BackPartition(group, "primary.orders", "orders", 0, 7, primary_offset, "exact", 0,
                         primary_committed=primary_committed)


def failback_plan(partitions, switch_old: str, missing=()) -> FailbackPlan:
    return FailbackPlan("primary", "standby", ("g",), tuple(partitions), (), "kafka-clients", switch_old, "p:1",
                        tuple(missing))


def test_a_failback_plan_that_changes_nothing_says_so():
    assert not failback_plan([back_partition("g", 7)], switch_old="p:1").changes_anything()
    assert failback_plan([back_partition("g", 3)], switch_old="p:1").changes_anything(), "an offset to commit"
    assert failback_plan([back_partition("g", 7)], switch_old="s:2").changes_anything(), "the switch to move back"
    assert failback_plan([], "s:2", missing=["nope"]).missing_targets() == (
        "group 'nope' (no committed offsets on standby and no members)",)


def test_plans_carry_the_table_status_plan_renders():
    over = FailoverPlan("primary", "standby", "primary", ("b", "a"), True, None, 1.0, tuple(
        GroupPartition(g, "orders", p, "primary.orders", 10, 10, 8, 2.0, "translated", 8, 0, standby_committed=None)
        for g in ("b", "a") for p in (1, 0)), (), True, None, "kafka-clients", "file x", "p:1", "s:2", "refuse")
    back = failback_plan([back_partition("g", 3)], switch_old="s:2")
    for plan in (over, back):
        document = plan.to_json()
        assert {key: document[key] for key in table_json(plan)} == json.loads(json.dumps(table_json(plan)))
        assert len(document["columns"]) == len(document["rows"][0])
    assert [(row[0], row[2]) for row in over.rows()] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert over.changes_anything() and "| a | primary.orders | 0 |" in over.markdown()


def test_a_failover_plan_names_the_groups_that_do_not_exist():
    plan = FailoverPlan("primary", "standby", "primary", ("nope",), True, None, 1.0, (), (), True, None,
                        "kafka-clients", "file x", "p:1", "s:2", "refuse", missing_groups=("nope",))
    assert plan.missing_targets() == ("group 'nope' (no committed offsets on primary and no members)",)
    assert "**Do not exist**: group 'nope'" in plan.markdown()
