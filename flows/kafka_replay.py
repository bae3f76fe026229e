"""Runbook `kafka-replay`: move a consumer group's committed offsets, like
`kafka-consumer-groups.sh --reset-offsets`. The driver (mq_runbooks.kit.driver) gives it the plan,
the gate, the re-plan, the snapshot, the restore on failure and the outcome; this module is the
runbook's own logic: plan (the group must be empty), snapshot as the `--export` CSV, alter, read back.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect.artifacts import create_table_artifact

from mq_runbooks.base.clusters import KafkaCluster
from mq_runbooks.base.errors import BrokerError, PreconditionError
from mq_runbooks.base.files import read_parameter_file, write_file
from mq_runbooks.flows.kafka_replay_params import ReplayParameters, SPECS
from mq_runbooks.flows.replay_plan import ReplayPlan, plan_replay
from mq_runbooks.flows.replay_spec import RUNBOOK as RUNBOOK_ID, parse_offsets_csv, spec_from_parameters
from mq_runbooks.integrations.kafka import ConsumerGroup, KafkaClient
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Restore, Snapshot, Verification


# --- steps (plain functions; the flow wraps them as tasks) ---------------------------------------

def reset_spec(params: ReplayParameters):
    """The Java tool's reset spec from the parameters; a from_file path is read here."""
    values: dict[str, Any] = {name: getattr(params, name) for name in SPECS}
    if params.from_file is not None:
        values["from_file"] = read_parameter_file(params.from_file, runbook=RUNBOOK_ID, parameter="from_file")
    return spec_from_parameters(**values)


def inactive_group(kafka: KafkaClient, group: str, wait_s: float) -> ConsumerGroup:
    """The group once it is Empty (or Dead: no members, nothing committed yet); PreconditionError listing
    the active members when it is not within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        described = kafka.describe_group(group)
        if described.state in ("Empty", "Dead"):
            return described
        if time.monotonic() >= deadline:
            members = "\n".join(
                f"  - {m.client_id} on {m.host} (member {m.member_id}): "
                + (", ".join(f"{t}:{p}" for t, p in m.assignment) or "no partitions")
                for m in described.members
            )
            waited = f" after waiting {wait_s:.0f}s" if wait_s else ""
            raise PreconditionError(
                f"offsets of group {group!r} can only be reset when it is inactive, but its state is "
                f"{described.state}{waited}. Stop its consumers (or pass wait_for_inactive=SECONDS). "
                f"Active members:\n{members or '  (none listed)'}"
            )
        time.sleep(1)


def compute_plan(cluster: KafkaCluster, params: ReplayParameters, require_inactive: bool = False,
                 now_ms: int | None = None) -> ReplayPlan:
    """Observe the group and the log, and compute the plan (no change is made). With
    `require_inactive`, first wait (up to params.wait_for_inactive) for the group to be empty;
    `now_ms` is what by_duration counts back from (default: now)."""
    with KafkaClient.from_cluster(cluster) as kafka:
        if require_inactive:
            inactive_group(kafka, params.group, params.wait_for_inactive)
        plan = plan_replay(kafka, params.group, reset_spec(params), params.topic or None, now_ms=now_ms)
    return replace(plan, cluster=cluster.name)


def alter(cluster: KafkaCluster, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Alter the offsets; BrokerError listing each partition that failed (others may have succeeded)."""
    with KafkaClient.from_cluster(cluster) as kafka:
        errors = kafka.alter_group_offsets(group, offsets)
    failed = {tp: error for tp, error in errors.items() if error}
    if failed:
        listed = ", ".join(f"{t}:{p} ({e})" for (t, p), e in sorted(failed.items()))
        raise BrokerError(f"altering offsets of group {group!r} failed for {len(failed)} partition(s): {listed}")


# --- the runbook's steps (the driver does the rest) -----------------------------------------------

def restore_command(cluster: str, group: str, snapshot_path: Path | str) -> str:
    """The command that puts a group's offsets back from an `--export` CSV (this runbook's snapshot)."""
    return f"runbook run {RUNBOOK_ID} -p cluster={cluster} -p group={group} -p from_file={snapshot_path}"


def save_offsets_snapshot(kafka_cluster: KafkaCluster, group: str, partitions: list[tuple[str, int]],
                          directory: Path, name: str) -> Snapshot:
    """The group's committed offsets of `partitions`, as the Java tool's --export CSV in a file, with
    the kafka-replay command that restores them (used by every runbook that moves Kafka offsets)."""
    with KafkaClient.from_cluster(kafka_cluster) as kafka:
        committed = kafka.committed_offsets(group)
    text = "".join(f"{t},{p},{committed[(t, p)]}\n" for t, p in partitions if (t, p) in committed)
    path = write_file(Path(directory) / f"{name}.csv", text)  # 0600, in a directory made 0700
    command = restore_command(kafka_cluster.name, group, path)
    return Snapshot(summary=f"committed offsets of {group} on {kafka_cluster.name} saved to {path}",
                    path=str(path), csv=text, restore_command=command,
                    data={"group": group, "cluster": kafka_cluster.name})


def restore_offsets(kafka_cluster: KafkaCluster, group: str, partitions: list[tuple[str, int]],
                    snapshot: Snapshot) -> Restore:
    """Put back the offsets of a snapshot; partitions that had none before cannot be un-committed by
    this client, so they are named with the command that removes them."""
    offsets = parse_offsets_csv(snapshot.csv) if snapshot.csv.strip() else {}
    if offsets:
        alter(kafka_cluster, group, offsets)
    had_none = [f"{t}:{p}" for t, p in sorted(partitions) if (t, p) not in offsets]
    extra = ""
    if had_none:
        extra = (f"; {len(had_none)} partition(s) had no committed offset before and keep the new one "
                 f"({', '.join(had_none[:10])}): remove them with kafka-consumer-groups.sh --delete-offsets "
                 f"--group {group} --topic TOPIC")
    return Restore(summary=f"restored {len(offsets)} offset(s) from the snapshot of {group}{extra}", restored=True,
                   restore_command=snapshot.restore_command,
                   data={"offsets_restored": len(offsets), "had_no_offset_before": had_none})


class Replay(RunbookSteps[ReplayParameters, ReplayPlan]):
    id = RUNBOOK_ID

    def target(self, params: ReplayParameters) -> str:
        return f"{params.cluster}/{params.group}"

    def relative_targets(self, params: ReplayParameters) -> str | None:
        return f"by_duration={params.by_duration}" if params.by_duration else None

    def observe(self, env: Env, params: ReplayParameters) -> ReplayPlan:
        # In a run the group must be empty (or become so within wait_for_inactive); `runbook plan` shows
        # the plan of an active group too, with a warning.
        return compute_plan(env.clusters.kafka_cluster(params.cluster), params, require_inactive=isinstance(env, Run),
                            now_ms=env.plan_time_ms())  # a run's first plan, in every re-plan

    def snapshot(self, run: Run, params: ReplayParameters, plan: ReplayPlan) -> Snapshot:
        return save_offsets_snapshot(run.clusters.kafka_cluster(params.cluster), plan.group, _partitions(plan),
                                     run.settings.snapshot_dir, f"{RUNBOOK_ID}-{plan.group}-{run.id}")

    def act(self, run: Run, params: ReplayParameters, plan: ReplayPlan) -> None:
        cluster = run.clusters.kafka_cluster(params.cluster)
        targets = plan.target_offsets()
        # An alter is not atomic across partitions: a failure may have moved some of them.
        run.step("alter-offsets", lambda: alter(cluster, plan.group, targets),
                 f"altered {len(targets)} partition offset(s) of {plan.group}", lambda _: {"partitions": len(targets)},
                 partial=True)

    def verify(self, run: Run, params: ReplayParameters, plan: ReplayPlan, result: None) -> Verification:
        with KafkaClient.from_cluster(run.clusters.kafka_cluster(params.cluster)) as kafka:
            committed = kafka.committed_offsets(plan.group)
        wrong = [f"{p.topic}:{p.partition} is {committed.get((p.topic, p.partition))}, planned {p.target_offset}"
                 for p in plan.partitions if committed.get((p.topic, p.partition)) != p.target_offset]
        if wrong:
            return Verification(ok=False, summary=f"{len(wrong)} partition(s) not as planned: " + "; ".join(wrong[:20]))
        return Verification(summary=f"read back {len(plan.partitions)} offset(s): all as planned",
                            data={"partitions_checked": len(plan.partitions)})

    def restore(self, run: Run, params: ReplayParameters, plan: ReplayPlan, snapshot: Snapshot) -> Restore:
        return restore_offsets(run.clusters.kafka_cluster(params.cluster), plan.group, _partitions(plan), snapshot)

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
