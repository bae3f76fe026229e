"""Runbook `rabbitmq-drain-stuck`: close the connections of consumers that hold their prefetch and ack
nothing, so their messages go to the healthy consumers; park poison messages; optionally shovel the
backlog away.

    observe (sampled over a window) -> plan -> approve -> re-plan (must equal what was approved)
            -> snapshot (the state before) -> close -> park poison -> shovel -> verify (sampled) -> report

Closing a connection cannot be undone, and loses nothing: RabbitMQ requeues what it held. Parking is
a confirmed move (mq_runbooks.integrations.rabbitmq_moves), so a failure part-way leaves every message in the
queue or in the parking queue, and the journal says exactly how many moved.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed

from mq_runbooks.base.clusters import Clusters, RabbitCluster
from mq_runbooks.base.errors import BrokerError, RunbookError
from mq_runbooks.kit import journal
from mq_runbooks.kit.lock import target_lock
from mq_runbooks.flows.rabbitmq_stuck_plan import DrainPlan, DrainStuckParameters, plan_drain
from mq_runbooks.kit.runtime import RunContext
from mq_runbooks.kit.steps import approve_stable_plan, guarded, record_start
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_moves import MoveReport, delivered_more_than, ensure_queue, move_messages
from mq_runbooks.integrations.rabbitmq_shovels import QueueMove, local_uri, shovel_state, start_shovel

__all__ = ["DrainStuckParameters", "dry_run", "rabbitmq_drain_stuck"]

RUNBOOK_ID = "rabbitmq-drain-stuck"


def _amqp_url(cluster: RabbitCluster) -> str:
    return cluster.amqp_url.get_secret_value()


# --- tasks ---------------------------------------------------------------------------------------

@task(name="observe-and-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=lambda task, run, state: not isinstance(state.result(raise_on_failure=False), RunbookError))
def observe_and_plan(cluster: RabbitCluster, params: DrainStuckParameters) -> DrainPlan:
    with RabbitManagement.from_cluster(cluster) as rabbit:
        return plan_drain(rabbit, params)


@task(name="close-stuck-connections", cache_policy=NO_CACHE)
def close_connections(cluster: RabbitCluster, plan: DrainPlan, reason: str) -> dict[str, list[str]]:
    """Close each planned connection with `reason`; one that is already gone is reported, not an error."""
    closed, gone = [], []
    with RabbitManagement.from_cluster(cluster) as rabbit:
        for connection in plan.stuck:
            try:
                rabbit.close_connection(connection.connection_name, reason)
                closed.append(connection.connection_name)
            except BrokerError as exc:
                if "does not exist" not in str(exc):
                    raise
                gone.append(connection.connection_name)
    return {"closed": closed, "already_gone": gone}


@task(name="park-poison", cache_policy=NO_CACHE)
def park_poison(cluster: RabbitCluster, plan: DrainPlan, queue: str, parking: str,
                run_id: str) -> tuple[MoveReport, bool]:
    """Move the messages of `queue` delivered more than poison_after times to `parking` (confirmed);
    and whether `parking` had to be created."""
    created = ensure_queue(_amqp_url(cluster), plan.vhost, parking)
    report = move_messages(
        _amqp_url(cluster), plan.vhost, queue, parking, select=delivered_more_than(plan.poison_after or 0),
        limit=plan.poison_scan, window=plan.poison_scan, idle_s=2.0, max_s=300.0,
        headers={"x-parked-from-queue": queue, "x-parked-by": f"{RUNBOOK_ID} {run_id}"},
        connection_name=f"mq-runbooks {RUNBOOK_ID} {run_id}",
    )
    return report, created


@task(name="start-backlog-shovel", cache_policy=NO_CACHE)
def start_backlog_shovel(cluster: RabbitCluster, plan: DrainPlan, run_id: str) -> dict[str, Any]:
    queue, destination = plan.queues[0].name, plan.backlog_to or ""
    ensure_queue(_amqp_url(cluster), plan.vhost, destination)
    move = QueueMove(vhost=plan.vhost, queue=queue, shovel=f"{RUNBOOK_ID}-{queue}-{run_id[:8]}",
                     dest_queue=destination)
    with RabbitManagement.from_cluster(cluster) as rabbit:
        start_shovel(rabbit, move, src_uri=local_uri(plan.vhost), dest_uri=local_uri(plan.vhost))
        return {"shovel": move.shovel, "from": queue, "to": destination, "state": shovel_state(rabbit, move)}


@task(name="verify", cache_policy=NO_CACHE)
def verify(cluster: RabbitCluster, plan: DrainPlan, window_s: float) -> dict[str, Any]:
    """The closed connections are gone; then, over `window_s`, how the queues and their remaining
    consumers move (acks, ready and unacked at the start and the end)."""
    closed = {c.connection_name for c in plan.stuck}
    targets = [q.name for q in plan.queues]
    with RabbitManagement.from_cluster(cluster) as rabbit:
        still_open = sorted(closed & {c.name for c in rabbit.connections()})
        if still_open:
            raise BrokerError(f"connection(s) still open after closing: {', '.join(still_open)}")
        channels = {c.channel_name for c in rabbit.consumers(plan.vhost) if c.queue in targets}
        first_acks = _acks(rabbit, channels)
        first = {q.name: q for q in rabbit.queues(plan.vhost) if q.name in targets}
        time.sleep(window_s)
        last = {q.name: q for q in rabbit.queues(plan.vhost) if q.name in targets}
        last_acks = _acks(rabbit, channels)
    before = {q.name: q for q in plan.queues}
    rows = []
    for name in targets:
        start, end = first.get(name), last.get(name)
        if start is None or end is None:
            continue
        rows.append({"queue": name, "ready_before": before[name].messages_ready,
                     "unacked_before": before[name].messages_unacknowledged,
                     "ready_after": end.messages_ready, "unacked_after": end.messages_unacknowledged,
                     "ready_at_verify_start": start.messages_ready, "consumers_after": end.consumers,
                     "draining": end.messages_ready == 0 or end.messages_ready < start.messages_ready})
    acks = sum(last_acks.get(name, 0) - first_acks.get(name, 0) for name in first_acks)
    return {"queues": rows, "acks_by_remaining_consumers": acks, "closed_gone": sorted(closed), "window_s": window_s}


def _acks(rabbit: RabbitManagement, channels: set[str]) -> dict[str, int]:
    return {c.name: c.acks for c in rabbit.channel_activity() if c.name in channels}


# --- the flow ------------------------------------------------------------------------------------

@flow(name=RUNBOOK_ID, persist_result=False)
def rabbitmq_drain_stuck(params: DrainStuckParameters, requested_by: str = "unknown",
                         trigger: dict[str, Any] | None = None):
    """Unblock a queue whose consumers hold their prefetch and acknowledge nothing."""
    run_id = str(flow_run.id)
    return guarded(run_id, lambda: _drain(run_id, params, requested_by, trigger))


def _drain(run_id: str, params: DrainStuckParameters, requested_by: str, trigger: dict[str, Any] | None):
    context = RunContext.load()
    runbook = context.catalog.get(RUNBOOK_ID)
    cluster = context.clusters.rabbit_cluster(params.cluster)
    target = f"{params.cluster}{params.vhost}{'' if params.vhost.endswith('/') else '/'}{params.queue or '*'}"
    record_start(run_id, RUNBOOK_ID, params, requested_by, trigger, target)
    key = runbook.lock_key(params)
    with target_lock(key, run_id, context.settings.lock_wait_s):
        journal.record(run_id, "lock", f"holding lock {key}", key=key)
        plan = observe_and_plan(cluster, params)
        journal.record(run_id, "observation", _observed(plan), queues=[asdict(q) for q in plan.queues],
                       samples=plan.samples, window_s=plan.window_s)
        _record_plan(run_id, plan)
        if not plan.changes_anything:
            journal.record(run_id, "outcome", "nothing to do: no stuck consumer found", outcome="unchanged")
            return Completed(message="no stuck consumer")
        plan, refused = approve_stable_plan(
            run_id=run_id, context=context, runbook=runbook, requested_by=requested_by, plan=plan,
            markdown=lambda p: p.markdown(), replan=lambda: observe_and_plan(cluster, params),
            record_plan=lambda p: _record_plan(run_id, p),
        )
        if refused is not None:
            return refused
        _act(run_id, cluster, params, plan)
    return Completed(message=f"{len(plan.stuck)} stuck connection(s) closed")


def _act(run_id: str, cluster: RabbitCluster, params: DrainStuckParameters, plan: DrainPlan) -> None:
    journal.record(run_id, "snapshot", "state before acting (closing cannot be undone; it requeues, loses nothing)",
                   connections=[asdict(c) for c in plan.stuck], queues=[asdict(q) for q in plan.queues])
    done: list[str] = []
    try:
        if plan.stuck:
            reason = (f"closed by mq-runbooks {RUNBOOK_ID} (run {run_id}): consumer held its prefetch and "
                      "acknowledged nothing; its messages are requeued")
            result = close_connections(cluster, plan, reason)
            done.append(f"closed {len(result['closed'])} connection(s)")
            journal.record(run_id, "action", f"closed {len(result['closed'])} connection(s), returning "
                           f"{plan.unacked_held} unacknowledged message(s) to their queues"
                           + (f"; {len(result['already_gone'])} had closed already" if result["already_gone"] else ""),
                           reason=reason, **result)
        for queue, parking in plan.parking:
            report, created = park_poison(cluster, plan, queue, parking, run_id)
            journal.record(run_id, "action", f"parked {report.moved} poison message(s) of {queue} in {parking}"
                           f"{' (created)' if created else ''} "
                           f"({report.inspected} inspected, {report.returned} returned to the queue)",
                           queue=queue, parking_queue=parking, moved=report.moved, inspected=report.inspected,
                           returned=report.returned, in_flight=report.in_flight, moved_ids=report.moved_ids[:1000],
                           error=report.error, parking_created=created)
            if report.error:
                raise BrokerError(f"parking poison messages of {queue} stopped after moving {report.moved}: "
                                  f"{report.error}")
            done.append(f"parked {report.moved} of {queue}")
        if plan.backlog_to:
            shovel = start_backlog_shovel(cluster, plan, run_id)
            journal.record(run_id, "action", f"started shovel {shovel['shovel']}: {shovel['from']} -> {shovel['to']}",
                           **shovel)
            done.append(f"started shovel {shovel['shovel']}")
        verified = verify(cluster, plan, params.verify_window_s)
    except Exception as exc:
        journal.record(run_id, "error", f"{type(exc).__name__}: {exc}")
        so_far = "; ".join(done) or "nothing changed"
        journal.record(run_id, "outcome", f"failed after: {so_far}. {exc}", outcome="failed", done=done)
        raise
    journal.record(run_id, "verification", _verified(verified), **verified)
    create_table_artifact(table=verified["queues"] or [{"queue": "(none)"}],
                          description=f"{RUNBOOK_ID}: queues before and after ({verified['window_s']:g}s window)")
    journal.record(run_id, "outcome", f"{'; '.join(done)}; remaining consumers acked "
                   f"{verified['acks_by_remaining_consumers']} message(s) in {verified['window_s']:g}s",
                   outcome="succeeded", done=done)


def _observed(plan: DrainPlan) -> str:
    queues = ", ".join(f"{q.name}: {q.messages_ready} ready, {q.messages_unacknowledged} unacked, "
                       f"{q.consumers} consumer(s)" for q in plan.queues[:5])
    return f"{len(plan.queues)} queue(s) sampled {plan.samples} times over {plan.window_s:g}s ({queues})"


def _verified(verified: dict[str, Any]) -> str:
    queues = ", ".join(f"{r['queue']}: ready {r['ready_before']} -> {r['ready_after']}, unacked "
                       f"{r['unacked_before']} -> {r['unacked_after']}" for r in verified["queues"][:5])
    return (f"closed connections gone; remaining consumers acked {verified['acks_by_remaining_consumers']} in "
            f"{verified['window_s']:g}s; {queues}")


def _record_plan(run_id: str, plan: DrainPlan) -> None:
    journal.record(run_id, "plan", f"{len(plan.stuck)} stuck connection(s) holding {plan.unacked_held} message(s)",
                   csv=plan.to_csv(), markdown=plan.markdown(), **plan.to_json())


def dry_run(params: DrainStuckParameters, clusters: Clusters) -> DrainPlan:
    """`runbook plan`: observe over the window and show the plan (no lock, no approval, no change)."""
    with RabbitManagement.from_cluster(clusters.rabbit_cluster(params.cluster)) as rabbit:
        return plan_drain(rabbit, params)
