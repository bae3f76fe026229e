"""Runbooks `rabbitmq-failover` (primary -> standby) and `rabbitmq-failback` (standby -> primary).

    observe -> plan -> approve (plan must still hold) -> snapshot the switch -> copy definitions
            -> verify them -> move the backlogs (dynamic shovels) and count what arrived
            -> switch clients -> canary through the switched endpoint -> report
    a failed canary restores the switch; a move that stops part-way reports exactly what moved.

Nothing is deleted on either cluster: definitions are created or updated, messages are moved by
shovels that ack at the source only after the destination confirmed them.
"""
from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed

from mq_runbooks.base.clusters import RabbitCluster
from mq_runbooks.base.errors import BrokerError, RunbookError, UnreachableError
from mq_runbooks.kit import journal
from mq_runbooks.kit.lock import target_lock
from mq_runbooks.flows.rabbitmq_failover_plan import MovePlan, RabbitFailoverParameters, clusters_for, plan_move
from mq_runbooks.flows.rabbitmq_switch import canary_round_trip, open_switch
from mq_runbooks.kit.runtime import RunContext
from mq_runbooks.kit.steps import approve_stable_plan, guarded, record_start
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_definitions import import_definitions, verify_definitions
from mq_runbooks.integrations.rabbitmq_shovels import (
    QueueMove, delete_shovel, local_uri, queue_depth, start_shovel, vhost_uri, wait_for_shovels,
)
from mq_runbooks.integrations.switches import EndpointSwitch

_NOT_A_RUNBOOK_ERROR = lambda task, run, state: not isinstance(state.result(raise_on_failure=False), RunbookError)  # noqa: E731


# --- tasks ---------------------------------------------------------------------------------------

@task(name="observe-and-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=_NOT_A_RUNBOOK_ERROR)
def observe_and_plan(params: RabbitFailoverParameters, direction: str) -> MovePlan:
    return plan_move(params, RunContext.load().clusters, direction)


@task(name="copy-definitions", cache_policy=NO_CACHE)
def copy_definitions(destination: RabbitCluster, plan: MovePlan) -> dict[str, Any]:
    """Import the definition set into the destination and read it back; BrokerError listing what is
    missing or different there."""
    assert plan.definitions is not None
    with RabbitManagement.from_cluster(destination) as target:
        import_definitions(target, plan.definitions)
        problems = verify_definitions(target, plan.definitions)
    if problems:
        raise BrokerError(f"definitions on {destination.name} after the import: " + "; ".join(problems[:20]))
    return {"applied": len(plan.definitions_to_apply), "verified": len(plan.definitions.items),
            "users": list(plan.definitions.users)}


@task(name="move-backlog", cache_policy=NO_CACHE)
def move_backlog(source: RabbitCluster, destination: RabbitCluster, plan: MovePlan, params: RabbitFailoverParameters,
                 run_id: str) -> list[dict[str, Any]]:
    """Shovel every planned queue from source to destination, wait, and count per queue: seen at plan
    time, at the start of the move, arrived on the destination (exact), left on the source."""
    source_url, destination_url = source.amqp_url.get_secret_value(), destination.amqp_url.get_secret_value()
    vhost = plan.vhost
    moves = [QueueMove(vhost, q.name, f"runbook-{plan.direction}-{q.name}-{run_id[:8]}") for q in plan.queues]
    before = {m.queue: queue_depth(destination_url, vhost, m.queue) for m in moves}
    at_start = {m.queue: queue_depth(source_url, vhost, m.queue) for m in moves}
    with RabbitManagement.from_cluster(destination) as host:
        try:
            for move in moves:
                start_shovel(host, move, src_uri=vhost_uri(source_url, vhost), dest_uri=local_uri(vhost),
                             prefetch=params.shovel_prefetch)
            outcomes = wait_for_shovels(
                host, moves, timeout_s=params.move_timeout_s, stall_s=params.stall_s,
                progress=lambda: sum(queue_depth(destination_url, vhost, m.queue) for m in moves))
        finally:  # an interrupted wait must not leave shovels moving behind the run's back
            for move in moves:
                delete_shovel(host, move)
    rows = []
    for backlog, move in zip(plan.queues, moves):
        rows.append({"queue": move.queue, "seen_at_plan": backlog.depth_at_plan, "at_start": at_start[move.queue],
                     "moved": queue_depth(destination_url, vhost, move.queue) - before[move.queue],
                     "left_on_source": _depth_or_none(source_url, vhost, move.queue),
                     "outcome": outcomes[move.queue]})
    return rows


def _depth_or_none(amqp_url: str, vhost: str, queue: str) -> int | None:
    try:
        return queue_depth(amqp_url, vhost, queue)
    except UnreachableError:
        return None


@task(name="switch-clients", cache_policy=NO_CACHE)
def switch_clients(switch: EndpointSwitch, new: str) -> str | None:
    return switch.switch(new)


@task(name="canary", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def canary(switch: EndpointSwitch, destination: RabbitCluster, vhost: str, run_id: str, fault: str | None) -> dict:
    if fault == "canary":
        raise BrokerError("injected fault: the canary was not consumed")
    return canary_round_trip(switch.current(), destination, vhost, run_id)


@task(name="restore-switch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def restore_switch(switch: EndpointSwitch, old: str | None) -> None:
    switch.restore(old)


# --- the flows -----------------------------------------------------------------------------------

@flow(name="rabbitmq-failover", persist_result=False)
def rabbitmq_failover(params: RabbitFailoverParameters, requested_by: str = "unknown",
                      trigger: dict[str, Any] | None = None):
    """Move a vhost's definitions and queue backlogs to the standby, then point clients at it."""
    run_id = str(flow_run.id)
    return guarded(run_id, lambda: _run(run_id, "failover", params, requested_by, trigger))


@flow(name="rabbitmq-failback", persist_result=False)
def rabbitmq_failback(params: RabbitFailoverParameters, requested_by: str = "unknown",
                      trigger: dict[str, Any] | None = None):
    """Move them back to the primary and restore the clients' old endpoint."""
    run_id = str(flow_run.id)
    return guarded(run_id, lambda: _run(run_id, "failback", params, requested_by, trigger))


def _run(run_id: str, direction: str, params: RabbitFailoverParameters, requested_by: str,
         trigger: dict[str, Any] | None):
    runbook_id = f"rabbitmq-{direction}"
    context = RunContext.load()
    runbook = context.catalog.get(runbook_id)
    source, destination = clusters_for(params, context.clusters, direction)
    record_start(run_id, runbook_id, params, requested_by, trigger, f"{source.name} -> {destination.name} "
                                                                    f"vhost {params.vhost}")
    key = runbook.lock_key(params)
    with target_lock(key, run_id, context.settings.lock_wait_s):
        journal.record(run_id, "lock", f"holding lock {key}", key=key)
        plan = observe_and_plan(params, direction)
        _record_plan(run_id, plan)
        plan, refused = approve_stable_plan(
            run_id=run_id, context=context, runbook=runbook, requested_by=requested_by, plan=plan,
            markdown=lambda p: p.markdown(), replan=lambda: observe_and_plan(params, direction),
            record_plan=lambda p: _record_plan(run_id, p),
        )
        if refused is not None:
            return refused
        switch = open_switch(context.clusters, params.switch, runbook_id)
        journal.record(run_id, "snapshot", f"switch {plan.switch} points at {plan.switch_old}",
                       switch=plan.switch, old=plan.switch_old)
        _act(run_id, context, source, destination, params, plan, switch)
    return Completed(message=f"{direction} to {destination.name} done")


def _act(run_id: str, context: RunContext, source: RabbitCluster, destination: RabbitCluster,
         params: RabbitFailoverParameters, plan: MovePlan, switch: EndpointSwitch) -> None:
    if plan.definitions is not None:
        copied = copy_definitions(destination, plan)
        journal.record(run_id, "action", f"imported {copied['applied']} definition(s) into {destination.name}",
                       step="definitions", **copied)
        journal.record(run_id, "verification", f"{copied['verified']} definition(s) read back on {destination.name}",
                       step="definitions", **copied)
    rows: list[dict[str, Any]] = []
    if plan.queues and plan.source_reachable:
        rows = move_backlog(source, destination, plan, params, run_id)
        moved, seen = sum(r["moved"] for r in rows), plan.messages_at_plan
        incomplete = [r for r in rows if r["outcome"] != "done"]
        journal.record(run_id, "action", f"moved {moved} message(s) to {destination.name} ({seen} seen at plan time)",
                       step="move", queues=rows, moved=moved, seen_at_plan=seen)
        if incomplete:
            _report(plan, rows, None)
            message = _incomplete_move(plan, rows, incomplete, params.shovel_prefetch)
            journal.record(run_id, "error", message, queues=rows)
            journal.record(run_id, "outcome", f"failed part-way: {message}", outcome="failed", moved=moved)
            raise BrokerError(message)
    old = switch_clients(switch, plan.switch_new)
    journal.record(run_id, "action", f"switch {plan.switch}: {old} -> {plan.switch_new}", step="switch",
                   switch=plan.switch, switch_old=old, switch_new=plan.switch_new)
    try:
        checked = canary(switch, destination, plan.vhost, run_id, context.settings.inject_fault)
    except Exception as exc:
        journal.record(run_id, "error", f"canary through {plan.switch_new} failed: {exc}")
        restore_switch(switch, old)
        journal.record(run_id, "rollback", f"switch {plan.switch} restored to {old}", restored=True, switch_old=old)
        journal.record(run_id, "outcome", f"failed and the switch was restored: {exc}", outcome="failed")
        raise
    journal.record(run_id, "verification", f"canary published and consumed through {checked['endpoint']}",
                   step="canary", **checked)
    _report(plan, rows, old)
    moved = sum(r["moved"] for r in rows)
    journal.record(run_id, "outcome", f"{plan.direction} to {plan.destination} done: {moved} message(s) moved "
                   f"({plan.messages_at_plan} seen at plan time), switch {plan.switch} {old} -> {plan.switch_new}",
                   outcome="succeeded", moved=moved, seen_at_plan=plan.messages_at_plan, queues=rows,
                   switch_old=old, switch_new=plan.switch_new)


def _incomplete_move(plan: MovePlan, rows: list[dict[str, Any]], incomplete: list[dict[str, Any]],
                     prefetch: int) -> str:
    parts = [f"{r['queue']}: {r['moved']} arrived on {plan.destination}, "
             + (f"{r['left_on_source']} left on {plan.source}" if r["left_on_source"] is not None
                else f"the rest still on {plan.source}, which does not answer")
             + f" ({r['outcome']})" for r in incomplete]
    return (f"the backlog move stopped part-way; clients were NOT switched. {'; '.join(parts)}. Messages not "
            f"arrived were never acked at the source, so they are still there (persistent messages survive a "
            f"restart); up to {prefetch} per queue may be on both sides. Run again once {plan.source} answers.")


def _record_plan(run_id: str, plan: MovePlan) -> None:
    journal.record(run_id, "plan", f"{len(plan.definitions_to_apply)} definition(s) to apply, {len(plan.queues)} "
                   f"queue(s) with {plan.messages_at_plan} message(s) at plan time, switch {plan.switch_old} -> "
                   f"{plan.switch_new}", csv=plan.to_csv(), markdown=plan.markdown(), **plan.to_json())


def _report(plan: MovePlan, rows: list[dict[str, Any]], switch_old: str | None) -> None:
    if rows:
        create_table_artifact(table=rows, description=f"rabbitmq-{plan.direction}: messages moved vs seen")
    switched = f"`{switch_old}` -> `{plan.switch_new}`" if switch_old is not None else "not switched"
    create_markdown_artifact(markdown=f"**{plan.direction}** `{plan.source}` -> `{plan.destination}`: "
                             f"{sum(r['moved'] for r in rows)} moved, {plan.messages_at_plan} seen at plan time; "
                             f"switch `{plan.switch}` {switched}.", description=f"rabbitmq-{plan.direction} report")
