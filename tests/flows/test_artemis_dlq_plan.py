"""artemis-dlq-redeliver's planner (flows/artemis_dlq_plan.py) without a broker: grouping by original queue,
the limit, poison parked or left, batches of contiguous original ids, and a plan that Prefect's walk over
a task's parameters does not enter message by message."""
from __future__ import annotations

from prefect.utilities.collections import visit_collection

from mq_runbooks.flows.artemis_dlq_plan import DeadLetter, DlqRedeliverParameters, plan_redelivery
from mq_runbooks.integrations.artemis_messages import Message


def letter(dlq_id, original_id, queue, msg_id, at_ms):
    return Message(message_id=dlq_id, queue="DLQ", original_queue=queue, original_address=queue, timestamp_ms=at_ms,
                   durable=True, user_id=None, properties={"_AMQ_ORIG_MESSAGE_ID": original_id, "msg_id": msg_id})


def dead_letters():
    orders = [letter(1000 + i, 10 + i, "orders", f"o{i}", 5_000 + i) for i in range(7)]
    billing = [letter(2000 + i, 100 + i, "billing", f"b{i}", 9_000 + i) for i in range(3)]
    gone = [letter(3000, 500, "retired", "r0", 1_000)]
    return orders + billing + gone


def params(**extra):
    return DlqRedeliverParameters(cluster="primary", id_property="msg_id", **extra)


def test_groups_by_original_queue_with_counts_oldest_newest_and_batches():
    plan = plan_redelivery(params(batch_size=3), "primary", dead_letters(), {"orders", "billing", "DLQ"}, {})
    rows = {row[0]: dict(zip(plan.columns(), row)) for row in plan.rows()}
    assert rows["orders"]["in DLQ"] == 7 and rows["orders"]["send back"] == 7
    assert rows["orders"]["oldest"] == "1970-01-01T00:00:05Z" and rows["billing"]["newest"] == "1970-01-01T00:00:09Z"
    assert rows["retired"]["send back"] == 0 and "no longer exists" in rows["retired"]["note"]
    assert [(b.queue, b.first, b.last, len(b.messages)) for b in plan.batches] == [
        ("billing", 100, 102, 3), ("orders", 10, 12, 3), ("orders", 13, 15, 3), ("orders", 16, 16, 1)]
    assert plan.batches[1].filter(params()) == "_AMQ_ORIG_QUEUE = 'orders' AND _AMQ_ORIG_MESSAGE_ID BETWEEN 10 AND 12"


def test_the_limit_takes_the_oldest_and_poison_is_parked_or_left_out_of_the_batches():
    sent_before = {"o1": 2, "o4": 1}
    parked = plan_redelivery(params(limit=4, poison_after=2), "primary", dead_letters(), {"orders", "billing"},
                             sent_before)
    assert [m.identity for m in parked.to_park] == ["o1"]
    assert sorted(m.identity for b in parked.batches for m in b.messages) == ["o0", "o2", "o3", "o4"]
    left = plan_redelivery(params(poison_after=2, poison_action="leave"), "primary", dead_letters(),
                           {"orders", "billing"}, sent_before)
    assert left.to_park == () and "o1" not in {m.identity for b in left.batches for m in b.messages}
    orders = [b for b in left.batches if b.queue == "orders"][0]
    assert "_AMQ_ORIG_MESSAGE_ID <> 11" in orders.filter(params()), "the poison left in the DLQ is skipped by id"


def test_prefects_walk_over_task_parameters_does_not_enter_the_dead_letters():
    many = [letter(10_000 + i, i, "orders", f"o{i}", i) for i in range(2000)]
    plan = plan_redelivery(params(batch_size=500), "primary", many, {"orders"}, {})
    seen = []
    visit_collection(plan, visit_fn=lambda value: seen.append(value) or value, return_data=False)
    assert not [v for v in seen if isinstance(v, DeadLetter)], "each of 100,000 letters cost Prefect's walk ~0.3 ms"
    assert plan.to_send == 2000 and len(plan.batches) == 4
