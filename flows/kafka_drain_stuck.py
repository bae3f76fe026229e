"""Runbook `kafka-drain-stuck`: unblock a consumer group stuck on a record (a poison message) without
losing it: the record is copied to a dead-letter topic with its provenance, and the group's committed
offset moves one past it.

The driver (mq_runbooks.kit.driver) gives it the lock, the gate, the re-plan, the snapshot, the
restore on failure and the outcome; this module is the runbook's own logic:

    observe (two samples) -> plan -> approve -> wait for the consumers to be stopped -> re-plan (the
    approved plan refreshed: it must be unchanged) -> snapshot (the --export CSV) -> per stuck
    partition, copy its record to the dead-letter topic (a fenced step, once: a rerun finds the earlier
    copy) -> move the offsets (a fenced step) -> verify; a failure after any copy restores the offsets,
    and the copies stay where they are.
    mode=report: observe -> plan, and nothing else (no lock, no gate).
"""
from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mq_runbooks.base.clusters import KafkaCluster
from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.flows.kafka_drain_plan import (
    OBSERVED_ROWS_KEPT, RUNBOOK_ID, DrainPlan, DrainStuckParameters, StuckPartition, observe, refresh,
)
from mq_runbooks.flows.kafka_offsets import alter, inactive_group, restore_offsets, save_offsets_snapshot
from mq_runbooks.flows.kafka_replay import offsets_restore_items
from mq_runbooks.integrations.kafka import KafkaClient, UnknownTopicError
from mq_runbooks.integrations.kafka_records import DeadLetterCopy, KafkaRecords, Provenance
from mq_runbooks.flows.replay_spec import parse_offsets_csv
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem

__all__ = ["DrainStuckParameters", "STEPS", "dry_run", "kafka_drain_stuck"]

COPY_RETRIES = 2  # a copy is idempotent (it looks for an earlier one first): retried on transient errors

Copied = list[tuple[StuckPartition, DeadLetterCopy | None]]  # None: copied by an earlier attempt of this run


def kafka_records(cluster: KafkaCluster) -> KafkaRecords:
    return KafkaRecords(cluster.client_config(), name=cluster.name, timeout_s=cluster.request_timeout_s)


def compute_plan(cluster: KafkaCluster, params: DrainStuckParameters) -> DrainPlan:
    """Observe the group for `stuck_after` seconds and plan (no change is made)."""
    with KafkaClient.from_cluster(cluster) as kafka:
        return observe(kafka, kafka_records(cluster), params, cluster.name)


def copy_to_dead_letter(cluster: KafkaCluster, group: str, p: StuckPartition) -> DeadLetterCopy:
    """Copy the record `p` is stuck on to its dead-letter topic, once: when a copy with the same
    provenance is there already (an earlier run), that one is returned and nothing is produced."""
    records = kafka_records(cluster)
    try:
        record = records.read_record(p.topic, p.partition, p.record.offset)
        if record.offset != p.record.offset:
            raise BrokerError(f"{p.topic}:{p.partition}: the record at offset {p.record.offset} is gone "
                              f"(the next one is at {record.offset}); nothing was copied for it")
        with KafkaClient.from_cluster(cluster) as kafka:
            return records.copy_to_dead_letter(kafka, record, p.dead_letter_topic,
                                               Provenance(p.topic, p.partition, p.record.offset, group))
    except (UnknownTopicError, KafkaException) as exc:
        # e.g. NOT_LEADER_FOR_PARTITION, or no metadata yet for a dead-letter topic created a moment ago:
        # transient, and the copy is safe to repeat (it looks for an earlier one first)
        raise UnreachableError(f"copying {p.topic}:{p.partition}@{p.record.offset}: {exc}") from exc


def _copied(p: StuckPartition, copy: DeadLetterCopy) -> str:
    done = "was already" if copy.already_present else "copied"
    return f"{p.topic}:{p.partition}@{p.record.offset} {done} in {copy.topic}:{copy.partition} at offset {copy.offset}"


def _copy_data(p: StuckPartition, copy: DeadLetterCopy) -> dict[str, Any]:
    return {"source": f"{p.topic}:{p.partition}", "record_offset": p.record.offset, "dead_letter_topic": copy.topic,
            "dead_letter_partition": copy.partition, "dead_letter_offset": copy.offset,
            "already_present": copy.already_present}


def _journal_observation(run: Run, plan: DrainPlan) -> None:
    observed = list(plan.observed)
    run.observed(f"group {plan.group} ({plan.state}): {len(plan.partitions)} of {len(observed)} partition(s) stuck "
                 f"over {plan.stuck_after:g} s", state=plan.state, members=list(plan.members),
                 observed=observed[:OBSERVED_ROWS_KEPT], observed_count=len(observed))


class DrainStuck(RunbookSteps[DrainStuckParameters, DrainPlan]):
    id = RUNBOOK_ID
    cannot_undo = ("the stuck records copied to the dead-letter topic stay there (a later run finds them and does "
                   "not copy them again)",)

    def target(self, params: DrainStuckParameters) -> str:
        return f"{params.cluster}/{params.group}"

    def read_only(self, params: DrainStuckParameters) -> bool:
        return params.mode == "report"

    def observe(self, env: Env, params: DrainStuckParameters) -> DrainPlan:
        plan = compute_plan(env.clusters.kafka_cluster(params.cluster), params)
        if isinstance(env, Run) and not plan.missing:
            _journal_observation(env, plan)
        return plan

    def replan(self, run: Run, params: DrainStuckParameters, approved: DrainPlan) -> DrainPlan:
        """The approved plan refreshed: the consumers are stopped by now, so sampling again would find
        nothing stuck; the records must still be where they were."""
        with KafkaClient.from_cluster(run.clusters.kafka_cluster(params.cluster)) as kafka:
            return refresh(kafka, approved)

    def before_replan(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> None:
        """Once approved: wait for the group to be empty (saying so in the journal)."""
        cluster = run.clusters.kafka_cluster(params.cluster)
        with KafkaClient.from_cluster(cluster) as kafka:
            if not kafka.describe_group(params.group).is_inactive:
                run.note(f"approved; waiting up to {params.wait_for_inactive:g} s for group {params.group} to "
                         "become empty: stop its consumers now", waiting_for="inactive group",
                         wait_s=params.wait_for_inactive)
            state = inactive_group(kafka, params.group, params.wait_for_inactive).state
        run.observed(f"group {params.group} is {state}: its consumers are stopped", state=state)

    def snapshot(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> Snapshot:
        with run.kafka(params.cluster) as kafka:
            return save_offsets_snapshot(kafka, plan.group, _partitions(plan), run.settings.snapshot_dir,
                                         f"{RUNBOOK_ID}-{plan.group}-{run.id}")

    def act(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> Copied:
        cluster = run.clusters.kafka_cluster(params.cluster)
        copies: Copied = []
        for p in plan.partitions:
            copy = run.step(f"dlt-copy:{p.topic}:{p.partition}:{p.record.offset}",
                            lambda p=p: copy_to_dead_letter(cluster, plan.group, p),
                            lambda c, p=p: _copied(p, c), lambda c, p=p: _copy_data(p, c), retries=COPY_RETRIES)
            copies.append((p, copy))
        targets = {(p.topic, p.partition): p.target_offset for p in plan.partitions}
        with run.kafka(params.cluster) as kafka:
            run.step("move-offsets", lambda: alter(kafka, plan.group, targets),
                     f"moved {len(targets)} committed offset(s) of {plan.group} one past the stuck record",
                     lambda _: {"offsets": {f"{t}:{p}": offset for (t, p), offset in targets.items()}})
        return copies

    def verify(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: Copied) -> Verification:
        """Each committed offset is one past its record, and each record is in the dead-letter topic once."""
        cluster = run.clusters.kafka_cluster(params.cluster)
        with KafkaClient.from_cluster(cluster) as kafka:
            committed = kafka.committed_offsets(plan.group)
        now = {(p.topic, p.partition): committed.get((p.topic, p.partition)) for p in plan.partitions}
        wrong = [f"{p.topic}:{p.partition} committed {now[(p.topic, p.partition)]}, planned {p.target_offset}"
                 for p in plan.partitions if now[(p.topic, p.partition)] != p.target_offset]
        records = kafka_records(cluster)
        copied = {(p.topic, p.partition): copy for p, copy in result or []}
        for p in plan.partitions:
            copy = copied.get((p.topic, p.partition))
            where = (copy.topic, copy.partition) if copy else (p.dead_letter_topic, p.dead_letter_partition)
            try:
                found = records.find_copies(*where, Provenance(p.topic, p.partition, p.record.offset, plan.group))
            except UnknownTopicError:  # the dead-letter topic was never created: no copy
                found = []
            if len(found) != 1:
                wrong.append(f"{p.topic}:{p.partition}@{p.record.offset} is in {where[0]}:{where[1]} "
                             f"{len(found)} time(s) (offsets {found}), expected once")
        if wrong:
            return Verification(ok=False, summary=f"{len(wrong)} check(s) not as planned: " + "; ".join(wrong[:20]))
        return Verification(summary=f"read back {len(plan.partitions)} offset(s) and {len(plan.partitions)} "
                                    "dead-letter cop(ies): as planned",
                            data={"partitions_checked": len(plan.partitions), "copies_checked": len(plan.partitions)})

    def restore(self, run: Run, params: DrainStuckParameters, plan: DrainPlan | None, snapshot: Snapshot) -> Restore:
        """Put the committed offsets back if they were moved (else the group is left alone: it may be running
        again); the dead-letter copies stay, and a later run finds them and copies nothing. In a restore
        run (`plan` None) the offsets saved are put back."""
        if plan is None:
            with run.kafka(params.cluster) as kafka:
                return restore_offsets(kafka, params.group, list(parse_offsets_csv(snapshot.csv)), snapshot)
        steps = list(run.applied_steps)
        copies = sum(step.startswith("dlt-copy:") for step in steps)
        if "move-offsets" in steps:
            with run.kafka(params.cluster) as kafka:
                restored = restore_offsets(kafka, plan.group, _partitions(plan), snapshot)
        else:
            restored = Restore(summary="no committed offset had been moved: nothing to put back", restored=True,
                               restore_command=snapshot.restore_command, data={"offsets_restored": 0})
        kept = (f"; the {copies} record(s) copied to the dead-letter topic stay there (a new run finds them and does "
                "not copy them again)") if copies else ""
        return restored.model_copy(update={"summary": restored.summary + kept,
                                           "data": {**restored.data, "dead_letter_copies_kept": copies}})

    def restore_items(self, env: Env, params: DrainStuckParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        return offsets_restore_items(env.clusters.kafka_cluster(params.cluster), params.group, snapshot, original,
                                     "new offset", params.wait_for_inactive if isinstance(env, Run) else 0)

    def report(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: Copied | None) -> None:
        if result is None:  # mode=report
            create_markdown_artifact(markdown=plan.markdown(), description=f"{RUNBOOK_ID} report of {params.group}")
            return
        create_table_artifact(
            table=[{"partition": f"{p.topic}:{p.partition}", "record offset": p.record.offset,
                    "dead letter": f"{c.topic}:{c.partition}@{c.offset}" if c else "copied earlier in this run",
                    "copied now": bool(c and not c.already_present), "offset before": p.committed_offset,
                    "offset after": p.target_offset} for p, c in result],
            description=f"{RUNBOOK_ID} of {plan.group}: stuck records moved to the dead-letter topic",
        )

    def outcome(self, params: DrainStuckParameters, plan: DrainPlan, result: Copied) -> str:
        return (f"{len(plan.partitions)} stuck record(s) of {plan.group} kept in the dead-letter topic and skipped; "
                "start the consumers again")


def _partitions(plan: DrainPlan) -> list[tuple[str, int]]:
    return [(p.topic, p.partition) for p in plan.partitions]


STEPS = DrainStuck()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight (it takes `stuck_after` seconds to observe)


kafka_drain_stuck = runbook_flow(
    STEPS, DrainStuckParameters,
    "Skip the record each stuck partition of a consumer group is stuck on, keeping it in a dead-letter topic.")
