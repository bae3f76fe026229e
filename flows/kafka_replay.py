"""Runbook `kafka-replay`: move a consumer group's committed offsets, like
`kafka-consumer-groups.sh --reset-offsets`. The driver (mq_runbooks.kit.driver) gives it the plan,
the gate, the re-plan, the snapshot, the restore on failure and the outcome; this module is the
runbook's own logic: plan (the group must be empty), snapshot as the `--export` CSV, alter, read back
(the offsets functions it shares with the other Kafka runbooks are flows/kafka_offsets.py).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect.artifacts import create_table_artifact

from mq_runbooks.base.clusters import KafkaCluster
from mq_runbooks.base.files import read_parameter_file
from mq_runbooks.flows.kafka_offsets import alter, inactive_group, restore_offsets, save_offsets_snapshot
from mq_runbooks.flows.kafka_replay_params import ReplayParameters, SPECS
from mq_runbooks.flows.replay_plan import ReplayPlan, plan_replay
from mq_runbooks.flows.replay_spec import RUNBOOK as RUNBOOK_ID, parse_offsets_csv, spec_from_parameters
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem, planned


# --- steps (plain functions; the flow wraps them as tasks) ---------------------------------------

def reset_spec(params: ReplayParameters):
    """The Java tool's reset spec from the parameters; a from_file path is read here."""
    values: dict[str, Any] = {name: getattr(params, name) for name in SPECS}
    if params.from_file is not None:
        values["from_file"] = read_parameter_file(params.from_file, runbook=RUNBOOK_ID, parameter="from_file")
    return spec_from_parameters(**values)


def compute_plan(kafka: KafkaClient, params: ReplayParameters, require_inactive: bool = False,
                 now_ms: int | None = None) -> ReplayPlan:
    """Observe the group and the log, and compute the plan (no change is made). With
    `require_inactive`, first wait (up to params.wait_for_inactive) for the group to be empty;
    `now_ms` is what by_duration counts back from (default: now)."""
    if require_inactive:
        inactive_group(kafka, params.group, params.wait_for_inactive)
    plan = plan_replay(kafka, params.group, reset_spec(params), params.topic or None, now_ms=now_ms)
    return replace(plan, cluster=kafka.name)


def offsets_restore_items(kafka_cluster: KafkaCluster, group: str, snapshot: Snapshot,
                          original: list[journal.Entry], set_column: str, wait_for_inactive: float = 0) -> list[RestoreItem]:
    """`runbook restore` of a run that moved a group's offsets (save_offsets_snapshot's CSV): each
    saved offset, the one committed now, and the one the run set (its plan's `set_column`). The
    group must be inactive (within `wait_for_inactive` seconds), as for any change of its offsets."""
    saved = parse_offsets_csv(snapshot.csv) if snapshot.csv.strip() else {}
    left = planned(original, ("topic", "partition"), set_column)
    with KafkaClient.from_cluster(kafka_cluster) as kafka:
        inactive_group(kafka, group, wait_for_inactive)
        committed = kafka.committed_offsets(group)
    return [RestoreItem(f"{t}:{p}", saved=offset, now=committed.get((t, p)), left=left.get((t, p)))
            for (t, p), offset in sorted(saved.items())]


class Replay(RunbookSteps[ReplayParameters, ReplayPlan]):
    id = RUNBOOK_ID
    cannot_undo = ("a partition that had no committed offset before the run keeps the one the run committed (this "
                   "client cannot delete a group's offset: kafka-consumer-groups.sh --delete-offsets does)",)

    def target(self, params: ReplayParameters) -> str:
        return f"{params.cluster}/{params.group}"

    def relative_targets(self, params: ReplayParameters) -> str | None:
        return f"by_duration={params.by_duration}" if params.by_duration else None

    def observe(self, env: Env, params: ReplayParameters) -> ReplayPlan:
        # In a run the group must be empty (or become so within wait_for_inactive); `runbook plan` shows
        # the plan of an active group too, with a warning.
        with env.kafka(params.cluster) as kafka:
            return compute_plan(kafka, params, require_inactive=isinstance(env, Run),
                                now_ms=env.plan_time_ms())  # a run's first plan, in every re-plan

    def snapshot(self, run: Run, params: ReplayParameters, plan: ReplayPlan) -> Snapshot:
        with run.kafka(params.cluster) as kafka:
            return save_offsets_snapshot(kafka, plan.group, _partitions(plan), run.settings.snapshot_dir,
                                         f"{RUNBOOK_ID}-{plan.group}-{run.id}")

    def act(self, run: Run, params: ReplayParameters, plan: ReplayPlan) -> None:
        targets = plan.target_offsets()
        with run.kafka(params.cluster) as kafka:
            # An alter is not atomic across partitions: a failure may have moved some of them.
            run.step("alter-offsets", lambda: alter(kafka, plan.group, targets),
                     f"altered {len(targets)} partition offset(s) of {plan.group}",
                     lambda _: {"partitions": len(targets)}, partial=True)

    def verify(self, run: Run, params: ReplayParameters, plan: ReplayPlan, result: None) -> Verification:
        with run.kafka(params.cluster) as kafka:
            committed = kafka.committed_offsets(plan.group)
        wrong = [f"{p.topic}:{p.partition} is {committed.get((p.topic, p.partition))}, planned {p.target_offset}"
                 for p in plan.partitions if committed.get((p.topic, p.partition)) != p.target_offset]
        if wrong:
            return Verification(ok=False, summary=f"{len(wrong)} partition(s) not as planned: " + "; ".join(wrong[:20]))
        return Verification(summary=f"read back {len(plan.partitions)} offset(s): all as planned",
                            data={"partitions_checked": len(plan.partitions)})

    def restore(self, run: Run, params: ReplayParameters, plan: ReplayPlan | None, snapshot: Snapshot) -> Restore:
        partitions = _partitions(plan) if plan is not None else list(parse_offsets_csv(snapshot.csv))
        with run.kafka(params.cluster) as kafka:
            return restore_offsets(kafka, params.group, partitions, snapshot)

    def restore_items(self, env: Env, params: ReplayParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        return offsets_restore_items(env.clusters.kafka_cluster(params.cluster), params.group, snapshot, original,
                                     "target", params.wait_for_inactive if isinstance(env, Run) else 0)

    def report(self, run: Run, params: ReplayParameters, plan: ReplayPlan, result: None) -> None:
        create_table_artifact(
            table=[{"partition": f"{p.topic}:{p.partition}", "before": p.current_offset, "after": p.target_offset,
                    "replayed": p.replayed} for p in plan.partitions],
            description=f"kafka-replay of {plan.group}: offsets before and after",
        )

    def outcome(self, params: ReplayParameters, plan: ReplayPlan, result: None) -> str:
        return (f"offsets of {plan.group} reset: {plan.messages_replayed} message(s) to replay, "
                f"{plan.messages_skipped} skipped")


def _partitions(plan: ReplayPlan) -> list[tuple[str, int]]:
    return [(p.topic, p.partition) for p in plan.partitions]


STEPS = Replay()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


kafka_replay = runbook_flow(
    STEPS, ReplayParameters,
    "Replay (or skip) messages for a consumer group by moving its committed offsets.")
