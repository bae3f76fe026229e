"""Runbook `artemis-dlq-redeliver`: send the messages of an Artemis dead-letter queue back to the queues
they died in, each exactly once, after approval; park (or leave) the poison ones. The driver
(mq_runbooks.kit.driver) gives it the lock, the gate, the re-plan and the outcome; this module is the
runbook's own logic:

    observe (every dead letter in scope, by original queue) -> plan (mq_runbooks.flows.artemis_dlq_plan)
    snapshot (each message: its ids and where it goes, to a CSV file) -> park poison (moveMessage by id)
    -> send back batch by batch (Artemis' moveMessages over a range of original ids, one fenced step each)
    -> verify (none of the planned messages is left in the DLQ; each queue received what was sent)

Exactly once: Artemis moves a message (removes it from the DLQ in the same transaction that adds it
to its queue), a batch's filter names only its planned messages, and a step is never applied twice in
a run; a rerun plans only what is still in the DLQ. A failure part-way leaves every message in the DLQ
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
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any


from mq_runbooks.base.clusters import ArtemisCluster
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.artemis_dlq_plan import (
    RUNBOOK_ID, Batch, DlqPlan, DlqRedeliverParameters, plan_redelivery)
from mq_runbooks.integrations.artemis import ArtemisManagement
from mq_runbooks.integrations.artemis_messages import InvalidFilter, list_messages, move, move_matching
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Snapshot, Verification

__all__ = ["DlqRedeliverParameters", "artemis_dlq_redeliver", "dry_run", "ledger_path"]

SNAPSHOT_CSV_ROWS = 200  # rows of the snapshot kept in the journal; the file has all


def ledger_path(snapshot_dir: Path, cluster: str, dlq: str) -> Path:
    return snapshot_dir / "artemis-dlq-ledger" / f"{cluster}-{dlq}.jsonl"


def read_ledger(path: Path) -> dict[str, int]:
    """identity -> times sent back, from the ledger file (none yet: {})."""
    counts: Counter[str] = Counter()
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    counts[json.loads(line)["identity"]] += 1
    except FileNotFoundError:
        pass
    return dict(counts)


def append_ledger(path: Path, run_id: str, queue: str, identities: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps({"identity": i, "queue": queue, "run": run_id, "at": at}) + "\n" for i in identities)


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
        try:
            messages = list_messages(artemis, params.dlq, params.scope_filter())
        except InvalidFilter as exc:
            raise ParameterError(RUNBOOK_ID, [("filter", str(exc))]) from None
    sent_before = read_ledger(ledger_path(snapshot_dir, cluster.name, params.dlq)) if params.poison_after else {}
    return plan_redelivery(params, cluster.name, messages, queues, sent_before)


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
    with ArtemisManagement.from_cluster(cluster) as artemis:
        moved = move_matching(artemis, plan.dlq, batch.filter(params), batch.queue, limit=len(batch.messages))
    append_ledger(ledger, run_id, batch.queue, [m.identity for m in batch.messages if m.identity is not None])
    return {"queue": batch.queue, "planned": len(batch.messages), "moved": moved,
            "original_ids": [batch.first, batch.last]}


# --- the runbook's steps ---------------------------------------------------------------------------

class DlqRedeliver(RunbookSteps[DlqRedeliverParameters, DlqPlan]):
    id = RUNBOOK_ID
    verify_attempts = 1  # moves are synchronous: what verify reads is final

    def target(self, params: DlqRedeliverParameters) -> str:
        return f"{params.cluster}/{params.dlq}" + (f" (died in {params.queue})" if params.queue else "")

    def observe(self, env: Env, params: DlqRedeliverParameters) -> DlqPlan:
        plan = observe_dlq(env.clusters.artemis_cluster(params.cluster), params, env.settings.snapshot_dir)
        if isinstance(env, Run):
            env.observed(f"{sum(g.in_dlq for g in plan.groups)} dead letter(s) in scope of {params.dlq} "
                         f"({plan.scope}), from {len(plan.groups)} queue(s)",
                         groups={g.original_queue: g.in_dlq for g in plan.groups})
        return plan

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
        """None of the planned messages is left in the DLQ, and the parked ones are in the parking queue."""
        cluster = run.clusters.artemis_cluster(params.cluster)
        planned = {m.dlq_message_id for b in plan.batches for m in b.messages}
        parking = {p.dlq_message_id for p in plan.to_park}
        with ArtemisManagement.from_cluster(cluster) as artemis:
            left = [m for m in list_messages(artemis, plan.dlq, params.scope_filter())
                    if m.message_id in planned or m.message_id in parking]
            # a moved message is a copy whose _AMQ_ORIG_MESSAGE_ID is its id in the DLQ
            parked_now = sum(1 for m in list_messages(artemis, plan.parking_queue) if
                             m.properties.get("_AMQ_ORIG_MESSAGE_ID") in parking) if parking else 0
        sent = sum((result or {}).values())
        data = {"sent_back": result or {}, "planned": len(planned), "left_in_dlq": [m.message_id for m in left][:100],
                "parked": parked_now, "to_park": len(plan.to_park)}
        if left:
            return Verification(ok=False, summary=f"{len(left)} planned message(s) are still in {plan.dlq} "
                                f"(sent back {sent} of {len(planned)})", data=data)
        if parked_now < len(plan.to_park):
            return Verification(ok=False, summary=f"{parked_now} of {len(plan.to_park)} poison message(s) are in "
                                f"{plan.parking_queue}", data=data)
        per_queue = ", ".join(f"{q}: {n}" for q, n in sorted((result or {}).items()))
        return Verification(summary=f"none of the {len(planned)} planned message(s) is left in {plan.dlq}; sent back "
                                    f"{sent} ({per_queue})" + (f"; {parked_now} parked in {plan.parking_queue}"
                                                               if plan.to_park else ""), data=data)

    def outcome(self, params: DlqRedeliverParameters, plan: DlqPlan, result: dict[str, int]) -> str:
        return f"done: {plan.summary()}; each sent exactly once (verified: none left in {plan.dlq})"


STEPS = DlqRedeliver()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


artemis_dlq_redeliver = runbook_flow(
    STEPS, DlqRedeliverParameters,
    "Send an Artemis dead-letter queue's messages back to their queues, each exactly once.")
