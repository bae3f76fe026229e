"""kafka-drain-stuck's plan as the kit's plan contract, with no broker: what the gate, `runbook plan`,
`status --plan`, Slack and the postmortem read from it."""
from __future__ import annotations

import pytest

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.kafka_drain_plan import DrainPlan, StuckPartition, StuckRecord
from mq_runbooks.kit.driver import refuse_missing
from mq_runbooks.kit.plans import Plan, table_json


def stuck(topic: str, partition: int, committed: int, dead_letter_exists: bool = True) -> StuckPartition:
    record = StuckRecord(committed, "order|7", (("trace-id", "t-1"),), 7, 40, "2026-11-29T10:00:00+00:00",
                         "(redacted: show_values=true shows it), 40 bytes")
    return StuckPartition(topic, partition, committed, committed + 5, ("worker-1",), record, f"{topic}.dlt",
                          partition, dead_letter_exists)


def plan(*partitions: StuckPartition, mode: str = "drain", missing: tuple[str, ...] = ()) -> DrainPlan:
    return DrainPlan("primary", "billing", mode, "Stable", ("worker-1 on /10.0.0.1 (member m-1): orders:0",), 30, 300,
                     ({"topic": "orders", "partition": 0}, {"topic": "orders", "partition": 1}), partitions, missing)


def test_the_plan_offers_the_contract_and_its_json_carries_the_table():
    drain = plan(stuck("orders", 0, 41), stuck("orders", 1, 9, dead_letter_exists=False))
    assert isinstance(drain, Plan)
    assert drain.changes_anything() and drain.missing_targets() == ()
    assert drain.summary() == ("2 of 2 observed partition(s) of billing stuck: copy each stuck record to the "
                               "dead-letter topic and commit the offset one past it")
    document = drain.to_json()
    assert table_json(drain).items() <= document.items()
    assert [row[:3] for row in document["rows"]] == [["orders", 0, 41], ["orders", 1, 9]]
    assert document["rows"][1][-2:] == ["orders.dlt:1 (created)", 10]
    assert [(p["current"], p["target"], p["log_end"]) for p in document["partitions"]] == [(41, 42, 46), (9, 10, 14)]
    assert drain.to_csv() == "orders,0,42\norders,1,10\n"


def test_markdown_says_what_people_must_do_and_escapes_cells():
    text = plan(stuck("orders", 0, 41)).markdown()
    assert "must be stopped first" in text and "worker-1 on /10.0.0.1" in text
    assert "| " + " | ".join(plan().columns()) + " |" in text
    assert "order\\|7" in text and "trace-id=t-1" in text
    report = plan(stuck("orders", 0, 41), mode="report")
    assert "Report only" in report.markdown() and "must be stopped" not in report.markdown()
    assert report.summary() == "1 of 2 observed partition(s) of billing stuck"
    assert "Nothing is stuck" in plan().markdown() and not plan().changes_anything()


def test_a_group_the_cluster_does_not_know_is_a_missing_target():
    unknown = plan(missing=("group 'billing' on kafka cluster 'primary' (no committed offsets and no members)",))
    assert not unknown.changes_anything() and unknown.missing_targets() == unknown.missing
    assert "Not found: group 'billing' on kafka cluster 'primary'" in unknown.markdown()
    with pytest.raises(ParameterError) as error:
        refuse_missing("kafka-drain-stuck", unknown)
    assert [field for field, _ in error.value.problems] == ["target"]
    assert error.value.problems[0][1].startswith(unknown.missing[0])
