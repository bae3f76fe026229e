"""Runbook `rocketmq-drain-stuck`: unblock a consumer group stuck on a message it can never consume (a
poison message) without losing it: the message is copied once to `%DLQ%<group>` (or the approver's
`dead_letter_topic`) and the group's offset on that queue moves one past it.

The driver (mq_runbooks.kit.driver) gives it the lock, the gate, the re-plan, the restore on failure
and the outcome; this module is the runbook's own logic (what is stuck, and the copy, live in
mq_runbooks.flows.rocketmq_drain_plan, with no Prefect):

    observe (two samples, `sample_ms` apart) -> plan -> approve -> re-plan (the approved queues read
    again: still at the same offset) -> snapshot (the previous offsets as a topic,broker,queue,offset
    CSV, and the ids of the messages to copy) -> per stuck queue, copy its message (a fenced step,
    once across runs: the ledger) -> move the offsets (a server-side reset, so the online consumers
    follow it) -> verify (each offset past the message, the group progressing, each message in the
    dead-letter topic once); a failure after a copy restores the offsets, and the copies stay.

`runbook restore RUN` puts the previous offsets back (the group goes back to the poison message); the
dead-letter copies stay (`cannot_undo`).
"""
from __future__ import annotations

import shlex
from typing import Any

from mq_runbooks.base.files import write_file
from mq_runbooks.flows.rocketmq_drain_params import DrainStuckParameters
from mq_runbooks.flows.rocketmq_drain_plan import (
    RUNBOOK_ID, DrainPlan, copies_of, copy_once, drain_ledger, observe, refresh,
)
from mq_runbooks.flows.rocketmq_reset_plan import parse_offsets_file, update_offsets
from mq_runbooks.integrations.rocketmq import RocketMQAdmin
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem, planned

__all__ = ["DrainStuckParameters", "STEPS", "dry_run", "rocketmq_drain_stuck"]

Copies = list[dict[str, Any]]


def _where(key: tuple[str, str, int]) -> str:
    return ":".join(map(str, key))


class DrainStuck(RunbookSteps[DrainStuckParameters, DrainPlan]):
    id = RUNBOOK_ID
    verify_attempts = 10  # the online consumers pull from the new offset within a few seconds
    verify_delay_s = 2.0
    cannot_undo = ("the stuck messages copied to the dead-letter topic stay there (a later run finds them in its "
                   "ledger and does not copy them again)",)

    def target(self, params: DrainStuckParameters) -> str:
        return f"{params.cluster}/{params.group}"

    def observe(self, env: Env, params: DrainStuckParameters) -> DrainPlan:
        ledger = drain_ledger(env.settings.snapshot_dir, params.cluster, params.group)
        with RocketMQAdmin.from_cluster(env.clusters.rocketmq_cluster(params.cluster)) as admin:
            plan = observe(admin, params, ledger)
        if isinstance(env, Run):
            env.observed(f"group {params.group}: {len(plan.queues)} of {plan.observed} queue(s) stuck over "
                         f"{params.sample_ms} ms, {len(plan.online)} consumer(s) online",
                         online=[c.client_id for c in plan.online][:50], stuck=len(plan.queues))
        return plan

    def replan(self, run: Run, params: DrainStuckParameters, approved: DrainPlan) -> DrainPlan:
        ledger = drain_ledger(run.settings.snapshot_dir, params.cluster, params.group)
        with RocketMQAdmin.from_cluster(run.clusters.rocketmq_cluster(params.cluster)) as admin:
            return refresh(admin, params, approved, ledger)

    def snapshot(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> Snapshot:
        text = "topic,broker,queue,offset\n" + "".join(
            f"{q.topic},{q.broker},{q.queue_id},{q.consume_offset}\n" for q in plan.queues)
        path = write_file(run.settings.snapshot_dir / f"{RUNBOOK_ID}-{params.group}-{run.id}.csv", text)
        offsets = (f"runbook run rocketmq-reset-offset -p cluster={shlex.quote(params.cluster)} "
                   f"-p group={shlex.quote(params.group)} -p from_file={shlex.quote(str(path))}")
        return Snapshot(
            summary=f"offsets of {len(plan.queues)} stuck queue(s) of {params.group} saved to {path}, with the ids "
                    "of the messages to copy", path=str(path), csv=text,
            restore_command=f"runbook restore {run.id} (or: {offsets}); the dead-letter copies stay",
            data={"group": params.group, "cluster": params.cluster,
                  "messages": [{"queue": _where(q.key), "offset": q.consume_offset, "message_id": q.message_id,
                                "msg_id": q.client_id, "dead_letter_topic": q.dead_letter_topic}
                               for q in plan.queues]})

    def act(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> Copies:
        cluster = run.clusters.rocketmq_cluster(params.cluster)
        ledger = drain_ledger(run.settings.snapshot_dir, params.cluster, params.group)
        copies: Copies = []

        def copy(queue) -> dict[str, Any]:
            with RocketMQAdmin.from_cluster(cluster) as admin:
                return copy_once(admin, params.group, queue, ledger, run.id)

        for q in plan.queues:
            done = run.step(f"dlq-copy:{_where(q.key)}:{q.consume_offset}", lambda q=q: copy(q),
                            lambda c, q=q: f"{_where(q.key)}@{q.consume_offset} ({q.message_id}) "
                                           f"{'was already' if c['already_present'] else 'copied'} in {c['topic']} "
                                           f"as {c['copy']}", lambda c: c)
            copies.append(done or {"message_id": q.message_id, "topic": q.dead_letter_topic, "copy": None})
        targets = plan.target_offsets()
        run.step("move-offsets", lambda: update_offsets(cluster, params.group, targets),
                 f"moved {len(targets)} offset(s) of {params.group} one past the stuck message",
                 lambda _: {"offsets": {_where(k): v for k, v in targets.items()}})
        return copies

    def verify(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: Copies) -> Verification:
        """Each offset is past its message (and beyond it when consumers are online and messages wait: the group
        progresses), and each message is in its dead-letter topic exactly once."""
        wrong, progressed = [], 0
        with RocketMQAdmin.from_cluster(run.clusters.rocketmq_cluster(params.cluster)) as admin:
            online = bool(admin.consumer_clients(params.group))
            for q in plan.queues:
                now = admin.consumer_offset(params.group, *q.key)
                waiting = admin.max_offset(q.topic, q.broker, q.queue_id) > q.target_offset
                if now is None or now < q.target_offset:
                    wrong.append(f"{_where(q.key)} is at {now}, not past the message at {q.consume_offset}")
                elif online and waiting and now == q.target_offset:
                    wrong.append(f"{_where(q.key)} did not progress past {now} (is the next message stuck too?)")
                progressed += bool(now is not None and now > q.target_offset)
                found = copies_of(admin, q.dead_letter_topic, q.message_id)
                if len(found) != 1:
                    wrong.append(f"{q.message_id} is in {q.dead_letter_topic} {len(found)} time(s), expected once")
        if wrong:
            return Verification(ok=False, summary=f"{len(wrong)} check(s) not as planned: " + "; ".join(wrong[:20]))
        return Verification(summary=f"{len(plan.queues)} queue(s) past their stuck message ({progressed} progressing "
                                    f"since), each message in its dead-letter topic exactly once",
                            data={"queues_checked": len(plan.queues), "progressed": progressed})

    def restore(self, run: Run, params: DrainStuckParameters, plan: DrainPlan | None, snapshot: Snapshot) -> Restore:
        """Put the offsets back if they were moved (in a restore run, `plan` None: those of the snapshot); the
        dead-letter copies stay."""
        cluster = run.clusters.rocketmq_cluster(params.cluster)
        offsets = parse_offsets_file(snapshot.csv) if snapshot.csv.count("\n") > 1 else {}
        if plan is not None and "move-offsets" not in run.applied_steps:
            offsets = {}
        update_offsets(cluster, params.group, offsets)
        copies = len(snapshot.data.get("messages") or [])
        said = f"restored {len(offsets)} offset(s) of {params.group}" if offsets else \
            "no offset had been moved: nothing to put back"
        return Restore(summary=f"{said}; the dead-letter copies (up to {copies}) stay", restored=True,
                       restore_command=snapshot.restore_command, data={"offsets_restored": len(offsets)})

    def restore_items(self, env: Env, params: DrainStuckParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        saved = parse_offsets_file(snapshot.csv) if snapshot.csv.count("\n") > 1 else {}
        left = planned(original, ("topic", "broker", "queue"), "new offset")
        with RocketMQAdmin.from_cluster(env.clusters.rocketmq_cluster(params.cluster)) as admin:
            return [RestoreItem(_where(key), saved=offset, now=admin.consumer_offset(params.group, *key),
                                left=left.get(key)) for key, offset in sorted(saved.items())]

    def outcome(self, params: DrainStuckParameters, plan: DrainPlan, result: Copies) -> str:
        return (f"{len(plan.queues)} stuck message(s) of {plan.group} kept in the dead-letter topic and skipped; "
                "the group consumes on")


STEPS = DrainStuck()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight (it takes `sample_ms` to observe)


rocketmq_drain_stuck = runbook_flow(
    STEPS, DrainStuckParameters,
    "Skip the message each stuck queue of a RocketMQ consumer group is stuck on, keeping it in the dead-letter topic.")
