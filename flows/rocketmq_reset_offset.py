"""Runbook `rocketmq-reset-offset`: move a RocketMQ consumer group's offsets to a time (`to_datetime`,
`by_duration`), to the start (`to_earliest`) or past the backlog (`to_latest`), per topic or on every
topic it has offsets on, or back to a snapshot (`from_file`). The driver (mq_runbooks.kit.driver)
gives it the lock, the gate, the re-plan, the restore on failure and the outcome; this module is the
runbook's own logic:

    observe (route, offsets, the offset each time maps to; the group must have no online consumer)
    -> plan (per queue: broker, current and target offsets, messages replayed or skipped)
    -> snapshot (the previous offsets as a topic,broker,queue,offset CSV) -> update each queue's offset
    -> verify (each offset read back)

The plan and the offset updates live in mq_runbooks.flows.rocketmq_reset_plan (no Prefect there).

The target of a time is what `mqadmin resetOffsetByTime -s <ms>` commits (with its default force):
the store's answer to SEARCH_OFFSET_BY_TIMESTAMP, the offset of the first message stored at or after
the time (the queue's max offset when there is none). Online consumers would overwrite a reset with
their own offsets at their next commit, which RocketMQ's tool only warns about; this runbook refuses
(or waits `wait_for_inactive` seconds after approval).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any


from mq_runbooks.base.files import write_file
from mq_runbooks.flows.rocketmq_reset_params import ResetOffsetParameters
from mq_runbooks.flows.rocketmq_reset_plan import (
    RUNBOOK_ID, ResetPlan, compute_plan, parse_offsets_file, snapshot_csv, update_offsets, wait_inactive)
from mq_runbooks.integrations.rocketmq import RocketMQAdmin
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem, planned

__all__ = ["ResetOffsetParameters", "ResetPlan", "rocketmq_reset_offset", "dry_run", "compute_plan"]


def restore_command(cluster: str, group: str, path: Path | str) -> str:
    return (f"runbook run {RUNBOOK_ID} -p cluster={shlex.quote(cluster)} -p group={shlex.quote(group)} "
            f"-p from_file={shlex.quote(str(path))}")


class ResetOffset(RunbookSteps[ResetOffsetParameters, ResetPlan]):
    id = RUNBOOK_ID
    cannot_undo = ("a queue the group had no offset on before the run keeps the offset the run set (RocketMQ's "
                   "admin protocol has no delete of one queue's offset)",
                   "what the group's consumers read between the run and the restore was consumed (replayed messages "
                   "were processed again, skipped ones were not): the restore moves the offsets, not the messages")

    def target(self, params: ResetOffsetParameters) -> str:
        return f"{params.cluster}/{params.group}"

    def relative_targets(self, params: ResetOffsetParameters) -> str | None:
        return f"by_duration={params.by_duration}" if params.by_duration else None

    def observe(self, env: Env, params: ResetOffsetParameters) -> ResetPlan:
        with RocketMQAdmin.from_cluster(env.clusters.rocketmq_cluster(params.cluster)) as admin:
            # `runbook plan` shows the plan of a group with consumers, with a warning; with wait_for_inactive the
            # run shows it too and waits after approval (before_replan)
            if isinstance(env, Run) and not params.wait_for_inactive:
                wait_inactive(admin, params.group, 0)
            return compute_plan(admin, params, env.plan_time_ms())

    def before_replan(self, run: Run, params: ResetOffsetParameters, plan: ResetPlan) -> None:
        with RocketMQAdmin.from_cluster(run.clusters.rocketmq_cluster(params.cluster)) as admin:
            if admin.consumer_clients(params.group):
                run.note(f"approved; waiting up to {params.wait_for_inactive:g} s for the consumers of {params.group} "
                         "to stop: stop them now", waiting_for="no online consumer", wait_s=params.wait_for_inactive)
            wait_inactive(admin, params.group, params.wait_for_inactive)

    def snapshot(self, run: Run, params: ResetOffsetParameters, plan: ResetPlan) -> Snapshot:
        text = snapshot_csv(plan)
        path = write_file(run.settings.snapshot_dir / f"{RUNBOOK_ID}-{params.group}-{run.id}.csv", text)
        no_offset = [f"{q.topic}:{q.broker}:{q.queue_id}" for q in plan.queues if q.current_offset is None]
        return Snapshot(summary=f"offsets of {params.group} on {params.cluster} saved to {path}", path=str(path),
                        csv=text, restore_command=restore_command(params.cluster, params.group, path),
                        data={"group": params.group, "cluster": params.cluster, "had_no_offset": no_offset})

    def act(self, run: Run, params: ResetOffsetParameters, plan: ResetPlan) -> int:
        cluster = run.clusters.rocketmq_cluster(params.cluster)
        targets = plan.target_offsets()
        return run.step("update-offsets", lambda: update_offsets(cluster, params.group, targets),
                        lambda n: f"updated {n} queue offset(s) of {params.group} ({plan.spec})",
                        lambda n: {"queues": n}, partial=True)

    def verify(self, run: Run, params: ResetOffsetParameters, plan: ResetPlan, result: Any) -> Verification:
        with RocketMQAdmin.from_cluster(run.clusters.rocketmq_cluster(params.cluster)) as admin:
            now = {q.key: admin.consumer_offset(params.group, *q.key) for q in plan.queues}
        wrong = [f"{t}:{b}:{i} is {now[(t, b, i)]}, planned {target}"
                 for (t, b, i), target in plan.target_offsets().items() if now[(t, b, i)] != target]
        if wrong:
            return Verification(ok=False, summary=f"{len(wrong)} queue(s) not as planned: " + "; ".join(wrong[:20]))
        return Verification(summary=f"read back {len(now)} queue offset(s) of {params.group}: all as planned",
                            data={"queues_checked": len(now)})

    def restore(self, run: Run, params: ResetOffsetParameters, plan: ResetPlan | None, snapshot: Snapshot) -> Restore:
        """The snapshot's offsets back (from its CSV alone: the same with or without the run's plan)."""
        offsets = parse_offsets_file(snapshot.csv) if snapshot.csv.count("\n") > 1 else {}
        update_offsets(run.clusters.rocketmq_cluster(params.cluster), params.group, offsets)
        return Restore(summary=f"restored {len(offsets)} offset(s) of {params.group} from the snapshot",
                       restored=True, restore_command=snapshot.restore_command,
                       data={"offsets_restored": len(offsets)})

    def restore_items(self, env: Env, params: ResetOffsetParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        """Each queue offset the snapshot saved, the group's offset now, and the target the run set. In
        a restore run the group must have no online consumer (they would overwrite the restore), as for
        the run itself (waiting `wait_for_inactive` seconds)."""
        saved = parse_offsets_file(snapshot.csv) if snapshot.csv.count("\n") > 1 else {}
        left = planned(original, ("topic", "broker", "queue"), "target")
        with RocketMQAdmin.from_cluster(env.clusters.rocketmq_cluster(params.cluster)) as admin:
            if isinstance(env, Run):
                wait_inactive(admin, params.group, params.wait_for_inactive)
            return [RestoreItem(f"{topic}:{broker}:{queue}", saved=offset,
                                now=admin.consumer_offset(params.group, topic, broker, queue),
                                left=left.get((topic, broker, queue)))
                    for (topic, broker, queue), offset in sorted(saved.items())]

    def outcome(self, params: ResetOffsetParameters, plan: ResetPlan, result: Any) -> str:
        return (f"offsets of {params.group} reset ({plan.spec}): {plan.messages_replayed} message(s) to replay, "
                f"{plan.messages_skipped} skipped")


STEPS = ResetOffset()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


rocketmq_reset_offset = runbook_flow(
    STEPS, ResetOffsetParameters, "Reset a RocketMQ consumer group's offsets to a time, the start or the end of its queues.")
