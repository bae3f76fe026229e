"""Runbook `redis-streams-drain-stuck`: a consumer group of a Redis stream whose entries are stuck in
the pending entries list of consumers that died (or keep failing on a poison entry). The driver gives
it the gate, the lock, the re-plan, the restore on failure and the outcome; this module is its logic
(the plan and its words: redis_streams_drain_plan):

    observe: XINFO CONSUMERS, XPENDING ... IDLE idle_ms, the poison entries' fields (redacted)
    snapshot: the group's whole pending entries list (JSON under RUNBOOK_SNAPSHOT_DIR, CSV in the
              journal) and a redis-cli script that claims the moved entries back to their owners
    act:      dead-letter:<id> (each poison entry copied once to the dead-letter stream, confirmed on the
              replicas with WAIT) -> ack-dead-lettered (only after that) -> claim (the other stuck
              entries to claim_to, if still idle) -> delete-consumers (the dead ones, once empty)
    verify:   the dead consumers hold nothing (or are gone), every poison entry is in the
              dead-letter stream exactly once (read back) and no longer pending, every claimed entry
              is owned by claim_to or already acknowledged

A rerun never duplicates a dead-letter copy: the copy is checked and made atomically against a
marker hash (integrations/redis_streams.py `dead_letter`). What a restore can put back: the
ownership of the claimed entries. Acknowledged entries cannot be made pending again, and
dead-letter copies are never deleted.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


from mq_runbooks.base.errors import PreconditionError
from mq_runbooks.base.files import write_file
from mq_runbooks.flows.redis_streams_common import snapshot_path, write_json
from mq_runbooks.flows.redis_streams_drain_plan import (
    ACK_GONE, CLAIM, DEAD_LETTER, RUNBOOK_ID, DrainPlan, DrainStuckParameters, plan_drain,
)
from mq_runbooks.integrations.redis_streams import PROVENANCE_FIELDS, DeadLetterCopy, RedisStreams
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem

__all__ = ["DrainStuckParameters", "dry_run", "redis_streams_drain_stuck"]

SNAPSHOT_CSV_ROWS = 10_000  # pending entries kept in the journal; the JSON file keeps all
CLAIM_BACK_BATCH = 500  # ids per XCLAIM line of the restore script


class DrainStuck(RunbookSteps[DrainStuckParameters, DrainPlan]):
    id = RUNBOOK_ID
    cannot_undo = ("entries acknowledged since the snapshot (the poison entries dead-lettered, and what consumers "
                   "processed) stay acknowledged", "dead-letter copies stay in the dead-letter stream",
                   "deleted consumers come back only as owners of entries claimed back to them")

    def target(self, params: DrainStuckParameters) -> str:
        return f"{params.cluster}/{params.stream}/{params.group}"

    def relative_targets(self, params: DrainStuckParameters) -> str | None:
        return f"idle_ms={params.idle_ms} (entries and consumers idle that long)"

    def observe(self, env: Env, params: DrainStuckParameters) -> DrainPlan:
        with env.redis(params.cluster) as streams:
            return plan_drain(streams, params, params.cluster, env.since_planned_ms())  # idle_ms at the first plan

    def snapshot(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> Snapshot:
        with run.redis(params.cluster) as streams:
            before = streams.pending(plan.stream, plan.group)
        json_path = snapshot_path(run.settings.snapshot_dir, RUNBOOK_ID, plan.stream, plan.group, run.id, "json")
        script = json_path.with_suffix(".restore.redis")
        write_json(json_path, {
            "runbook": RUNBOOK_ID, "run": run.id, "cluster": plan.cluster, "stream": plan.stream, "group": plan.group,
            "dead_letter_stream": plan.dead_letter_stream,
            "pending": [{"id": p.id, "consumer": p.consumer, "idle_ms": p.idle_ms, "deliveries": p.delivery_count}
                        for p in before],
            "moves": [{"id": m.id, "from": m.consumer, "action": m.action} for m in plan.moves],
            "deletions": list(plan.deletions)})
        write_file(script, _claim_back_script(plan))
        url = run.clusters.redis_cluster(params.cluster).display_url
        rows = "".join(f"{p.id},{p.consumer},{p.idle_ms},{p.delivery_count}\n" for p in before[:SNAPSHOT_CSV_ROWS])
        cut = f" (the journal keeps the first {SNAPSHOT_CSV_ROWS})" if len(before) > SNAPSHOT_CSV_ROWS else ""
        return Snapshot(
            summary=(f"pending entries list of {plan.group} on {plan.stream} ({len(before)} entries) saved to "
                     f"{json_path}{cut}. What can be put back: the ownership of the {len(plan.of(CLAIM))} entries "
                     f"this run claims (claimed back to their consumers, re-creating deleted ones); acknowledged "
                     f"entries stay acknowledged and dead-letter copies are never deleted"),
            path=str(json_path), csv="id,consumer,idle_ms,deliveries\n" + rows,
            restore_command=f"redis-cli -u {url} < {script}",
            data={"pending_before": len(before), "script": str(script)})

    def act(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> dict[str, Any]:
        poison, gone, claims = plan.of(DEAD_LETTER), plan.of(ACK_GONE), plan.of(CLAIM)
        result: dict[str, Any] = {}
        with run.redis(params.cluster) as streams:
            copies = []
            for m in poison:  # one fenced step per entry: a failure names exactly which copies exist
                with _may_have_changed(run, f"the copy of {m.id} to {plan.dead_letter_stream} may exist unconfirmed"):
                    copies.append(run.step(
                        f"dead-letter:{m.id}", lambda m=m: streams.dead_letter(
                            plan.stream, plan.group, m.id, consumer=m.consumer, delivery_count=m.deliveries,
                            dead_letter_stream=plan.dead_letter_stream),
                        lambda c: (f"copied poison entry {c.entry_id} to {c.dead_letter_stream} as {c.copy_id}"
                                   if c.created else f"poison entry {c.entry_id} was copied to {c.dead_letter_stream} "
                                   f"before (as {c.copy_id}): not copied again")
                        + f", confirmed on {_replicas(c)}",
                        lambda c: {"entry": c.entry_id, "copy": c.copy_id, "created": c.created}))
            result["copies"] = copies
            if poison or gone:
                ids = [m.id for m in poison + gone]
                run.step("ack-dead-lettered", lambda: streams.ack(plan.stream, plan.group, ids),
                         lambda n: f"acknowledged {n} of {len(ids)} poison entr(ies) (copies confirmed first)",
                         lambda n: {"ids": ids, "acknowledged": n})
            if claims:
                with _may_have_changed(run, f"claiming to {plan.claim_to} failed part-way: some of {len(claims)} "
                                            f"entries may have moved"):
                    claimed = run.step(
                        "claim", lambda: streams.claim(plan.stream, plan.group, [m.id for m in claims],
                                                       plan.claim_to, min_idle_ms=params.idle_ms),
                        lambda r: (f"claimed {len(r.claimed)} of {len(claims)} stuck entr(ies) to {plan.claim_to}"
                                   + (f"; {len(r.not_claimed)} no longer pending or idle" if r.not_claimed else "")),
                        lambda r: {"claimed": len(r.claimed), "not_claimed": r.not_claimed[:100]})
                result["claimed"] = claimed
            if plan.deletions:
                result["deleted"] = run.step(
                    "delete-consumers", lambda: _delete_consumers(streams, plan),
                    lambda done: (f"deleted dead consumer(s) {', '.join(done['deleted']) or 'none'}"
                                  + (f"; kept {', '.join(done['kept'])} (still holding entries)" if done["kept"] else "")),
                    lambda done: done)
        return result

    def verify(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: dict[str, Any]) -> Verification:
        problems: list[str] = []
        with run.redis(params.cluster) as streams:
            consumers = {c.name: c for c in streams.consumers(plan.stream, plan.group)}
            for name in plan.emptied:
                held = consumers.get(name)
                if held is not None and held.pending:
                    problems.append(f"dead consumer {name} still holds {held.pending} entr(ies)")
                elif held is not None and name in plan.deletions:
                    problems.append(f"dead consumer {name} was not deleted")
            owners = {p.id: p.consumer for p in streams.pending(plan.stream, plan.group)}
            wrong = [f"{m.id} is pending with {owners[m.id]}" for m in plan.of(CLAIM)
                     if owners.get(m.id) not in (None, plan.claim_to)]
            if wrong:
                problems.append(f"{len(wrong)} claimed entr(ies) not owned by {plan.claim_to}: {', '.join(wrong[:10])}")
            poison = plan.of(DEAD_LETTER) + plan.of(ACK_GONE)
            still = [m.id for m in poison if m.id in owners]
            if still:
                problems.append(f"poison entr(ies) still pending: {', '.join(still[:10])}")
            copies = _copies_in_dead_letter(streams, plan) if plan.of(DEAD_LETTER) else {}
            for m in plan.of(DEAD_LETTER):
                if len(copies.get(m.id, [])) != 1:
                    problems.append(f"{m.id} is in {plan.dead_letter_stream} {len(copies.get(m.id, []))} time(s) "
                                    f"({', '.join(copies.get(m.id, [])) or 'no copy'}), expected once")
        if problems:
            return Verification(ok=False, summary="; ".join(problems[:20]))
        return Verification(
            summary=(f"read back: {len(plan.of(CLAIM))} claimed entr(ies) owned by {plan.claim_to} or acknowledged, "
                     f"{len(plan.of(DEAD_LETTER))} poison entr(ies) in {plan.dead_letter_stream} once each and no "
                     f"longer pending, {len(plan.emptied)} dead consumer(s) holding nothing"),
            data={"claims_checked": len(plan.of(CLAIM)), "copies_checked": len(plan.of(DEAD_LETTER)),
                  "pending_after": len(owners), "dead_consumers": list(plan.emptied)})

    def restore(self, run: Run, params: DrainStuckParameters, plan: DrainPlan | None, snapshot: Snapshot) -> Restore:
        """Claim the entries this run moved that are still pending back to the consumers that held them
        (in a restore run, `plan` None: every entry of the snapshot's pending list still pending)."""
        held = [(m.id, m.consumer) for m in plan.moves] if plan is not None else _saved_owners(snapshot)
        with run.redis(params.cluster) as streams:
            owners = {p.id: p.consumer for p in streams.pending(params.stream, params.group)}
            back: dict[str, list[str]] = defaultdict(list)
            for entry_id, consumer in held:
                if entry_id in owners and owners[entry_id] != consumer:
                    back[consumer].append(entry_id)
            for consumer, ids in sorted(back.items()):
                streams.claim(params.stream, params.group, ids, consumer)
        acked = [entry_id for entry_id, _ in held if entry_id not in owners]
        moved = ", ".join(f"{len(ids)} to {consumer}" for consumer, ids in sorted(back.items())) or "none needed"
        return Restore(
            summary=(f"claimed back {sum(map(len, back.values()))} entr(ies) to their original consumers ({moved}); "
                     f"{len(acked)} entr(ies) were acknowledged since (dead-lettered or processed) and stay so; "
                     f"dead-letter copies are kept"),
            restored=True, restore_command=snapshot.restore_command,
            data={"claimed_back": {consumer: len(ids) for consumer, ids in back.items()}, "acknowledged": len(acked)})

    def restore_items(self, env: Env, params: DrainStuckParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        """The owner of each entry the snapshot's pending list holds that is still pending (an
        acknowledged one cannot be made pending again); the run left a claimed one with claim_to."""
        plan = journal.last(original, "plan")
        columns = list(plan.data.get("columns") or []) if plan is not None else []
        claimed = {row[columns.index("entry id")] for row in (plan.data.get("rows") or [])
                   if str(row[columns.index("action")]).startswith(CLAIM)} if "action" in columns else set()
        with env.redis(params.cluster) as streams:
            owners = {p.id: p.consumer for p in streams.pending(params.stream, params.group)}
        return [RestoreItem(f"entry {entry_id} owner", saved=consumer, now=owners[entry_id],
                            left=params.claim_to if entry_id in claimed else None)
                for entry_id, consumer in _saved_owners(snapshot) if entry_id in owners]

    def outcome(self, params: DrainStuckParameters, plan: DrainPlan, result: dict[str, Any]) -> str:
        claimed = result.get("claimed")
        deleted = result.get("deleted") or {"deleted": list(plan.deletions)}
        return (f"drained group {plan.group} of {plan.stream}: "
                f"{len(claimed.claimed) if claimed else len(plan.of(CLAIM))} entr(ies) claimed to {plan.claim_to}, "
                f"{len(plan.of(DEAD_LETTER))} dead-lettered to {plan.dead_letter_stream}, "
                f"{len(deleted['deleted'])} dead consumer(s) deleted")


def _saved_owners(snapshot: Snapshot) -> list[tuple[str, str]]:
    """(entry id, consumer) of each entry of the pending list the snapshot saved (its CSV)."""
    lines = snapshot.csv.splitlines()[1:]  # id,consumer,idle_ms,deliveries
    return [(fields[0], fields[1]) for fields in (line.split(",") for line in lines) if len(fields) >= 2]


def _replicas(copy: DeadLetterCopy) -> str:
    return "the primary (no replicas)" if copy.replicas_confirmed is None else f"{copy.replicas_confirmed} replica(s)"


@contextmanager
def _may_have_changed(run: Run, what: str) -> Iterator[None]:
    """A step that fails part-way may have changed something (a pipeline of claims cut off, a copy
    made whose WAIT fell short): say so, so that the outcome is honest and the restore runs."""
    try:
        yield
    except Exception:
        run.changed.append(what)
        raise


def _delete_consumers(streams: RedisStreams, plan: DrainPlan) -> dict[str, list[str]]:
    """Delete each dead consumer that holds nothing now (checked atomically with the deletion)."""
    done: dict[str, list[str]] = {"deleted": [], "kept": []}
    for name in plan.deletions:
        try:
            streams.delete_consumer(plan.stream, plan.group, name)
            done["deleted"].append(name)
        except PreconditionError:
            done["kept"].append(name)
    return done


def _copies_in_dead_letter(streams: RedisStreams, plan: DrainPlan) -> dict[str, list[str]]:
    """entry id -> the ids of its copies in the dead-letter stream (read back whole, by provenance)."""
    found: dict[str, list[str]] = defaultdict(list)
    names = [name.encode() for name in PROVENANCE_FIELDS]
    for entry in streams.read_range(plan.dead_letter_stream):
        tail = entry.fields[-len(names):]
        if [name for name, _ in tail] != names:
            continue
        stream, original, group = (value.decode(errors="replace") for _, value in tail[:3])
        if stream == plan.stream and group == plan.group:
            found[original].append(entry.id)
    return found


def _claim_back_script(plan: DrainPlan) -> str:
    """redis-cli commands giving the entries this run moves back to the consumers that held them
    (XCLAIM ... JUSTID: no delivery counted; entries acknowledged since are skipped by Redis)."""
    lines = []
    by_owner: dict[str, list[str]] = defaultdict(list)
    for m in plan.moves:
        by_owner[m.consumer].append(m.id)
    for owner, ids in sorted(by_owner.items()):
        for start in range(0, len(ids), CLAIM_BACK_BATCH):
            chunk = " ".join(ids[start:start + CLAIM_BACK_BATCH])
            lines.append(f"XCLAIM {_quote(plan.stream)} {_quote(plan.group)} {_quote(owner)} 0 {chunk} JUSTID")
    return "\n".join(lines) + "\n"


def _quote(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


STEPS = DrainStuck()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


redis_streams_drain_stuck = runbook_flow(
    STEPS, DrainStuckParameters,
    "Move a Redis consumer group's stuck entries to a healthy consumer, poison ones to a dead-letter stream.")
