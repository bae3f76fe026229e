"""Runbook `redis-streams-replay`: move a consumer group's last-delivered id (XGROUP SETID, with
ENTRIESREAD) so that its consumers read entries again (a bad deploy that must re-read the last hour)
or skip them. The driver does the gate, the lock, the re-plan, the restore on failure and the outcome.

Where the group goes (exactly one): `to_id` (the new last-delivered id: the group next reads the
entries after it; `0` = everything), `to_datetime` / `by_duration` (the first entry at or after that
time is the next one read: parsed as kafka-replay parses them), `to_earliest` (everything the stream
still holds), `to_latest` (skip everything added so far).

Active consumers: a consumer of the group is *active* when it read or claimed within
`active_within_ms` (XINFO CONSUMERS `idle` below it; default 10 s). A consumer that is processing
entries reads them, so it is active; entries that are pending with a consumer that stopped do not make
it active (a replay leaves the pending entries list as it is: redis-streams-drain-stuck moves those).
What counts as a read is Redis's: before Redis 7.2 `idle` restarts only when a consumer is given
entries (new ones, its own pending ones again, or a claim), so a consumer polling a quiet stream, or
blocked in XREADGROUP BLOCK, looks inactive; on 7.2+ every attempted read counts. Stop the consumers
before a replay either way: this check is a safety net, not a replacement for stopping them.
A run with active consumers is refused before the gate, unless `wait_for_inactive` seconds are given:
then it asks for approval and, after it, waits that long for them to stop; the check is made again
just before the move.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from typing import Any


from mq_runbooks.base.errors import ParameterError, PreconditionError
from mq_runbooks.flows.redis_streams_common import snapshot_path, write_json
from mq_runbooks.flows.redis_streams_replay_params import StreamReplayParameters
from mq_runbooks.flows.replay_spec import parse_datetime, parse_duration
from mq_runbooks.integrations.redis_streams import ConsumerInfo, RedisStreams
from mq_runbooks.integrations.redis_streams_records import parse_entry_id
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.plans import PlanTable, table_json
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem

RUNBOOK_ID = "redis-streams-replay"


@dataclass(frozen=True)
class StreamReplayPlan(PlanTable):
    cluster: str
    stream: str
    group: str
    spec: str  # the parameter that gave the target, e.g. by_duration=PT1H (entries since ...)
    current_id: str
    entries_read: int | None
    target_id: str
    replayed: int  # entries after the target up to the current id: delivered again
    skipped: int  # entries after the current id up to the target: never delivered
    first_entry_id: str | None
    last_entry_id: str | None
    length: int
    trimmed: int  # entries added but no longer held (trimmed or deleted)
    before_first: bool  # the target asked for lies before the first entry held, and entries were trimmed
    pending: int
    active: tuple[ConsumerInfo, ...]
    active_within_ms: int

    COLUMNS = ("stream", "group", "last delivered now", "last delivered after", "delivered again", "skipped",
               "first entry", "last entry")
    KEY_COLUMNS = ("stream", "group")
    INTENT_COLUMNS = ("last delivered after",)  # the rest is observed: it moves by itself while the gate waits

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple[Any, ...]]:
        return [(self.stream, self.group, self.current_id, self.target_id, self.replayed, self.skipped,
                 self.first_entry_id, self.last_entry_id)]

    def changes_anything(self) -> bool:
        return self.current_id != self.target_id

    def summary(self) -> str:
        if not self.changes_anything():
            return f"group {self.group} of {self.stream} is already at {self.target_id} ({self.spec})"
        return (f"group {self.group} of {self.stream}: last delivered {self.current_id} -> {self.target_id} "
                f"({self.spec}): {self.replayed} entr(ies) delivered again, {self.skipped} skipped")

    def warnings(self) -> list[str]:
        notes = []
        if self.active:
            listed = ", ".join(f"{c.name} (idle {c.idle_ms} ms, {c.pending} pending)" for c in self.active)
            notes.append(f"{len(self.active)} consumer(s) of {self.group} read within {self.active_within_ms} ms: "
                         f"{listed}. Stop them: a run refuses to move the group while they are active "
                         f"(or waits wait_for_inactive seconds after approval)")
        if self.before_first:
            notes.append(f"the target is before the stream's first entry {self.first_entry_id}: {self.trimmed} "
                         f"entr(ies) were trimmed or deleted and cannot be delivered again")
        if self.pending:
            notes.append(f"{self.pending} entr(ies) pending with consumers stay pending (a replay does not touch the "
                         f"pending entries list)")
        return notes

    def digest(self) -> str:
        """The intent: where the group goes. Its current id, counts and the stream's ends are observed."""
        canonical = json.dumps([self.cluster, self.stream, self.group, self.target_id], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**table_json(self), "cluster": self.cluster, "stream": self.stream, "group": self.group,
                "spec": self.spec, "current_id": self.current_id, "entries_read": self.entries_read,
                "target_id": self.target_id, "replayed": self.replayed, "skipped": self.skipped,
                "first_entry_id": self.first_entry_id, "trimmed": self.trimmed, "before_first": self.before_first,
                "active_consumers": [c.name for c in self.active], "warnings": self.warnings()}


def _key(entry_id: str) -> tuple[int, int]:
    return parse_entry_id(entry_id)


def plan_replay(streams: RedisStreams, params: StreamReplayParameters, now_ms: int | None = None) -> StreamReplayPlan:
    """Observe the stream and the group and plan the move (no change). NotFoundError for an unknown
    stream or group (naming what exists), ParameterError for a to_id past the stream's last id."""
    stream, group = params.stream, params.group
    info = streams.stream_info(stream)
    current = streams.group(stream, group)
    consumers = streams.consumers(stream, group)
    requested: str | None = None
    if params.to_earliest:
        target, spec = "0-0", "to_earliest"
    elif params.to_latest:
        target, spec = info.last_generated_id, "to_latest"
    elif params.to_id is not None:
        if _key(params.to_id) > _key(info.last_generated_id):
            raise ParameterError(RUNBOOK_ID, [("to_id", f"{params.to_id} is past the last id of {stream} "
                                                        f"({info.last_generated_id}): use to_latest to skip everything")])
        target = requested = params.to_id
        spec = f"to_id={params.to_id}"
    else:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if params.to_datetime is not None:
            since, spec = parse_datetime(params.to_datetime), f"to_datetime={params.to_datetime}"
        else:
            since = now_ms - parse_duration(params.by_duration or "")
            spec = f"by_duration={params.by_duration}"
        spec += f" (entries since {_iso(since)})"
        requested = f"{since}-0"
        target = streams.last_id_before(stream, since)
    now = current.last_delivered_id
    replayed = streams.count_between(stream, f"({target}", now) if _key(target) < _key(now) else 0
    skipped = streams.count_between(stream, f"({now}", target) if _key(target) > _key(now) else 0
    trimmed = max(0, (info.entries_added or info.length) - info.length)
    first = info.first_entry_id
    before_first = bool(trimmed and first and (requested is None or _key(requested) < _key(first))
                        and not params.to_latest)
    active = tuple(sorted((c for c in consumers if c.idle_ms < params.active_within_ms), key=lambda c: c.name))
    return StreamReplayPlan(params.cluster, stream, group, spec, now, current.entries_read, target, replayed, skipped,
                            first, info.last_entry_id, info.length, trimmed, before_first, current.pending, active,
                            params.active_within_ms)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def active_consumers(streams: RedisStreams, params: StreamReplayParameters) -> list[ConsumerInfo]:
    return [c for c in streams.consumers(params.stream, params.group) if c.idle_ms < params.active_within_ms]


def refuse_active(active: list[ConsumerInfo] | tuple[ConsumerInfo, ...], params: StreamReplayParameters,
                  waited_s: float = 0) -> str:
    listed = ", ".join(f"{c.name} (idle {c.idle_ms} ms)" for c in active)
    waited = f" after waiting {waited_s:.0f}s" if waited_s else ""
    return (f"group {params.group!r} of {params.stream!r} can only be moved when its consumers are stopped, but "
            f"{len(active)} read within {params.active_within_ms} ms{waited}: {listed}. Stop them (or pass "
            f"wait_for_inactive=SECONDS)")


class StreamReplay(RunbookSteps[StreamReplayParameters, StreamReplayPlan]):
    id = RUNBOOK_ID
    cannot_undo = ("entries the group's consumers read and acknowledged since the run stay read and acknowledged: "
                   "only the group's last-delivered id is put back",)

    def target(self, params: StreamReplayParameters) -> str:
        return f"{params.cluster}/{params.stream}/{params.group}"

    def relative_targets(self, params: StreamReplayParameters) -> str | None:
        return f"by_duration={params.by_duration}" if params.by_duration else None

    def observe(self, env: Env, params: StreamReplayParameters) -> StreamReplayPlan:
        with env.redis(params.cluster) as streams:
            return plan_replay(streams, params, now_ms=env.plan_time_ms())  # a run's first plan, in every re-plan

    def refusal(self, params: StreamReplayParameters, plan: StreamReplayPlan) -> str | None:
        if plan.active and not params.wait_for_inactive:
            return refuse_active(plan.active, params)
        return None

    def before_replan(self, run: Run, params: StreamReplayParameters, plan: StreamReplayPlan) -> None:
        deadline = time.monotonic() + params.wait_for_inactive
        with run.redis(params.cluster) as streams:
            while active := active_consumers(streams, params):
                if time.monotonic() >= deadline:
                    raise PreconditionError(refuse_active(active, params, params.wait_for_inactive))
                time.sleep(1)

    def snapshot(self, run: Run, params: StreamReplayParameters, plan: StreamReplayPlan) -> Snapshot:
        path = write_json(snapshot_path(run.settings.snapshot_dir, RUNBOOK_ID, plan.stream, plan.group, run.id,
                                        "json"),
                          {"runbook": RUNBOOK_ID, "run": run.id, "cluster": plan.cluster, "stream": plan.stream,
                           "group": plan.group, "last_delivered_id": plan.current_id,
                           "entries_read": plan.entries_read})
        command = " ".join(["runbook", "run", RUNBOOK_ID] + [
            arg for key, value in (("cluster", plan.cluster), ("stream", plan.stream), ("group", plan.group),
                                   ("to_id", plan.current_id)) for arg in ("-p", shlex.quote(f"{key}={value}"))])
        return Snapshot(summary=(f"group {plan.group} of {plan.stream} was at last-delivered id {plan.current_id} "
                                 f"(entries read {plan.entries_read}); saved to {path}"),
                        path=str(path), csv=f"stream,group,last_delivered_id,entries_read\n{plan.stream},{plan.group},"
                                            f"{plan.current_id},{'' if plan.entries_read is None else plan.entries_read}\n",
                        restore_command=command,
                        data={"last_delivered_id": plan.current_id, "entries_read": plan.entries_read})

    def act(self, run: Run, params: StreamReplayParameters, plan: StreamReplayPlan) -> None:
        with run.redis(params.cluster) as streams:
            active = active_consumers(streams, params)
            if active:  # a consumer started between the approval and now: change nothing
                raise PreconditionError(refuse_active(active, params))
            run.step("set-last-delivered", lambda: streams.set_last_delivered(plan.stream, plan.group, plan.target_id),
                     lambda group: (f"moved group {plan.group} of {plan.stream} from {plan.current_id} to "
                                    f"{group.last_delivered_id} (entries read {group.entries_read})"),
                     lambda group: {"last_delivered_id": group.last_delivered_id, "entries_read": group.entries_read})

    def verify(self, run: Run, params: StreamReplayParameters, plan: StreamReplayPlan, result: None) -> Verification:
        with run.redis(params.cluster) as streams:
            group = streams.group(plan.stream, plan.group)
        ok = group.last_delivered_id == plan.target_id
        return Verification(ok=ok, summary=(f"XINFO GROUPS: {plan.group} last-delivered id {group.last_delivered_id}"
                                            f"{'' if ok else f', planned {plan.target_id}'}, entries read "
                                            f"{group.entries_read}, lag {group.lag}"),
                            data={"last_delivered_id": group.last_delivered_id, "lag": group.lag})

    def restore(self, run: Run, params: StreamReplayParameters, plan: StreamReplayPlan | None,
                snapshot: Snapshot) -> Restore:
        previous, entries_read = snapshot.data["last_delivered_id"], snapshot.data["entries_read"]
        with run.redis(params.cluster) as streams:
            group = streams.set_last_delivered(params.stream, params.group, previous, entries_read=entries_read)
        return Restore(summary=f"group {params.group} set back to last-delivered id {group.last_delivered_id} "
                               f"(entries read {group.entries_read})", restored=group.last_delivered_id == previous,
                       restore_command=snapshot.restore_command, data={"last_delivered_id": group.last_delivered_id})

    def restore_items(self, env: Env, params: StreamReplayParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        """The group's last-delivered id: saved, now, and where the run moved it (its action's data)."""
        moved = next((e for e in reversed(original) if e.kind == "action" and e.data.get("step") == "set-last-delivered"),
                     None)
        with env.redis(params.cluster) as streams:
            group = streams.group(params.stream, params.group)
        return [RestoreItem(f"{params.stream} group {params.group} last-delivered id",
                            saved=snapshot.data["last_delivered_id"], now=group.last_delivered_id,
                            left=moved.data.get("last_delivered_id") if moved is not None else None)]

    def outcome(self, params: StreamReplayParameters, plan: StreamReplayPlan, result: None) -> str:
        return (f"group {plan.group} of {plan.stream} moved to {plan.target_id}: {plan.replayed} entr(ies) to be "
                f"delivered again, {plan.skipped} skipped")


STEPS = StreamReplay()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


redis_streams_replay = runbook_flow(
    STEPS, StreamReplayParameters,
    "Move a Redis consumer group's last-delivered id to replay or skip entries.")
