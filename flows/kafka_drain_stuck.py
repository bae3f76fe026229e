"""Runbook `kafka-drain-stuck`: unblock a consumer group stuck on a record (a poison message) without
losing it: the record is copied to a dead-letter topic with its provenance, and the group's committed
offset moves one past it.

    observe (two samples) -> plan -> approve -> wait for the consumers to be stopped -> re-plan (must
    equal what was approved) -> snapshot -> copy to the dead-letter topic (once) -> move the offsets
    -> verify -> report;  moving or verifying failing restores the snapshot.
    mode=report: observe -> plan -> report, and nothing else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed

from mq_runbooks.base.clusters import Clusters, KafkaCluster
from mq_runbooks.base.errors import BrokerError, RunbookError
from mq_runbooks.kit import journal
from mq_runbooks.flows.kafka_drain_plan import (
    OBSERVED_ROWS_KEPT, RUNBOOK_ID, DrainPlan, DrainStuckParameters, observe, refresh,
)
from mq_runbooks.flows.kafka_replay import alter, inactive_group, kafka_client
from mq_runbooks.kit.lock import target_lock
from mq_runbooks.kit.runtime import RunContext
from mq_runbooks.kit.steps import approve_stable_plan, guarded, record_start
from mq_runbooks.integrations.kafka_records import DeadLetterCopy, KafkaRecords, Provenance

__all__ = ["DrainStuckParameters", "dry_run", "kafka_drain_stuck"]


def kafka_records(cluster: KafkaCluster) -> KafkaRecords:
    return KafkaRecords(cluster.client_config(), name=cluster.name, timeout_s=cluster.request_timeout_s)


def compute_plan(cluster: KafkaCluster, params: DrainStuckParameters) -> DrainPlan:
    """Observe the group for `stuck_after` seconds and plan (no change is made)."""
    with kafka_client(cluster) as kafka:
        return observe(kafka, kafka_records(cluster), params, cluster.name)


def dry_run(params: DrainStuckParameters, clusters: Clusters) -> DrainPlan:
    """`runbook plan`: the plan and nothing else (it takes `stuck_after` seconds to observe)."""
    return compute_plan(clusters.kafka_cluster(params.cluster), params)


# --- tasks ---------------------------------------------------------------------------------------

@task(name="observe-and-plan", cache_policy=NO_CACHE)
def observe_and_plan(cluster: KafkaCluster, params: DrainStuckParameters) -> DrainPlan:
    return compute_plan(cluster, params)


@task(name="wait-for-inactive-group", cache_policy=NO_CACHE)
def wait_for_inactive(cluster: KafkaCluster, group: str, wait_s: float) -> str:
    with kafka_client(cluster) as kafka:
        return inactive_group(kafka, group, wait_s).state


@task(name="refresh-plan", cache_policy=NO_CACHE)
def refresh_plan(cluster: KafkaCluster, plan: DrainPlan) -> DrainPlan:
    with kafka_client(cluster) as kafka:
        return refresh(kafka, plan)


@task(name="snapshot", cache_policy=NO_CACHE)
def take_snapshot(cluster: KafkaCluster, plan: DrainPlan, directory: Path, run_id: str) -> tuple[str, Path]:
    """The committed offsets of the planned partitions, in the --export CSV format, in a file."""
    with kafka_client(cluster) as kafka:
        committed = kafka.committed_offsets(plan.group)
    text = "".join(f"{p.topic},{p.partition},{committed[(p.topic, p.partition)]}\n" for p in plan.partitions)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{RUNBOOK_ID}-{plan.group}-{run_id}.csv"
    path.write_text(text)
    return text, path


@task(name="copy-to-dead-letter", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def copy_to_dead_letter(cluster: KafkaCluster, plan: DrainPlan) -> list[DeadLetterCopy]:
    """Copy each stuck record to its dead-letter topic, once (a retry finds the earlier copy)."""
    records, copies = kafka_records(cluster), []
    with kafka_client(cluster) as kafka:
        for p in plan.partitions:
            record = records.read_record(p.topic, p.partition, p.record.offset)
            if record.offset != p.record.offset:
                raise BrokerError(f"{p.topic}:{p.partition}: the record at offset {p.record.offset} is gone "
                                  f"(the next one is at {record.offset}); nothing was copied for it")
            origin = Provenance(p.topic, p.partition, p.record.offset, plan.group)
            copies.append(records.copy_to_dead_letter(kafka, record, p.dead_letter_topic, origin))
    return copies


@task(name="move-offsets", cache_policy=NO_CACHE)
def move_offsets(cluster: KafkaCluster, plan: DrainPlan) -> int:
    alter(cluster, plan.group, {(p.topic, p.partition): p.target_offset for p in plan.partitions})
    return len(plan.partitions)


@task(name="verify", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def verify_drain(cluster: KafkaCluster, plan: DrainPlan, copies: list[DeadLetterCopy],
                 fault: str | None) -> dict[str, Any]:
    """Each committed offset is one past its record, and each record is in the dead-letter topic once."""
    records = kafka_records(cluster)
    with kafka_client(cluster) as kafka:
        committed = kafka.committed_offsets(plan.group)
    wrong = [f"{p.topic}:{p.partition} committed {committed.get((p.topic, p.partition))}, planned {p.target_offset}"
             for p in plan.partitions if committed.get((p.topic, p.partition)) != p.target_offset]
    for p, copy in zip(plan.partitions, copies):
        found = records.find_copies(copy.topic, copy.partition, Provenance(p.topic, p.partition, p.record.offset,
                                                                           plan.group))
        if len(found) != 1:
            wrong.append(f"{p.topic}:{p.partition}@{p.record.offset} is in {copy.topic}:{copy.partition} "
                         f"{len(found)} time(s) (offsets {found}), expected once")
    if fault == "verify":
        wrong.append("injected fault: verification forced to fail")
    if wrong:
        raise BrokerError("verification failed: " + "; ".join(wrong[:20]))
    return {"partitions_checked": len(plan.partitions), "copies_checked": len(copies)}


@task(name="restore-snapshot", cache_policy=NO_CACHE)
def restore_snapshot(cluster: KafkaCluster, plan: DrainPlan, snapshot_csv: str) -> int:
    offsets = {}
    for line in snapshot_csv.splitlines():
        topic, partition, offset = line.rsplit(",", 2)
        offsets[(topic, int(partition))] = int(offset)
    alter(cluster, plan.group, offsets)
    return len(offsets)


# --- the flow ------------------------------------------------------------------------------------

@flow(name=RUNBOOK_ID, persist_result=False)
def kafka_drain_stuck(params: DrainStuckParameters, requested_by: str = "unknown",
                      trigger: dict[str, Any] | None = None):
    """Skip the record each stuck partition of a consumer group is stuck on, keeping it in a dead-letter topic."""
    run_id = str(flow_run.id)
    return guarded(run_id, lambda: _drain(run_id, params, requested_by, trigger))


def _drain(run_id: str, params: DrainStuckParameters, requested_by: str, trigger: dict[str, Any] | None):
    context = RunContext.load()
    runbook = context.catalog.get(RUNBOOK_ID)
    cluster = context.clusters.kafka_cluster(params.cluster)
    record_start(run_id, RUNBOOK_ID, params, requested_by, trigger, f"{params.cluster}/{params.group}")
    if params.mode == "report":  # changes nothing, so it takes no lock
        plan = observe_and_plan(cluster, params)
        _record_plan(run_id, plan)
        create_markdown_artifact(markdown=plan.markdown(), description=f"{RUNBOOK_ID} report of {params.group}")
        journal.record(run_id, "outcome", f"report only: {len(plan.partitions)} stuck partition(s); nothing was "
                       "changed", outcome="unchanged", report=True,
                       stuck=len(plan.partitions))
        return Completed(message=f"{len(plan.partitions)} stuck partition(s) reported")
    key = runbook.lock_key(params)
    with target_lock(key, run_id, context.settings.lock_wait_s):
        journal.record(run_id, "lock", f"holding lock {key}", key=key)
        plan = observe_and_plan(cluster, params)
        _record_plan(run_id, plan)
        if not plan.partitions:
            journal.record(run_id, "outcome", "nothing is stuck: nothing was changed", outcome="unchanged")
            return Completed(message="nothing is stuck")
        plan, refused = approve_stable_plan(
            run_id=run_id, context=context, runbook=runbook, requested_by=requested_by, plan=plan,
            markdown=lambda p: p.markdown(), replan=lambda: _stopped_and_refreshed(run_id, cluster, params, plan),
            record_plan=lambda p: _record_plan(run_id, p),
        )
        if refused is not None:
            return refused
        if not plan.partitions:
            journal.record(run_id, "outcome", "no partition is stuck any more: nothing was changed",
                           outcome="unchanged")
            return Completed(message="nothing is stuck any more")
        _act(run_id, context, cluster, params, plan)
    return Completed(message=f"{len(plan.partitions)} stuck record(s) moved to the dead-letter topic and skipped")


def _stopped_and_refreshed(run_id: str, cluster: KafkaCluster, params: DrainStuckParameters,
                           plan: DrainPlan) -> DrainPlan:
    """Once approved: wait for the group to be empty (saying so in the journal), then plan again."""
    with kafka_client(cluster) as kafka:
        active = not kafka.describe_group(params.group).is_inactive
    if active:
        journal.record(run_id, "note", f"approved; waiting up to {params.wait_for_inactive:g} s for group "
                       f"{params.group} to become empty: stop its consumers now", waiting_for="inactive group",
                       wait_s=params.wait_for_inactive)
    state = wait_for_inactive(cluster, params.group, params.wait_for_inactive)
    journal.record(run_id, "observation", f"group {params.group} is {state}: its consumers are stopped",
                   state=state)
    return refresh_plan(cluster, plan)


def _act(run_id: str, context: RunContext, cluster: KafkaCluster, params: DrainStuckParameters,
         plan: DrainPlan) -> None:
    """Snapshot, copy, move, verify; a failure after the offsets started moving restores the snapshot."""
    snapshot_csv, snapshot_path = take_snapshot(cluster, plan, context.settings.snapshot_dir, run_id)
    restore_command = (f"runbook run kafka-replay -p cluster={params.cluster} -p group={params.group} "
                       f"-p from_file={snapshot_path}")
    journal.record(run_id, "snapshot", f"committed offsets saved to {snapshot_path}", path=str(snapshot_path),
                   csv=snapshot_csv, restore_command=restore_command)
    moving = False
    try:
        copies = copy_to_dead_letter(cluster, plan)
        for p, copy in zip(plan.partitions, copies):
            done = "was already" if copy.already_present else "copied"
            journal.record(run_id, "action", f"{p.topic}:{p.partition}@{p.record.offset} {done} in "
                           f"{copy.topic}:{copy.partition} at offset {copy.offset}", source=f"{p.topic}:{p.partition}",
                           record_offset=p.record.offset, dead_letter_topic=copy.topic,
                           dead_letter_partition=copy.partition, dead_letter_offset=copy.offset,
                           already_present=copy.already_present)
        moving = True
        moved = move_offsets(cluster, plan)
        journal.record(run_id, "action", f"moved {moved} committed offset(s) of {plan.group} one past the stuck "
                       "record", offsets={f"{p.topic}:{p.partition}": p.target_offset for p in plan.partitions})
        verified = verify_drain(cluster, plan, copies, context.settings.inject_fault)
        journal.record(run_id, "verification", f"read back {verified['partitions_checked']} offset(s) and "
                       f"{verified['copies_checked']} dead-letter cop(ies): as planned", **verified)
    except Exception as exc:
        journal.record(run_id, "error", f"{type(exc).__name__}: {exc}")
        kept = "records already copied stay in the dead-letter topic (a new run will not copy them again)"
        if not moving:
            journal.record(run_id, "outcome", f"failed before moving any offset: {exc}; {kept}", outcome="failed")
            raise
        try:
            restored = restore_snapshot(cluster, plan, snapshot_csv)
        except Exception as restore_exc:
            journal.record(run_id, "rollback", f"RESTORE FAILED: {restore_exc}. Restore by hand: {restore_command}",
                           restored=False, restore_command=restore_command)
            journal.record(run_id, "outcome", f"failed, and the restore failed: {exc}", outcome="failed")
            raise RunbookError(f"{exc}; restoring the snapshot failed too ({restore_exc}): "
                               f"restore by hand with: {restore_command}") from exc
        journal.record(run_id, "rollback", f"restored {restored} offset(s) from the snapshot; {kept}",
                       restored=True, offsets_restored=restored)
        journal.record(run_id, "outcome", f"failed and rolled back: {exc}", outcome="failed")
        raise
    _report(plan, copies)
    journal.record(run_id, "outcome", f"{len(plan.partitions)} stuck record(s) of {plan.group} kept in the "
                   "dead-letter topic and skipped; start the consumers again", outcome="succeeded",
                   partitions=len(plan.partitions))


def _record_plan(run_id: str, plan: DrainPlan) -> None:
    observed = list(plan.observed)
    journal.record(run_id, "observation", f"group {plan.group} ({plan.state}): {len(plan.partitions)} of "
                   f"{len(observed)} partition(s) stuck over {plan.stuck_after:g} s", state=plan.state,
                   members=list(plan.members), observed=observed[:OBSERVED_ROWS_KEPT], observed_count=len(observed))
    journal.record(run_id, "plan", f"{len(plan.partitions)} stuck partition(s): copy each record to the "
                   "dead-letter topic and move the offset one past it", csv=plan.to_csv(),
                   markdown=plan.markdown(), **plan.to_json())


def _report(plan: DrainPlan, copies: list[DeadLetterCopy]) -> None:
    create_table_artifact(
        table=[{"partition": f"{p.topic}:{p.partition}", "record offset": p.record.offset,
                "dead letter": f"{c.topic}:{c.partition}@{c.offset}", "copied now": not c.already_present,
                "offset before": p.committed_offset, "offset after": p.target_offset}
               for p, c in zip(plan.partitions, copies)],
        description=f"{RUNBOOK_ID} of {plan.group}: stuck records moved to the dead-letter topic",
    )
