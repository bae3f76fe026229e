"""Runbook `kafka-replay`: move a consumer group's committed offsets, like
`kafka-consumer-groups.sh --reset-offsets`, behind a plan, an approval, a snapshot and a rollback.

    observe -> plan -> approve -> re-plan (must equal what was approved) -> snapshot -> apply
            -> verify -> report;  apply or verify failing restores the snapshot.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mq_runbooks.base.clusters import Clusters, KafkaCluster
from mq_runbooks.base.errors import BrokerError, PreconditionError, RunbookError
from mq_runbooks.base.files import read_parameter_file
from mq_runbooks.kit import journal
from mq_runbooks.kit.lock import target_lock
from mq_runbooks.flows.replay_plan import ReplayPlan, parse_offsets_csv, plan_replay, spec_from_parameters
from mq_runbooks.kit.runtime import RunContext
from mq_runbooks.kit.steps import approve_stable_plan, guarded, record_start
from mq_runbooks.integrations.kafka import ConsumerGroup, KafkaClient

RUNBOOK_ID = "kafka-replay"
SPECS = ("to_datetime", "by_duration", "to_earliest", "to_latest", "to_offset", "shift_by", "to_current", "from_file")
PLAN_ROWS_SHOWN = 40


class ReplayParameters(BaseModel):
    """Parameters of kafka-replay; the reset spec options mean what they mean to the Java tool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a Kafka cluster named in clusters.yaml, e.g. primary")
    group: str = Field(min_length=1, max_length=249, description="the consumer group id")
    topic: list[str] = Field(
        default_factory=list,
        description="topic or topic:0,1,2 (repeatable); none = every topic the group has committed",
    )
    to_datetime: str | None = Field(None, description="yyyy-MM-ddTHH:mm:ss.SSS, UTC unless a zone is given")
    by_duration: str | None = Field(None, description="ISO-8601 duration back from now, e.g. PT15M or P1DT2H")
    to_earliest: bool = Field(False, description="true: the log start offset")
    to_latest: bool = Field(False, description="true: the log end offset")
    to_offset: int | None = Field(None, ge=0, description="an absolute offset (clamped into the log)")
    shift_by: int | None = Field(None, description="a signed number of messages to move by")
    to_current: bool = Field(False, description="true: keep committed offsets, uncommitted to the log end")
    from_file: str | None = Field(None, description="path of a topic,partition,offset CSV (the --export format)",
                                  json_schema_extra={"file": True})
    wait_for_inactive: float = Field(
        0, ge=0, le=3600, description="seconds to wait for the group to become empty (0: refuse at once)"
    )

    @model_validator(mode="after")
    def _exactly_one_spec(self) -> "ReplayParameters":
        chosen = [name for name in SPECS if getattr(self, name) not in (None, False)]
        if len(chosen) != 1:
            found = ", ".join(chosen) if chosen else "none"
            raise ValueError(f"give exactly one reset spec of {', '.join(SPECS)} (given: {found})")
        return self


# --- steps (plain functions; the flow wraps them as tasks) ---------------------------------------

def kafka_client(cluster: KafkaCluster) -> KafkaClient:
    return KafkaClient(cluster.client_config(), name=cluster.name, timeout_s=cluster.request_timeout_s)


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


def compute_plan(cluster: KafkaCluster, params: ReplayParameters, require_inactive: bool = False) -> ReplayPlan:
    """Observe the group and the log, and compute the plan (no change is made). With
    `require_inactive`, first wait (up to params.wait_for_inactive) for the group to be empty."""
    with kafka_client(cluster) as kafka:
        if require_inactive:
            inactive_group(kafka, params.group, params.wait_for_inactive)
        return plan_replay(kafka, params.group, reset_spec(params), params.topic or None)


def plan_markdown(plan: ReplayPlan, cluster: str, rows: int = PLAN_ROWS_SHOWN) -> str:
    """The plan as Markdown: totals first, then the partitions with the largest moves."""
    changed = [p for p in plan.partitions if p.current_offset != p.target_offset]
    lines = [
        f"**Group** `{plan.group}` on Kafka cluster `{cluster}`: reset {plan.spec_description}.",
        f"**{len(changed)}** of {len(plan.partitions)} partition(s) change; "
        f"**{plan.messages_replayed}** message(s) will be consumed again, **{plan.messages_skipped}** skipped.",
        "",
        "| topic | partition | current | target | log start | log end | replayed (+) / skipped (-) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ranked = sorted(plan.partitions, key=lambda p: -abs(p.replayed or 0))
    for p in ranked[:rows]:
        current = "none" if p.current_offset is None else p.current_offset
        replayed = "" if p.replayed is None else f"{p.replayed:+d}"
        lines.append(f"| {p.topic} | {p.partition} | {current} | {p.target_offset} | {p.log_start_offset} "
                     f"| {p.log_end_offset} | {replayed} |")
    if len(ranked) > rows:
        lines.append(f"\n... and {len(ranked) - rows} more partition(s): `runbook status RUN --plan` shows all.")
    for warning in plan.warnings:
        lines.append(f"\n> WARN {warning}")
    return "\n".join(lines)


def alter(cluster: KafkaCluster, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Alter the offsets; BrokerError listing each partition that failed (others may have succeeded)."""
    with kafka_client(cluster) as kafka:
        errors = kafka.alter_group_offsets(group, offsets)
    failed = {tp: error for tp, error in errors.items() if error}
    if failed:
        listed = ", ".join(f"{t}:{p} ({e})" for (t, p), e in sorted(failed.items()))
        raise BrokerError(f"altering offsets of group {group!r} failed for {len(failed)} partition(s): {listed}")


# --- tasks ---------------------------------------------------------------------------------------

@task(name="observe-and-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=lambda task, run, state: not isinstance(state.result(raise_on_failure=False), RunbookError))
def observe_and_plan(cluster: KafkaCluster, params: ReplayParameters) -> ReplayPlan:
    return compute_plan(cluster, params, require_inactive=True)


@task(name="snapshot", cache_policy=NO_CACHE)
def take_snapshot(cluster: KafkaCluster, plan: ReplayPlan, directory: Path, run_id: str) -> tuple[str, Path]:
    """The committed offsets of the planned partitions, as the Java tool's --export CSV, in a file."""
    with kafka_client(cluster) as kafka:
        committed = kafka.committed_offsets(plan.group)
    rows = [(p.topic, p.partition, committed[(p.topic, p.partition)])
            for p in plan.partitions if (p.topic, p.partition) in committed]
    text = "".join(f"{t},{p},{o}\n" for t, p, o in rows)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{RUNBOOK_ID}-{plan.group}-{run_id}.csv"
    path.write_text(text)
    return text, path


@task(name="apply", cache_policy=NO_CACHE)
def apply_plan(cluster: KafkaCluster, plan: ReplayPlan, fault: str | None) -> int:
    targets = {(p.topic, p.partition): p.target_offset for p in plan.partitions}
    if fault == "apply-partial":
        # Tests: apply the first half for real, then fail, as a broker dying mid-way would.
        ordered = sorted(targets)
        first = dict((tp, targets[tp]) for tp in ordered[: max(1, len(ordered) // 2)])
        alter(cluster, plan.group, first)
        raise BrokerError(f"injected fault: failed after applying {len(first)} of {len(targets)} partition(s)")
    alter(cluster, plan.group, targets)
    return len(targets)


@task(name="verify", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def verify_plan(cluster: KafkaCluster, plan: ReplayPlan, fault: str | None) -> dict[str, Any]:
    with kafka_client(cluster) as kafka:
        committed = kafka.committed_offsets(plan.group)
    wrong = [f"{p.topic}:{p.partition} is {committed.get((p.topic, p.partition))}, planned {p.target_offset}"
             for p in plan.partitions if committed.get((p.topic, p.partition)) != p.target_offset]
    if fault == "verify":
        wrong.append("injected fault: verification forced to fail")
    if wrong:
        raise BrokerError(f"verification failed for {len(wrong)} partition(s): " + "; ".join(wrong[:20]))
    return {"partitions_checked": len(plan.partitions)}


@task(name="restore-snapshot", cache_policy=NO_CACHE)
def restore_snapshot(cluster: KafkaCluster, plan: ReplayPlan, snapshot_csv: str) -> dict[str, Any]:
    """Put back the offsets of the snapshot; partitions that had none before cannot be un-committed by
    this client, so they are reported with the command that removes them."""
    offsets = parse_offsets_csv(snapshot_csv) if snapshot_csv.strip() else {}
    if offsets:
        alter(cluster, plan.group, offsets)
    uncommitted_before = sorted((p.topic, p.partition) for p in plan.partitions
                                if (p.topic, p.partition) not in offsets)
    return {"restored": len(offsets), "had_no_offset_before": [f"{t}:{p}" for t, p in uncommitted_before]}


# --- the flow ------------------------------------------------------------------------------------

@flow(name=RUNBOOK_ID, persist_result=False)
def kafka_replay(params: ReplayParameters, requested_by: str = "unknown", trigger: dict[str, Any] | None = None):
    """Replay (or skip) messages for a consumer group by moving its committed offsets."""
    run_id = str(flow_run.id)
    return guarded(run_id, lambda: _replay(run_id, params, requested_by, trigger))


def _replay(run_id: str, params: ReplayParameters, requested_by: str, trigger: dict[str, Any] | None):
    context = RunContext.load()
    runbook = context.catalog.get(RUNBOOK_ID)
    cluster = context.clusters.kafka_cluster(params.cluster)
    record_start(run_id, RUNBOOK_ID, params, requested_by, trigger, f"{params.cluster}/{params.group}")
    key = runbook.lock_key(params)
    with target_lock(key, run_id, context.settings.lock_wait_s):
        journal.record(run_id, "lock", f"holding lock {key}", key=key)
        plan = observe_and_plan(cluster, params)
        _record_plan(run_id, plan, params.cluster)
        if not any(p.current_offset != p.target_offset for p in plan.partitions):
            journal.record(run_id, "outcome", "nothing to change: every partition is already at its target",
                           outcome="unchanged")
            return Completed(message="nothing to change")
        plan, refused = approve_stable_plan(
            run_id=run_id, context=context, runbook=runbook, requested_by=requested_by, plan=plan,
            markdown=lambda p: plan_markdown(p, params.cluster), replan=lambda: observe_and_plan(cluster, params),
            record_plan=lambda p: _record_plan(run_id, p, params.cluster), trigger=trigger,
        )
        if refused is not None:
            return refused
        _apply_with_rollback(run_id, context, cluster, params, plan)
    return Completed(message=f"{len(plan.partitions)} partition offset(s) reset")


def _apply_with_rollback(run_id: str, context: RunContext, cluster: KafkaCluster, params: ReplayParameters,
                         plan: ReplayPlan) -> None:
    """Snapshot, apply, verify; on failure restore the snapshot and say exactly what was restored."""
    snapshot_csv, snapshot_path = take_snapshot(cluster, plan, context.settings.snapshot_dir, run_id)
    restore_command = (f"runbook run {RUNBOOK_ID} -p cluster={params.cluster} -p group={params.group} "
                       f"-p from_file={snapshot_path}")
    journal.record(run_id, "snapshot", f"committed offsets saved to {snapshot_path}", path=str(snapshot_path),
                   csv=snapshot_csv, restore_command=restore_command)
    create_markdown_artifact(markdown=f"Snapshot of `{plan.group}` before the reset (`{snapshot_path}`):\n\n"
                             f"```csv\n{snapshot_csv}```\n\nRestore: `{restore_command}`",
                             description="offsets before the reset")
    fault = context.settings.inject_fault
    try:
        applied = apply_plan(cluster, plan, fault)
        journal.record(run_id, "action", f"altered {applied} partition offset(s) of {plan.group}", partitions=applied)
        verified = verify_plan(cluster, plan, fault)
        journal.record(run_id, "verification", f"read back {verified['partitions_checked']} offset(s): all as planned",
                       **verified)
    except Exception as exc:
        journal.record(run_id, "error", f"{type(exc).__name__}: {exc}")
        try:
            restored = restore_snapshot(cluster, plan, snapshot_csv)
        except Exception as restore_exc:
            journal.record(run_id, "rollback", f"RESTORE FAILED: {restore_exc}. Restore by hand: {restore_command}",
                           restored=False, restore_command=restore_command)
            journal.record(run_id, "outcome", f"failed, and the restore failed: {exc}", outcome="failed")
            raise RunbookError(f"{exc}; restoring the snapshot failed too ({restore_exc}): "
                               f"restore by hand with: {restore_command}") from exc
        extra = ""
        if restored["had_no_offset_before"]:
            extra = (f"; {len(restored['had_no_offset_before'])} partition(s) had no committed offset before "
                     f"and keep the new one ({', '.join(restored['had_no_offset_before'][:10])}): remove them with "
                     f"kafka-consumer-groups.sh --delete-offsets --group {plan.group} --topic TOPIC")
        journal.record(run_id, "rollback", f"restored {restored['restored']} offset(s) from the snapshot{extra}",
                       restored=True, offsets_restored=restored["restored"],
                       had_no_offset_before=restored["had_no_offset_before"])
        journal.record(run_id, "outcome", f"failed and rolled back: {exc}", outcome="failed")
        raise
    _report(plan)
    journal.record(run_id, "outcome",
                   f"offsets of {plan.group} reset: {plan.messages_replayed} message(s) to replay, "
                   f"{plan.messages_skipped} skipped", outcome="succeeded",
                   replayed=plan.messages_replayed, skipped=plan.messages_skipped)


def plan_json(plan: ReplayPlan, cluster: str) -> dict[str, Any]:
    return {
        "cluster": cluster, "group": plan.group, "spec": plan.spec_description, "digest": plan.digest(),
        "messages_replayed": plan.messages_replayed, "messages_skipped": plan.messages_skipped,
        "warnings": list(plan.warnings),
        "partitions": [{"topic": p.topic, "partition": p.partition, "current": p.current_offset,
                        "target": p.target_offset, "log_start": p.log_start_offset, "log_end": p.log_end_offset,
                        "replayed": p.replayed} for p in plan.partitions],
    }


def _record_plan(run_id: str, plan: ReplayPlan, cluster: str) -> None:
    journal.record(
        run_id, "plan",
        f"{len(plan.partitions)} partition(s): {plan.messages_replayed} to replay, {plan.messages_skipped} to skip",
        csv=plan.to_csv(), markdown=plan_markdown(plan, cluster), **plan_json(plan, cluster),
    )


def _report(plan: ReplayPlan) -> None:
    create_table_artifact(
        table=[{"partition": f"{p.topic}:{p.partition}", "before": p.current_offset, "after": p.target_offset,
                "replayed": p.replayed} for p in plan.partitions],
        description=f"kafka-replay of {plan.group}: offsets before and after",
    )


@dataclass(frozen=True)
class DryRun:
    """What `runbook plan` shows: the plan in each of its renderings."""

    plan: ReplayPlan
    cluster: str

    def to_csv(self) -> str:
        return self.plan.to_csv()

    def to_json(self) -> dict[str, Any]:
        return plan_json(self.plan, self.cluster)

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        return plan_markdown(self.plan, self.cluster, rows)

    def digest(self) -> str:
        return self.plan.digest()


def dry_run(params: ReplayParameters, clusters: Clusters) -> DryRun:
    """`runbook plan`: the plan and nothing else (no lock, no approval, no change)."""
    return DryRun(compute_plan(clusters.kafka_cluster(params.cluster), params), params.cluster)
