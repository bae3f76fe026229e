"""The RabbitMQ runbooks' plans and the drain's verdict, fed observations (no broker): the plan contract
that `status --plan`, Slack and the postmortem render, what counts as a change, and a verify that
measured no progress is a failure that says what changed and how to go on."""
from __future__ import annotations

from dataclasses import replace

from mq_runbooks.flows.rabbitmq_drain_stuck import QueueProgress, judge_progress
from mq_runbooks.flows.rabbitmq_failover_plan import MovePlan, QueueBacklog
from mq_runbooks.flows.rabbitmq_stuck_plan import (
    DrainPlan, QueueState, StuckConnection,
)
from mq_runbooks.integrations.rabbitmq_definitions import Change, Definitions, Item
from mq_runbooks.kit.plans import Plan, table_json


def connection(name: str, queue: str = "orders", unacked: int = 5) -> StuckConnection:
    return StuckConnection(connection_name=name, client_provided_name=f"client {name}", peer_host="10.0.0.7",
                           consumer_tags=(f"{name}-tag",), queues=(queue,), unacked=unacked, prefetch=unacked,
                           idle_for_s=301.4, other_channels=0)


def drain_plan(*stuck: StuckConnection, parking=(), backlog_to=None) -> DrainPlan:
    return DrainPlan(cluster="primary", vhost="/", queues=(QueueState("orders", "classic", 100, 10, 2),),
                     stuck=tuple(stuck), healthy_consumers=1, samples=4, window_s=15, poison_after=None,
                     parking=tuple(parking), poison_scan=1000, backlog_to=backlog_to)


def move_plan(switch_old="127.0.0.1:5673", switch_new="127.0.0.1:5674", depths=(("orders", 300),),
              reachable=True, changes=()) -> MovePlan:
    definitions = Definitions(("/",), tuple(c.item for c in changes)) if changes else None
    return MovePlan("failover", "primary", "standby", "/", reachable, definitions, tuple(changes),
                    tuple(QueueBacklog(name, depth) for name, depth in depths), "orders-clients", switch_old,
                    switch_new)


def test_drain_plan_json_carries_the_table_with_one_row_per_connection_by_name():
    plan = drain_plan(connection("conn-b"), connection("conn-a", unacked=3))
    assert isinstance(plan, Plan)
    data = plan.to_json()
    assert table_json(plan).items() <= data.items(), "status --plan renders columns and rows from the journal"
    assert data["columns"][:2] == ["change", "connection or queue"]
    assert [row[:2] for row in data["rows"]] == [["close", "conn-a"], ["close", "conn-b"]]
    assert data["rows"][0][2:9] == ["client conn-a", "10.0.0.7", "conn-a-tag", "orders", 3, 3, 301]
    assert data["connections"][0]["connection_name"] == "conn-b", "the runbook's own keys stay"
    assert plan.to_csv().splitlines()[0] == ",".join(plan.columns())
    assert "| conn-a | client conn-a | 10.0.0.7 | conn-a-tag | orders | 3 / 3 | 301s | 0 |" in plan.markdown()
    assert plan.summary().startswith("2 stuck connection(s) holding 8 message(s) to close")


def test_drain_plan_changes_something_only_with_a_connection_a_sweep_or_a_shovel_and_shows_each():
    assert not drain_plan().changes_anything() and drain_plan().rows() == []
    assert drain_plan(connection("c")).changes_anything()
    parking = drain_plan(parking=[("orders", "orders.parking")])
    assert parking.changes_anything() and [row[:2] for row in parking.rows()] == [("park poison", "orders")]
    assert parking.rows()[0][-1].endswith("-> orders.parking")
    shovel = drain_plan(connection("c"), backlog_to="elsewhere")
    assert "backlog of orders shovelled to elsewhere" in shovel.summary()
    assert [row[:2] for row in shovel.rows()] == [("close", "c"), ("shovel backlog", "orders")]


def test_move_plan_json_carries_the_table_in_the_order_things_are_done():
    changes = (Change(Item("queue", "/", ("orders",), "{}"), "create"),
               Change(Item("exchange", "/", ("events",), "{}"), "create"),
               Change(Item("policy", "/", ("limit",), "{}"), "present"))
    plan = move_plan(depths=(("payments", 7), ("orders", 300)), changes=changes)
    data = plan.to_json()
    assert table_json(plan).items() <= data.items()
    assert data["rows"] == [
        ["create", "exchange", "events", "on standby"], ["create", "queue", "orders", "on standby"],
        ["move backlog", "queue", "orders", "300 message(s) at plan time"],
        ["move backlog", "queue", "payments", "7 message(s) at plan time"],
        ["switch", "endpoint switch", "orders-clients", "127.0.0.1:5673 -> 127.0.0.1:5674"]]
    assert data["switch"] == {"name": "orders-clients", "old": "127.0.0.1:5673", "new": "127.0.0.1:5674"}
    assert data["queues"][0] == {"name": "payments", "depth_at_plan": 7}


def test_a_failover_already_done_changes_nothing_and_a_dead_source_still_switches():
    assert not move_plan(switch_old="127.0.0.1:5674", depths=()).changes_anything()
    assert move_plan(switch_old="127.0.0.1:5674").changes_anything(), "a backlog to move"
    dead = move_plan(depths=(("orders", None),), reachable=False)
    assert [row[0] for row in dead.rows()] == ["switch"], "nothing moves from a source that does not answer"


def progress(queue="orders", acks=0, ready_start=105, ready_after=105, consumers=1) -> QueueProgress:
    return QueueProgress(queue, ready_before=100, unacked_before=10, ready_at_start=ready_start,
                         ready_after=ready_after, unacked_after=5, consumers_after=consumers, acks=acks)


def test_no_acks_and_no_draining_is_a_failed_verify_that_says_what_changed_and_how_to_go_on():
    plan = drain_plan(connection("conn-a"))
    verdict = judge_progress(plan, [], [progress(consumers=0)], 10, closed=1)
    assert not verdict.ok
    assert "no progress over 10s on orders" in verdict.summary
    assert "The 1 closed connection(s) cannot be reopened (nothing to restore): their messages were requeued" in \
        verdict.summary
    assert "To go on: orders has no consumer left: start healthy consumers" in verdict.summary
    assert verdict.data["acks_by_remaining_consumers"] == 0 and verdict.data["queues"][0]["progressing"] is False
    remaining = judge_progress(plan, [], [progress(consumers=2)], 10, closed=1)
    assert not remaining.ok and "2 remaining consumer(s) acked nothing" in remaining.summary


def test_acks_or_a_queue_that_drains_is_progress_and_other_queues_do_not_count():
    plan = drain_plan(connection("conn-a"))
    assert judge_progress(plan, [], [progress(acks=3)], 10, closed=1).ok
    assert judge_progress(plan, [], [progress(ready_after=90)], 10, closed=1).ok
    assert judge_progress(plan, [], [progress(ready_start=0, ready_after=0)], 10, closed=1).ok
    assert judge_progress(plan, [], [progress(acks=3), progress("audit")], 10, closed=1).ok, \
        "a queue the run did not touch does not decide"
    still_open = judge_progress(plan, ["conn-a"], [progress(acks=3)], 10, closed=1)
    assert not still_open.ok and "still open after closing: conn-a" in still_open.summary


def test_idle_times_that_grow_are_not_a_change_of_plan():
    # The connections planned stay the plan: idle times grew meanwhile, the digest does not move.
    assert drain_plan(connection("c1")).digest() == drain_plan(replace(connection("c1"), idle_for_s=601)).digest()
