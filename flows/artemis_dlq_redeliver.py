"""Runbook `artemis-dlq-redeliver`: send the messages of an Artemis dead-letter queue back to the queues
they died in, each exactly once, after approval; park (or leave) the poison ones. The driver
(mq_runbooks.kit.driver) gives it the lock, the gate, the re-plan and the outcome; this module is the
runbook's own logic:

    observe (every dead letter in scope, by original queue) -> plan (mq_runbooks.flows.artemis_dlq_plan)
    snapshot (each message: its ids and where it goes, to a CSV file) -> park poison (moveMessage by id)
    -> send back batch by batch (Artemis' moveMessages over a range of original ids, one fenced step each;
       Artemis commits each message on its own, so a batch of 100,000 holds no big transaction: the batch
       size only sets how often the journal records progress, at 0.2-1.3 s of Prefect and journal per step
       on a loaded 2-CPU machine)
    -> verify (counted on both sides: each batch moved exactly its planned messages, the DLQ acknowledged
       and each queue received at least that many since the plan; the poison is in the parking queue)

Exactly once: Artemis moves a message (removes it from the DLQ in the same transaction that adds it
to its queue), a batch's filter names only its planned messages, and a step is never applied twice in
a run; a rerun plans only what is still in the DLQ. (A batch's filter is a range of original ids: a
message that died in that range after the plan could take the place of a planned one that left the
DLQ meanwhile; it is then sent once, and the planned one that left is not sent.) After approval the
DLQ is listed again only if its counts moved since the plan (listing 100,000 messages takes minutes),
and verify counts instead of listing. A failure part-way leaves every message in the DLQ
or in its queue, and the journal names the batches that were sent. Nothing is put back on failure:
what was sent back may be consumed already; running again sends the rest.

Artemis does not count how often a message was sent back, so this runbook keeps a ledger (one JSON
line per message sent, by identity) in RUNBOOK_SNAPSHOT_DIR/artemis-dlq-ledger/; `poison_after` reads
it. Several workers need that directory shared. A batch's lines are written right after its move, so a
worker that dies between the two leaves that batch uncounted (never counted twice).
"""
from __future__ import annotations

import csv
import io
import shlex
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any


from mq_runbooks.base.clusters import ArtemisCluster
from mq_runbooks.base.errors import BrokerError, ParameterError
from mq_runbooks.flows import artemis_ledger
from mq_runbooks.flows.artemis_dlq_plan import (
    RUNBOOK_ID, Batch, DlqPlan, DlqRedeliverParameters, plan_redelivery)
from mq_runbooks.flows.artemis_ledger import append_ledger, read_ledger
from mq_runbooks.integrations.artemis import ArtemisManagement, QueueState
from mq_runbooks.integrations.artemis_messages import ORIGINAL_MESSAGE_ID, InvalidFilter, list_messages, move, move_matching
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Snapshot, Verification

__all__ = ["DlqRedeliverParameters", "artemis_dlq_redeliver", "dry_run", "ledger_path"]

SNAPSHOT_CSV_ROWS = 200  # rows of the snapshot kept in the journal; the file has all


def ledger_path(snapshot_dir: Path, cluster: str, dlq: str) -> Path:
    return artemis_ledger.ledger_path(snapshot_dir, "artemis-dlq-ledger", cluster, dlq)


def observe_dlq(cluster: ArtemisCluster, params: DlqRedeliverParameters, snapshot_dir: Path) -> DlqPlan:
    """Read the DLQ and plan; a DLQ, queue or filter that Artemis does not know is a ParameterError."""
    with ArtemisManagement.from_cluster(cluster) as artemis:
        queues = set(artemis.queue_names())
        problems = []
        if params.dlq not in queues:
            problems.append(("dlq", f"{params.dlq!r} is not a queue of artemis cluster {cluster.name!r}"))
        if params.queue is not None and params.queue not in queues:
            problems.append(("queue", f"{params.queue!r} is not a queue of artemis cluster {cluster.name!r}"))
        if problems:
            raise ParameterError(RUNBOOK_ID, problems)
        dlq = artemis.queue(params.dlq)  # before listing: what a re-plan and verify compare with
        try:
            messages = list_messages(artemis, params.dlq, params.scope_filter())
        except InvalidFilter as exc:
            raise ParameterError(RUNBOOK_ID, [("filter", str(exc))]) from None
        sent_before = read_ledger(ledger_path(snapshot_dir, cluster.name, params.dlq)) if params.poison_after else {}
        plan = plan_redelivery(params, cluster.name, messages, queues, sent_before)
        added = tuple((g.original_queue, artemis.queue(g.original_queue).messages_added) for g in plan.groups if g.send)
    return replace(plan, dlq_seen=dlq_counts(dlq), queues_added=added)


def dlq_counts(dlq: QueueState) -> tuple[int, int, int]:
    return dlq.messages_added, dlq.message_count, dlq.messages_acknowledged


# --- the changes (each runs inside a fenced step) -------------------------------------------------

def park(cluster: ArtemisCluster, plan: DlqPlan) -> dict[str, Any]:
    """Move the poison messages by id into the parking queue (created if missing)."""
    ids = [m.dlq_message_id for m in plan.to_park]
    with ArtemisManagement.from_cluster(cluster) as artemis:
        created = artemis.create_queue(plan.parking_queue)
        moved = move(artemis, plan.dlq, ids, plan.parking_queue)
    return {"parking_queue": plan.parking_queue, "created": created, "moved": sum(moved.values()),
            "not_found": [i for i, done in moved.items() if not done],
            "identities": [m.identity for m in plan.to_park]}


def send_back(cluster: ArtemisCluster, params: DlqRedeliverParameters, plan: DlqPlan, batch: Batch,
              ledger: Path, run_id: str) -> dict[str, Any]:
    """One batch: Artemis' moveMessages of exactly the batch's messages to their original queue."""
    started = time.monotonic()
    with ArtemisManagement.from_cluster(patient(cluster, len(batch.messages))) as artemis:
        moved = move_matching(artemis, plan.dlq, batch.filter(params), batch.queue, limit=len(batch.messages))
    moved_at = time.monotonic()
    append_ledger(ledger, run_id, batch.queue, [m.identity for m in batch.messages if m.identity is not None])
    return {"queue": batch.queue, "planned": len(batch.messages), "moved": moved,
            "original_ids": [batch.first, batch.last], "move_s": round(moved_at - started, 3),
            "ledger_s": round(time.monotonic() - moved_at, 3)}


def patient(cluster: ArtemisCluster, messages: int) -> ArtemisCluster:
    """The cluster with a Jolokia timeout for one call over `messages` (at 500 a second, the slowest
    seen here under load): a timed-out call leaves the broker moving and the step failed."""
    return cluster.model_copy(update={"request_timeout_s": max(cluster.request_timeout_s, messages / 500)})


# --- the runbook's steps ---------------------------------------------------------------------------

class DlqRedeliver(RunbookSteps[DlqRedeliverParameters, DlqPlan]):
    id = RUNBOOK_ID
    verify_attempts = 1  # moves are synchronous: what verify reads is final
    # `runbook restore` refuses a run of it, naming these (restore_items is not written: nothing is put back).
    cannot_undo = ("the messages sent back to their queues: they may be consumed already, and moving what is left "
                   "back to the dead-letter queue would take it from consumers that now process it",
                   "the poison parked in the parking queue stays there: moving it back to the dead-letter queue would "
                   "only have the next run park it again (the ledger counts its redeliveries); move it by hand with "
                   "Artemis' moveMessages to retry it",
                   "the ledger's lines of what was sent back (they count toward poison_after)")

    def target(self, params: DlqRedeliverParameters) -> str:
        return f"{params.cluster}/{params.dlq}" + (f" (died in {params.queue})" if params.queue else "")

    def observe(self, env: Env, params: DlqRedeliverParameters) -> DlqPlan:
        plan = observe_dlq(env.clusters.artemis_cluster(params.cluster), params, env.settings.snapshot_dir)
        if isinstance(env, Run):
            env.observed(f"{sum(g.in_dlq for g in plan.groups)} dead letter(s) in scope of {params.dlq} "
                         f"({plan.scope}), from {len(plan.groups)} queue(s)",
                         groups={g.original_queue: g.in_dlq for g in plan.groups})
        return plan

    def replan(self, run: Run, params: DlqRedeliverParameters, approved: DlqPlan) -> DlqPlan:
        """The approved plan when nothing entered or left the DLQ since it was listed (its counts say so
        exactly: no message added, none acknowledged); otherwise the DLQ is listed again. A DLQ of
        100,000 messages takes minutes to list, so an unchanged one is not listed twice."""
        with run.artemis(params.cluster) as artemis:
            now = dlq_counts(artemis.queue(params.dlq))
        if now == approved.dlq_seen:
            return approved
        return self.observe(run, params)

    def snapshot(self, run: Run, params: DlqRedeliverParameters, plan: DlqPlan) -> Snapshot:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["dlq_message_id", "original_message_id", "identity", "original_queue", "goes_to", "batch"])
        for batch in plan.batches:
            for m in batch.messages:
                writer.writerow([m.dlq_message_id, m.original_message_id, m.identity or "", m.original_queue,
                                 m.original_queue, batch.key])
        for m in plan.to_park:
            writer.writerow([m.dlq_message_id, m.original_message_id, m.identity or "", m.original_queue,
                             plan.parking_queue, "park-poison"])
        path = run.settings.snapshot_dir / f"{RUNBOOK_ID}-{params.cluster}-{params.dlq}-{run.id}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(out.getvalue(), encoding="utf-8")
        lines = out.getvalue().splitlines()
        again = " ".join(f"-p {shlex.quote(f'{k}={v}')}" for k, v in params.model_dump(exclude_none=True).items())
        return Snapshot(
            summary=f"{len(lines) - 1} message(s) and where each goes, in {path}", path=str(path),
            csv="\n".join(lines[:SNAPSHOT_CSV_ROWS + 1]) + "\n",
            # Nothing is put back: a message sent back may be consumed already. The way on is to send the rest.
            restore_command=f"nothing to undo (what was sent back is in its queue); to send the rest: "
                            f"runbook run {RUNBOOK_ID} {again}",
            data={"messages": len(lines) - 1, "batches": len(plan.batches), "parked": len(plan.to_park)})

    def act(self, run: Run, params: DlqRedeliverParameters, plan: DlqPlan) -> dict[str, int]:
        cluster = run.clusters.artemis_cluster(params.cluster)
        sent: dict[str, int] = {}
        if plan.to_park:
            parked = run.step("park-poison", lambda: park(cluster, plan),
                              lambda r: f"parked {r['moved']} poison message(s) of {plan.dlq} in {r['parking_queue']}"
                              + (" (created)" if r["created"] else ""), lambda r: r)
            if parked is not None and parked["not_found"]:
                run.note(f"{len(parked['not_found'])} poison message(s) had left {plan.dlq} before parking",
                         not_found=parked["not_found"])
        ledger = ledger_path(run.settings.snapshot_dir, params.cluster, params.dlq)
        for batch in plan.batches:
            done = run.step(batch.key, lambda b=batch: send_back(cluster, params, plan, b, ledger, run.id),
                            lambda r: f"sent back {r['moved']} of {r['planned']} message(s) to {r['queue']} "
                                      f"(original ids {r['original_ids'][0]}..{r['original_ids'][1]})",
                            lambda r: r, partial=True)
            if done is not None:
                sent[batch.queue] = sent.get(batch.queue, 0) + done["moved"]
                if done["moved"] != done["planned"]:
                    run.note(f"batch {batch.key}: {done['moved']} moved of {done['planned']} planned (the others "
                             f"had left {plan.dlq} meanwhile)", step=batch.key)
        return sent

    def verify(self, run: Run, params: DlqRedeliverParameters, plan: DlqPlan, result: dict[str, int]) -> Verification:
        """Counted on both sides, without listing the DLQ again: each batch moved exactly its planned
        messages (Artemis' own count), the DLQ acknowledged at least that many since the plan, each
        original queue received at least what was sent to it, and the poison is in the parking queue."""
        sent: Counter[str] = Counter()
        short = []
        for batch in plan.batches:  # from the journal: also the batches an earlier execution of the run sent
            done = run.applied_steps.get(batch.key)
            moved = int(done.data.get("moved", 0)) if done is not None else 0
            sent[batch.queue] += moved
            if moved != len(batch.messages):
                short.append(f"{batch.key} moved {moved} of {len(batch.messages)}")
        parking = {p.dlq_message_id for p in plan.to_park}
        with run.artemis(params.cluster) as artemis:
            dlq = artemis.queue(plan.dlq)
            added = {queue: artemis.queue(queue).messages_added - before for queue, before in plan.queues_added}
            # a moved message is a copy whose _AMQ_ORIG_MESSAGE_ID is its id in the DLQ
            parked_now = sum(1 for m in list_messages(artemis, plan.parking_queue)
                             if m.properties.get(ORIGINAL_MESSAGE_ID) in parking) if parking else 0
        moved = sum(sent.values())
        left_dlq = dlq.messages_acknowledged - plan.dlq_seen[2]
        data = {"sent_back": dict(sent), "planned": plan.to_send, "moved": moved, "parked": parked_now,
                "to_park": len(plan.to_park), "dlq_acknowledged_since_plan": left_dlq,
                "added_since_plan": added, "dlq_message_count": dlq.message_count}
        problems = []
        if short:
            problems.append(f"{len(short)} batch(es) did not move what was planned ({'; '.join(short[:5])})")
        if left_dlq < moved + parked_now:
            problems.append(f"{plan.dlq} acknowledged {left_dlq} message(s) since the plan, fewer than the "
                            f"{moved + parked_now} moved")
        problems += [f"{queue} received {added.get(queue, 0)} message(s) since the plan, fewer than the {n} sent"
                     for queue, n in sorted(sent.items()) if added.get(queue, 0) < n]
        if parked_now < len(plan.to_park):
            problems.append(f"{parked_now} of {len(plan.to_park)} poison message(s) are in {plan.parking_queue}")
        if problems:
            return Verification(ok=False, summary="; ".join(problems), data=data)
        per_queue = ", ".join(f"{q}: {n}" for q, n in sorted(sent.items()))
        return Verification(summary=f"each batch moved exactly its planned messages: {moved} of {plan.to_send} "
                                    f"sent back ({per_queue}); {plan.dlq} acknowledged {left_dlq} since the plan"
                                    + (f"; {parked_now} parked in {plan.parking_queue}" if plan.to_park else ""),
                            data=data)

    def outcome(self, params: DlqRedeliverParameters, plan: DlqPlan, result: dict[str, int]) -> str:
        return f"done: {plan.summary()}; each sent exactly once (verified: none left in {plan.dlq})"


STEPS = DlqRedeliver()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


artemis_dlq_redeliver = runbook_flow(
    STEPS, DlqRedeliverParameters,
    "Send an Artemis dead-letter queue's messages back to their queues, each exactly once.")
