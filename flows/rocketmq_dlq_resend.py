"""Runbook `rocketmq-dlq-resend`: once the bug is fixed, resend a consumer group's dead letters (the
messages of `%DLQ%<group>`) to that group, each exactly once. The driver (mq_runbooks.kit.driver)
gives it the lock, the gate, the re-plan and the outcome; this module is the runbook's own logic:

    observe (every dead letter of the group, with its original topic and ids; `filter` by key or tag,
    `limit`) -> plan (count, oldest, newest, per original topic) -> snapshot (each message's ids, to a
    CSV file) -> resend batch by batch to %RETRY%<group> -> verify (each planned message is in the
    retry topic exactly once)

Why %RETRY%<group>: only that group consumes it (every RocketMQ consumer subscribes to its own retry
topic), and its clients give a message the topic named by its RETRY_TOPIC property, the original one.
Sending to the original topic would deliver it again to every group of that topic.

Exactly once: a resent message stays in the DLQ (RocketMQ has no move), so nothing in the broker
stops a second resend. This runbook keeps a ledger (RUNBOOK_SNAPSHOT_DIR/rocketmq-dlq-ledger/, one
JSON line per message): a batch's `sending` lines (with the retry queue's offset before it) are
written before it is sent and its `sent` lines after. A rerun skips what is `sent`; for a message
`sending` but not `sent` (a worker died between the two) it reads the retry queue from the recorded
offset for the copy, found by the RESENT_FROM_DLQ property every resent copy carries, and resends
only what is not there. Several workers need that directory shared.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from mq_runbooks.base.clusters import RocketMQCluster
from mq_runbooks.base.errors import BrokerError, NotFoundError, ParameterError
from mq_runbooks.base.files import write_file
from mq_runbooks.flows.replay_spec import iso
from mq_runbooks.flows.rocketmq_dlq_params import DlqResendParameters
from mq_runbooks.integrations.rocketmq import RocketMQAdmin, StoredMessage, dlq_topic, retry_topic
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Snapshot, Verification

__all__ = ["DlqResendParameters", "rocketmq_dlq_resend", "dry_run", "ledger_path", "RESENT_OF"]

RUNBOOK_ID = "rocketmq-dlq-resend"
RESENT_OF = "RESENT_FROM_DLQ"  # property of each resent copy: the dead letter's id in %DLQ%<group>
SNAPSHOT_CSV_ROWS = 200
# Set by the broker on store, or ours: not copied onto a resent message.
_BROKER_PROPERTIES = {"MSG_REGION", "CLUSTER", "WAIT", "DELAY", "TRACE_ON", "REAL_TOPIC", "REAL_QID",
                      "MIN_OFFSET", "MAX_OFFSET", "CONSUME_START_TIME", RESENT_OF}


@dataclass(frozen=True)
class DeadLetter:
    dlq_id: str  # offset message id in %DLQ%<group> (the broker's): what the ledger records
    msg_id: str  # the client's id (UNIQ_KEY), as the producer and consumers saw it
    original_topic: str
    keys: str
    tag: str
    stored_ms: int
    reconsume_times: int
    queue_id: int
    queue_offset: int

    @classmethod
    def of(cls, message: StoredMessage) -> "DeadLetter":
        return cls(message.offset_msg_id, message.msg_id, message.properties.get("RETRY_TOPIC", ""), message.keys,
                   message.tag, message.stored_ms, message.reconsume_times, message.queue_id, message.queue_offset)


@dataclass(frozen=True)
class DlqPlan(PlanTable):
    cluster: str
    group: str
    to_resend: tuple[DeadLetter, ...]
    in_dlq: int  # dead letters in scope (filter), resent or not
    already_resent: int
    batch_size: int

    KEY_COLUMNS = ("original topic",)
    INTENT_COLUMNS = ("to resend", "first id", "last id")

    def columns(self) -> tuple[str, ...]:
        return ("original topic", "to resend", "oldest", "newest", "first id", "last id")

    def rows(self) -> list[tuple]:
        by_topic: dict[str, list[DeadLetter]] = {}
        for letter in self.to_resend:
            by_topic.setdefault(letter.original_topic, []).append(letter)
        return [(topic, len(letters), iso(min(m.stored_ms for m in letters)), iso(max(m.stored_ms for m in letters)),
                 letters[0].dlq_id, letters[-1].dlq_id) for topic, letters in sorted(by_topic.items())]

    def summary(self) -> str:
        return (f"{len(self.to_resend)} dead letter(s) of {self.group} to resend to {retry_topic(self.group)} "
                f"({self.in_dlq} in scope in {dlq_topic(self.group)}, {self.already_resent} resent before)")

    def warnings(self) -> tuple[str, ...]:
        return (f"{self.already_resent} dead letter(s) in scope were resent by an earlier run and are left out",) \
            if self.already_resent else ()

    def batches(self) -> list[tuple[DeadLetter, ...]]:
        return [self.to_resend[i:i + self.batch_size] for i in range(0, len(self.to_resend), self.batch_size)]

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "cluster": self.cluster, "group": self.group, "in_dlq": self.in_dlq,
                "already_resent": self.already_resent, "to_resend": len(self.to_resend)}


# --- the ledger ------------------------------------------------------------------------------------

def ledger_path(snapshot_dir: Path, cluster: str, group: str) -> Path:
    return snapshot_dir / "rocketmq-dlq-ledger" / f"{cluster}-{group}.jsonl"


def read_ledger(path: Path) -> tuple[set[str], dict[str, int]]:
    """(ids sent, ids in doubt -> the retry queue offset before their batch was sent)."""
    sent: set[str] = set()
    sending: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    entry = json.loads(line)
                    (sent.add(entry["id"]) if entry["state"] == "sent" else sending.__setitem__(entry["id"], entry["from"]))
    except FileNotFoundError:
        pass
    return sent, {i: offset for i, offset in sending.items() if i not in sent}


def append_ledger(path: Path, state: str, ids: list[str], run_id: str, **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps({"id": i, "state": state, "run": run_id, "at": at, **extra}) + "\n" for i in ids)
        out.flush()


def resent_copies(admin: RocketMQAdmin, group: str, start: int) -> dict[str, int]:
    """Dead-letter id -> how many resent copies of it the retry topic holds from offset `start` on. Only our
    copies count (reconsume times 0): one its consumers failed again comes back with a higher count."""
    counts: dict[str, int] = {}
    for broker, queue_id in admin.queues(retry_topic(group)):
        end = admin.max_offset(retry_topic(group), broker, queue_id)
        for message in admin.read_queue(retry_topic(group), broker, queue_id, max(start, 0), end):
            of = message.properties.get(RESENT_OF)
            if of and message.reconsume_times == 0:
                counts[of] = counts.get(of, 0) + 1
    return counts


# --- observe -------------------------------------------------------------------------------------

def dead_letters(admin: RocketMQAdmin, group: str) -> list[StoredMessage]:
    try:
        queues = admin.queues(dlq_topic(group))
    except NotFoundError:
        return []  # no message of the group has died yet
    letters = []
    for broker, queue_id in queues:
        low, high = admin.min_offset(dlq_topic(group), broker, queue_id), admin.max_offset(dlq_topic(group), broker, queue_id)
        letters += admin.read_queue(dlq_topic(group), broker, queue_id, low, high)
    return sorted(letters, key=lambda m: (m.stored_ms, m.queue_id, m.queue_offset))


def matches(message: StoredMessage, wanted: str | None) -> bool:
    return wanted is None or wanted == message.tag or wanted in message.keys.split(" ")


def observe_dlq(admin: RocketMQAdmin, params: DlqResendParameters, ledger: Path) -> DlqPlan:
    if params.group not in admin.groups():
        raise ParameterError(RUNBOOK_ID, [("group", f"{params.group!r} is not a consumer group of rocketmq cluster "
                                                    f"{admin.name!r}")])
    in_scope = [DeadLetter.of(m) for m in dead_letters(admin, params.group) if matches(m, params.filter)]
    sent, in_doubt = read_ledger(ledger)
    if in_doubt and admin.topic_exists(retry_topic(params.group)):
        found = resent_copies(admin, params.group, min(in_doubt.values()))
        sent |= {i for i in in_doubt if found.get(i)}
    fresh = [m for m in in_scope if m.dlq_id not in sent]
    if params.limit is not None:
        fresh = fresh[:params.limit]
    return DlqPlan(admin.name, params.group, tuple(fresh), len(in_scope), len(in_scope) - len(
        [m for m in in_scope if m.dlq_id not in sent]), params.batch_size)


# --- the change ----------------------------------------------------------------------------------

def resend_batch(cluster: RocketMQCluster, group: str, batch: tuple[DeadLetter, ...], ledger: Path,
                 run_id: str) -> dict[str, Any]:
    """Write the batch's `sending` lines, resend each dead letter to %RETRY%<group>, write `sent` lines."""
    with RocketMQAdmin.from_cluster(cluster) as admin:
        target = retry_topic(group)
        if not admin.topic_exists(target):
            admin.create_topic(target, 1)  # what a consumer's first start creates
        broker, queue_id = admin.queues(target)[0]
        append_ledger(ledger, "sending", [m.dlq_id for m in batch], run_id,
                      **{"from": admin.max_offset(target, broker, queue_id)})
        sent = []
        for letter in batch:
            message = admin.read_message(dlq_topic(group), _broker_of(admin, group), letter.queue_id, letter.queue_offset)
            if message is None:
                raise BrokerError(f"dead letter {letter.dlq_id} is gone from {dlq_topic(group)} (expired?)")
            properties = {k: v for k, v in message.properties.items() if k not in _BROKER_PROPERTIES}
            properties.update({"RETRY_TOPIC": letter.original_topic, RESENT_OF: letter.dlq_id})
            copy = admin.send(target, message.body, properties, broker, queue_id, producer_group=group)
            sent.append(copy.offset_msg_id)
    append_ledger(ledger, "sent", [m.dlq_id for m in batch], run_id)
    return {"resent": len(sent), "first": batch[0].dlq_id, "last": batch[-1].dlq_id, "copies": sent}


def _broker_of(admin: RocketMQAdmin, group: str) -> str:
    return admin.queues(dlq_topic(group))[0][0]


class DlqResend(RunbookSteps[DlqResendParameters, DlqPlan]):
    id = RUNBOOK_ID
    verify_attempts = 1  # sends are synchronous: what verify reads is final
    # `runbook restore` refuses a run of it, naming these (restore_items is not written: nothing is put back).
    cannot_undo = ("the copies resent to %RETRY%<group>: the group consumes them (RocketMQ deletes no message)",
                   "the ledger's lines of what was resent: a rerun leaves those messages out (the dead letters "
                   "themselves never left %DLQ%<group>)")

    def target(self, params: DlqResendParameters) -> str:
        return f"{params.cluster}/{dlq_topic(params.group)}" + (f" (filter {params.filter})" if params.filter else "")

    def observe(self, env: Env, params: DlqResendParameters) -> DlqPlan:
        ledger = ledger_path(env.settings.snapshot_dir, params.cluster, params.group)
        with RocketMQAdmin.from_cluster(env.clusters.rocketmq_cluster(params.cluster)) as admin:
            return observe_dlq(admin, params, ledger)

    def snapshot(self, run: Run, params: DlqResendParameters, plan: DlqPlan) -> Snapshot:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["dlq_id", "msg_id", "original_topic", "keys", "tag", "stored", "reconsume_times", "batch"])
        for number, batch in enumerate(plan.batches(), start=1):
            writer.writerows([m.dlq_id, m.msg_id, m.original_topic, m.keys, m.tag, iso(m.stored_ms), m.reconsume_times,
                              number] for m in batch)
        path = write_file(run.settings.snapshot_dir / f"{RUNBOOK_ID}-{params.group}-{run.id}.csv", out.getvalue())
        lines = out.getvalue().splitlines()
        again = " ".join(f"-p {shlex.quote(f'{k}={v}')}" for k, v in params.model_dump(exclude_none=True).items())
        ledger = ledger_path(run.settings.snapshot_dir, params.cluster, params.group)
        with RocketMQAdmin.from_cluster(run.clusters.rocketmq_cluster(params.cluster)) as admin:
            start = sum(admin.max_offset(retry_topic(params.group), b, q) for b, q in admin.queues(
                retry_topic(params.group))) if admin.topic_exists(retry_topic(params.group)) else 0
        return Snapshot(
            summary=f"{len(lines) - 1} dead letter(s) to resend, with their ids, in {path}", path=str(path),
            csv="\n".join(lines[:SNAPSHOT_CSV_ROWS + 1]) + "\n",
            restore_command=f"nothing to undo (a resent message is consumed by the group); the ledger of what was "
                            f"resent is {ledger}; to resend the rest: runbook run {RUNBOOK_ID} {again}",
            data={"messages": len(lines) - 1, "ids": [m.dlq_id for m in plan.to_resend][:2000],
                  "retry_offset_before": start, "ledger": str(ledger)})

    def act(self, run: Run, params: DlqResendParameters, plan: DlqPlan) -> int:
        cluster = run.clusters.rocketmq_cluster(params.cluster)
        ledger = ledger_path(run.settings.snapshot_dir, params.cluster, params.group)
        resent = 0
        batches = plan.batches()
        for number, batch in enumerate(batches, start=1):  # keys resend-1, resend-2, ...
            done = run.step(f"resend-{number}", lambda b=batch: resend_batch(cluster, params.group, b, ledger, run.id),
                            lambda r: f"resent {r['resent']} dead letter(s) to {retry_topic(params.group)} "
                                      f"({r['first']}..{r['last']})", lambda r: r, partial=True)
            resent += done["resent"] if done else 0
        return resent

    def verify(self, run: Run, params: DlqResendParameters, plan: DlqPlan, result: Any) -> Verification:
        """Each planned dead letter has exactly one resent copy in the retry topic."""
        with RocketMQAdmin.from_cluster(run.clusters.rocketmq_cluster(params.cluster)) as admin:
            copies = resent_copies(admin, params.group, 0)
        planned = [m.dlq_id for m in plan.to_resend]
        missing = [i for i in planned if not copies.get(i)]
        twice = [i for i in planned if copies.get(i, 0) > 1]
        data = {"planned": len(planned), "missing": missing[:100], "more_than_once": twice[:100]}
        if missing or twice:
            return Verification(ok=False, summary=f"of {len(planned)} planned: {len(missing)} not resent, "
                                                  f"{len(twice)} resent more than once", data=data)
        return Verification(summary=f"each of the {len(planned)} dead letter(s) is in {retry_topic(params.group)} "
                                    f"exactly once", data=data)

    def outcome(self, params: DlqResendParameters, plan: DlqPlan, result: Any) -> str:
        return f"done: {plan.summary()}; each resent exactly once (verified in {retry_topic(params.group)})"


STEPS = DlqResend()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


rocketmq_dlq_resend = runbook_flow(
    STEPS, DlqResendParameters, "Resend a RocketMQ consumer group's dead letters to the group, each exactly once.")
