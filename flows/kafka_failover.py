"""Runbook `kafka-failover`: move consumer groups and clients from a Kafka cluster to its
MirrorMaker 2 standby.

    observe + plan (flows/kafka_failover_plan.py) -> refuse untranslatable partitions unless the
    fallback was chosen -> approve (plan + messages at risk; must still hold) -> snapshot (standby
    offsets, switch value) -> commit translated offsets on the standby -> the groups resume there
    -> switch clients -> canary through the switched endpoint -> report.
    A failure after the snapshot restores the standby offsets that existed and the switch.
"""
from __future__ import annotations

from typing import Any, Protocol

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from mq_runbooks.base.clusters import KafkaCluster
from mq_runbooks.base.errors import BrokerError, RunbookError
from mq_runbooks.kit import journal
from mq_runbooks.flows.kafka_failover_plan import (
    RUNBOOK_ID, FailoverPlan, KafkaFailoverParameters, failover_pair, kafka_client, open_switch, plan_failover,
)
from mq_runbooks.flows.kafka_failover_steps import canary_through, read_from_committed, snapshot_csv, snapshot_offsets
from mq_runbooks.flows.kafka_replay import alter, inactive_group
from mq_runbooks.kit.lock import target_lock
from mq_runbooks.kit.runtime import RunContext
from mq_runbooks.kit.steps import approve_stable_plan, guarded, record_start
from mq_runbooks.integrations.switches import EndpointSwitch


def _not_ours(task, run, state) -> bool:
    return not isinstance(state.result(raise_on_failure=False), RunbookError)


@task(name="observe-and-plan", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, retry_condition_fn=_not_ours)
def observe_and_plan(params: KafkaFailoverParameters, context: RunContext) -> FailoverPlan:
    _, target, _ = failover_pair(context.clusters, params.cluster, params.standby, RUNBOOK_ID)
    with kafka_client(target) as standby:
        for group in params.groups:
            inactive_group(standby, group, params.wait_for_inactive)
    return plan_failover(params, context.clusters, context.settings.snapshot_dir)


@task(name="apply-offsets", cache_policy=NO_CACHE)
def apply_offsets(destination: KafkaCluster, plan: Move) -> int:
    applied = 0
    for group in plan.groups:
        targets = plan.targets(group)
        if targets:
            alter(destination, group, targets)
            applied += len(targets)
    return applied


@task(name="verify-groups", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def verify_groups(destination: KafkaCluster, plan: Move) -> dict[str, Any]:
    return {group: read_from_committed(destination, group, plan.targets(group)) for group in plan.groups
            if plan.targets(group)}


@task(name="switch-clients", cache_policy=NO_CACHE)
def switch_clients(switch: EndpointSwitch, new: str) -> str | None:
    return switch.switch(new)


@task(name="canary", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def canary(switch: EndpointSwitch, destination: KafkaCluster, run_id: str, fault: str | None) -> dict[str, Any]:
    if fault == "canary":
        raise BrokerError("injected fault: the canary failed")
    return canary_through(switch.current() or "", destination, run_id)


@task(name="restore", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def restore(destination: KafkaCluster, before: dict[str, dict], switch: EndpointSwitch, switched: bool,
            switch_old: str | None) -> dict[str, Any]:
    """Put back the offsets that existed before, and the switch's old value if it was switched."""
    restored = 0
    for group, offsets in before.items():
        if offsets:
            alter(destination, group, offsets)
            restored += len(offsets)
    if switched:
        switch.restore(switch_old)
    return {"offsets_restored": restored, "switch_restored": switched}


@flow(name=RUNBOOK_ID, persist_result=False)
def kafka_failover(params: KafkaFailoverParameters, requested_by: str = "unknown", trigger: dict[str, Any] | None = None):
    """Move consumer groups and clients to the MirrorMaker 2 standby."""
    run_id = str(flow_run.id)
    return guarded(run_id, lambda: _failover(run_id, params, requested_by, trigger))


def _failover(run_id: str, params: KafkaFailoverParameters, requested_by: str, trigger: dict[str, Any] | None):
    context = RunContext.load()
    runbook = context.catalog.get(RUNBOOK_ID)
    _, standby, _ = failover_pair(context.clusters, params.cluster, params.standby, RUNBOOK_ID)
    switch = open_switch(context.clusters, params.switch, RUNBOOK_ID)
    record_start(run_id, RUNBOOK_ID, params, requested_by, trigger,
                 f"{params.cluster} -> {params.standby}, groups {', '.join(params.groups)}")
    key = runbook.lock_key(params)
    with target_lock(key, run_id, context.settings.lock_wait_s):
        journal.record(run_id, "lock", f"holding lock {key}", key=key)
        plan = observe_and_plan(params, context)
        _record_observation(run_id, plan)
        _record_plan(run_id, plan)
        if not plan.partitions and not plan.unknown_groups:
            journal.record(run_id, "outcome", "nothing to move: the groups have no committed offsets",
                           outcome="unchanged")
            return Completed(message="nothing to move")
        refusal = _refuse_untranslatable(run_id, plan)
        if refusal is not None:
            return refusal
        plan, refused = approve_stable_plan(
            run_id=run_id, context=context, runbook=runbook, requested_by=requested_by, plan=plan,
            markdown=lambda p: p.markdown(), replan=lambda: observe_and_plan(params, context),
            record_plan=lambda p: _record_plan(run_id, p), trigger=trigger,
        )
        if refused is not None:
            return refused
        _act(run_id, context, standby, plan, switch)
    return Completed(message=f"{len(plan.groups)} group(s) moved to {plan.standby}; switch {plan.switch} -> {plan.switch_new}")


def _refuse_untranslatable(run_id: str, plan: FailoverPlan) -> Failed | None:
    if not plan.untranslatable and not plan.unknown_groups:
        return None
    listed = [f"{p.group} {p.replica}:{p.partition} ({p.status})" for p in plan.untranslatable] + list(plan.unknown_groups)
    message = (f"not translatable: {'; '.join(listed[:10])}. Nothing was changed. Choose the fallback explicitly "
               f"(untranslatable=by_timestamp fallback_to_datetime=...), wait for MM2's checkpoints, or leave "
               f"these groups out")
    journal.record(run_id, "outcome", message, outcome="refused", untranslatable=listed)
    return Failed(message=message)


class Move(Protocol):
    """What move_groups_and_switch needs of a failover or failback plan."""
    groups: tuple[str, ...]
    switch: str
    switch_old: str | None
    switch_new: str

    def targets(self, group: str) -> dict[tuple[str, int], int]: ...


def move_groups_and_switch(run_id: str, context: RunContext, destination: KafkaCluster, plan: Move,
                           switch: EndpointSwitch) -> str | None:
    """Snapshot, commit each group's targets on `destination`, check the groups resume there, switch,
    canary; on failure restore the offsets that existed and the switch, and say so. The old value."""
    before = {g: snapshot_offsets(destination, g, list(plan.targets(g))) for g in plan.groups}
    csv = "".join(snapshot_csv(g, offsets) for g, offsets in before.items())
    journal.record(run_id, "snapshot", f"{destination.name} offsets before ({sum(map(len, before.values()))} "
                   f"committed); switch {plan.switch} is {plan.switch_old}", csv=csv, switch=plan.switch,
                   switch_old=plan.switch_old)
    switched, switch_old = False, plan.switch_old
    try:
        applied = apply_offsets(destination, plan)
        journal.record(run_id, "action", f"committed {applied} translated offset(s) on {destination.name}",
                       step="offsets", partitions=applied)
        resumed = verify_groups(destination, plan)
        journal.record(run_id, "verification", f"each moved group resumes at its translated offsets on "
                       f"{destination.name}", resumed=resumed)
        switch_old = switch_clients(switch, plan.switch_new)
        switched = True
        journal.record(run_id, "action", f"switch {plan.switch}: {switch_old} -> {plan.switch_new}", step="switch",
                       switch=plan.switch, switch_old=switch_old, switch_new=plan.switch_new)
        checked = canary(switch, destination, run_id, context.settings.inject_fault)
        journal.record(run_id, "verification", f"canary produced and consumed through {checked['endpoint']}", **checked)
    except Exception as exc:
        journal.record(run_id, "error", f"{type(exc).__name__}: {exc}")
        try:
            undone = restore(destination, before, switch, switched, switch_old)
        except Exception as restore_exc:
            journal.record(run_id, "rollback", f"RESTORE FAILED: {restore_exc}. Offsets before: {csv or 'none'}; "
                           f"switch before: {switch_old}", restored=False, csv=csv, switch_old=switch_old)
            journal.record(run_id, "outcome", f"failed, and the restore failed: {exc}", outcome="failed")
            raise RunbookError(f"{exc}; the restore failed too ({restore_exc})") from exc
        journal.record(run_id, "rollback", f"restored {undone['offsets_restored']} offset(s) on {destination.name}"
                       + (f" and switch {plan.switch} to {switch_old}" if switched else "")
                       + "; offsets the groups did not have there before stay committed",
                       restored=True, switch_old=switch_old, **undone)
        journal.record(run_id, "outcome", f"failed and rolled back: {exc}", outcome="failed")
        raise
    return switch_old


def _act(run_id: str, context: RunContext, standby: KafkaCluster, plan: FailoverPlan, switch: EndpointSwitch) -> None:
    switch_old = move_groups_and_switch(run_id, context, standby, plan, switch)
    _report(plan, switch_old)
    journal.record(run_id, "outcome", f"{len(plan.groups)} group(s) moved to {plan.standby}, switch {plan.switch} "
                   f"{switch_old} -> {plan.switch_new}; messages at risk: {plan.at_risk_text()}", outcome="succeeded",
                   messages_at_risk=plan.messages_at_risk, at_risk_exact=plan.at_risk_exact,
                   switch_old=switch_old, switch_new=plan.switch_new)


def _record_observation(run_id: str, plan: FailoverPlan) -> None:
    primary = "reachable" if plan.primary_reachable else f"down: {plan.primary_error}"
    journal.record(run_id, "observation", f"primary {plan.cluster} {primary}; standby {plan.standby} healthy; MM2 "
                   f"heartbeat {plan.heartbeat_age_s}s ago", primary_reachable=plan.primary_reachable,
                   primary_error=plan.primary_error, heartbeat_age_s=plan.heartbeat_age_s,
                   checkpoints=[{"group": p.group, "topic": p.replica, "partition": p.partition,
                                 "upstream": p.checkpoint_upstream, "downstream": p.checkpoint_downstream,
                                 "age_s": p.checkpoint_age_s} for p in plan.partitions])


def _record_plan(run_id: str, plan: FailoverPlan) -> None:
    journal.record(run_id, "plan", f"{len(plan.partitions)} partition(s) of {len(plan.groups)} group(s); "
                   f"{len(plan.untranslatable)} not translatable; messages at risk {plan.messages_at_risk}"
                   f"{'' if plan.at_risk_exact else ' (estimate)'}",
                   csv=plan.to_csv(), markdown=plan.markdown(), **plan.to_json())


def _report(plan: FailoverPlan, switch_old: str | None) -> None:
    create_table_artifact(
        table=[{"group": p.group, "partition": f"{p.replica}:{p.partition}", "upstream_offset": p.committed_upstream
                if p.committed_upstream is not None else p.checkpoint_upstream, "translated_offset": p.target_offset,
                "how": p.status, "messages_at_risk": p.messages_at_risk} for p in plan.partitions],
        description=f"kafka-failover {plan.cluster} -> {plan.standby}: per group and partition",
    )
    create_markdown_artifact(markdown=f"{plan.markdown()}\n\nSwitch `{plan.switch}`: `{switch_old}` -> "
                             f"`{plan.switch_new}` (done).", description="kafka-failover report")
