"""The plan of `redis-streams-drain-stuck` (plain Python: no Prefect, no change to Redis).

Words, as the plan and the runbook use them:

- a *stuck entry* is a pending entry of the group (delivered, never acknowledged) idle at least
  `idle_ms` (XPENDING ... IDLE idle_ms): nobody touched it for that long;
- a *poison entry* is a stuck entry delivered more than `poison_after` times: it is copied to the
  dead-letter stream (once) and acknowledged, never given to a consumer again;
- a *dead consumer* is a consumer of the group that has not tried to read or claim for `idle_ms`
  (XINFO CONSUMERS `idle`); it is deleted (with `remove_dead_consumers`) only when this plan moves
  every entry it holds, so the deletion never drops anything. A consumer that still reads keeps its
  name even when some of its entries are stuck (they are moved all the same). Before Redis 7.2 `idle`
  restarts only when the consumer is given entries, so a live consumer polling a quiet stream may be
  taken for dead: deleting it drops nothing (it holds nothing by then) and its next read re-creates it;
- the other stuck entries are claimed to `claim_to`, an existing consumer of the group (its own
  entries stay where they are). `claim_to` is required when there is something to claim.

    plan = plan_drain(streams, params)
    plan.rows()   # (consumer, entry id, idle ms, deliveries, action, fields), by consumer and entry id
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.integrations.redis_streams import ConsumerInfo, RedisStreams, StreamEntry
from mq_runbooks.integrations.redis_streams_records import parse_entry_id
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, PlanTable, table_json, table_markdown

RUNBOOK_ID = "redis-streams-drain-stuck"
CLAIM, DEAD_LETTER, ACK_GONE = "claim", "dead-letter", "ack-gone"
VALUE_SHOWN = 100  # characters of a field value shown with show_values=true


class DrainStuckParameters(BaseModel):
    """Parameters of redis-streams-drain-stuck."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a Redis server named under redis: in clusters.yaml, e.g. primary")
    stream: str = Field(min_length=1, description="the stream (its key)")
    group: str = Field(min_length=1, description="the consumer group")
    idle_ms: int = Field(60_000, ge=0, description="a pending entry idle this long is stuck; a consumer idle "
                                                   "this long is dead")
    poison_after: int = Field(5, ge=0, description="a stuck entry delivered more than this many times is poison")
    claim_to: str | None = Field(None, description="the healthy consumer of the group that gets the stuck "
                                                   "entries (required when there are any)")
    dead_letter_stream: str | None = Field(None, description="where poison entries are copied (default <stream>:dlq)")
    show_values: bool = Field(False, description="true: show the poison entries' field values in the plan")
    remove_dead_consumers: bool = Field(True, description="delete dead consumers once they hold nothing")


@dataclass(frozen=True)
class Move:
    """One stuck entry and what happens to it: claim (to claim_to), dead-letter (copy, then ack), or
    ack-gone (the stream no longer holds it: there is nothing to copy or process)."""

    id: str
    consumer: str
    idle_ms: int
    deliveries: int
    action: str
    fields: str = ""  # poison entries only: names with sizes, or values with show_values


@dataclass(frozen=True)
class DrainPlan(PlanTable):
    cluster: str
    stream: str
    group: str
    idle_ms: int
    poison_after: int
    claim_to: str | None
    dead_letter_stream: str
    moves: tuple[Move, ...]
    consumers: tuple[ConsumerInfo, ...]  # every consumer of the group, as observed
    emptied: tuple[str, ...]  # dead consumers this plan moves every entry of
    deletions: tuple[str, ...]  # those of them to delete (remove_dead_consumers)
    notes: tuple[str, ...] = ()
    kept_by: str | None = None  # claim_to, where it holds stuck-looking entries that are left alone
    kept: int = 0  # how many: idle that long, but on the healthy consumer (it reads them in its own time)

    COLUMNS = ("consumer", "entry id", "idle ms", "deliveries", "action", "fields")
    KEY_COLUMNS = ("consumer", "entry id")
    INTENT_COLUMNS = ("action",)  # idle times and delivery counts move on while the gate waits

    def of(self, action: str) -> list[Move]:
        return [m for m in self.moves if m.action == action]

    def action_text(self, move: Move) -> str:
        if move.action == CLAIM:
            return f"claim to {self.claim_to}"
        if move.action == DEAD_LETTER:
            return f"dead-letter to {self.dead_letter_stream}, then ack"
        return "ack (gone from the stream: nothing to copy)"

    # -- the plan contract -----------------------------------------------------------------------
    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple[Any, ...]]:
        idle = {c.name: c.idle_ms for c in self.consumers}
        rows: list[tuple[Any, ...]] = []
        by_consumer: dict[str, list[Move]] = {}
        for move in self.moves:
            by_consumer.setdefault(move.consumer, []).append(move)
        for consumer in sorted(set(by_consumer) | set(self.deletions)):
            for m in sorted(by_consumer.get(consumer, []), key=lambda m: parse_entry_id(m.id)):
                rows.append((consumer, m.id, m.idle_ms, m.deliveries, self.action_text(m), m.fields))
            if consumer in self.deletions:
                rows.append((consumer, "", idle.get(consumer), "", "delete consumer (dead, holds nothing after)", ""))
        return rows

    def changes_anything(self) -> bool:
        return bool(self.moves or self.deletions)

    def missing_targets(self) -> tuple[str, ...]:
        return ()  # an unknown stream or group raises NotFoundError from the integration, naming what exists

    def warnings(self) -> tuple[str, ...]:
        return self.notes

    def summary(self) -> str:
        if not self.changes_anything() and self.kept:
            return (f"nothing to move in group {self.group} of {self.stream}: the {self.kept} pending entr(ies) idle "
                    f"{self.idle_ms} ms or more are on the healthy consumer {self.kept_by} (claim_to) and left alone")
        if not self.changes_anything():
            return (f"nothing stuck in group {self.group} of {self.stream}: no pending entry idle "
                    f"{self.idle_ms} ms or more")
        parts = []
        if self.of(CLAIM):
            parts.append(f"{len(self.of(CLAIM))} stuck entr(ies) to claim to {self.claim_to}")
        if self.of(DEAD_LETTER):
            parts.append(f"{len(self.of(DEAD_LETTER))} poison entr(ies) to dead-letter to {self.dead_letter_stream}")
        if self.of(ACK_GONE):
            parts.append(f"{len(self.of(ACK_GONE))} poison entr(ies) gone from the stream to acknowledge")
        if self.deletions:
            parts.append(f"{len(self.deletions)} dead consumer(s) to delete ({', '.join(self.deletions)})")
        return f"group {self.group} of {self.stream}: " + ", ".join(parts)

    def headline(self) -> str:
        lines = [f"**Stream** `{self.stream}` **group** `{self.group}` on Redis `{self.cluster}`: stuck = pending "
                 f"and idle {self.idle_ms} ms or more; poison = delivered more than {self.poison_after} times.",
                 "", f"**{self.summary()}**", ""]
        counts: dict[str, Counter[str]] = {}
        for move in self.moves:
            counts.setdefault(move.consumer, Counter())[self.action_text(move)] += 1
        for consumer in self.consumers:
            if consumer.name in counts or consumer.name in self.deletions:
                state = "dead" if consumer.name in self.emptied else "reading"
                moved = ", ".join(f"{n} {action}" for action, n in sorted(counts.get(consumer.name, Counter()).items()))
                delete = "; then deleted" if consumer.name in self.deletions else ""
                lines.append(f"- `{consumer.name}` ({state}, idle {consumer.idle_ms} ms, {consumer.pending} pending): "
                             f"{moved or 'nothing to move'}{delete}")
        return "\n".join(lines)

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        return table_markdown(self.headline(), self.COLUMNS, self.rows(), rows, self.notes)

    def digest(self) -> str:
        """Over what would change (which entry goes where, which consumer goes): idle times and
        delivery counts move on while the gate waits and are left out."""
        canonical = json.dumps({"stream": self.stream, "group": self.group, "claim_to": self.claim_to,
                                "dead_letter_stream": self.dead_letter_stream,
                                "moves": sorted([m.consumer, m.id, m.action] for m in self.moves),
                                "deletions": sorted(self.deletions)}, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**table_json(self), "cluster": self.cluster, "stream": self.stream, "group": self.group,
                "idle_ms": self.idle_ms, "poison_after": self.poison_after, "claim_to": self.claim_to,
                "dead_letter_stream": self.dead_letter_stream, "to_claim": len(self.of(CLAIM)),
                "to_dead_letter": len(self.of(DEAD_LETTER)), "gone": len(self.of(ACK_GONE)),
                "dead_consumers": list(self.emptied), "deletions": list(self.deletions), "warnings": list(self.notes),
                "consumers": [{"name": c.name, "pending": c.pending, "idle_ms": c.idle_ms} for c in self.consumers]}


def plan_drain(streams: RedisStreams, params: DrainStuckParameters, cluster: str,
               since_planned_ms: int = 0) -> DrainPlan:
    """Observe the group (XINFO CONSUMERS, XPENDING IDLE, the poison entries' fields) and plan.
    UnknownStreamError / UnknownGroupError (NotFoundError) name what exists; ParameterError for a
    claim_to that is no consumer of the group, or missing while there is something to claim.

    `idle_ms` is measured at the run's first plan, `since_planned_ms` ago: an entry or a consumer
    must be idle `idle_ms + since_planned_ms` now, so the set planned first stays the set (entries
    that became stuck since are left for another run)."""
    stream, group = params.stream, params.group
    dead_letter_stream = params.dead_letter_stream or f"{stream}:dlq"
    if dead_letter_stream == stream:
        raise ParameterError(RUNBOOK_ID, [("dead_letter_stream", "must differ from the stream itself")])
    consumers = sorted(streams.consumers(stream, group), key=lambda c: c.name)
    names = {c.name: c for c in consumers}
    if params.claim_to is not None and params.claim_to not in names:
        raise ParameterError(RUNBOOK_ID, [("claim_to", f"{params.claim_to!r} is no consumer of group {group!r}; "
                                                       f"{_choices(consumers, params.idle_ms)}")])
    threshold = params.idle_ms + since_planned_ms
    stuck = streams.pending(stream, group, min_idle_ms=threshold)
    poison = [p for p in stuck if p.delivery_count > params.poison_after]
    to_claim = [p for p in stuck if p.delivery_count <= params.poison_after and p.consumer != params.claim_to]
    if to_claim and params.claim_to is None:
        raise ParameterError(RUNBOOK_ID, [("claim_to", f"required: {len(to_claim)} stuck entr(ies) are to be "
                                                       f"claimed by a healthy consumer; {_choices(consumers, params.idle_ms)}")])
    found = streams.entries(stream, [p.id for p in poison]) if poison else {}
    moves = [Move(p.id, p.consumer, p.idle_ms, p.delivery_count, CLAIM) for p in to_claim]
    moves += [Move(p.id, p.consumer, p.idle_ms, p.delivery_count, DEAD_LETTER if found[p.id] else ACK_GONE,
                   _fields(found[p.id], params.show_values)) for p in poison]
    moved = Counter(m.consumer for m in moves)
    emptied = tuple(c.name for c in consumers if c.idle_ms >= threshold and c.name != params.claim_to
                    and moved[c.name] and moved[c.name] >= c.pending)
    notes = []
    kept = [p for p in stuck if p.consumer == params.claim_to and p.delivery_count <= params.poison_after]
    if kept and moves:
        notes.append(f"{len(kept)} entr(ies) idle {params.idle_ms} ms or more are on claim_to {params.claim_to} "
                     f"already: left alone")
    claimer = names.get(params.claim_to) if params.claim_to else None
    if claimer is not None and claimer.idle_ms >= params.idle_ms and to_claim:
        notes.append(f"claim_to {claimer.name} has not read for {claimer.idle_ms} ms (idle_ms is {params.idle_ms}): "
                     f"make sure it runs, or the claimed entries will be stuck again")
    for consumer in consumers:
        if moved[consumer.name] and consumer.name not in emptied and consumer.name != params.claim_to:
            notes.append(f"consumer {consumer.name} still reads (idle {consumer.idle_ms} ms) or holds other entries: "
                         f"its {moved[consumer.name]} stuck entr(ies) are moved, the consumer is kept")
    return DrainPlan(cluster, stream, group, params.idle_ms, params.poison_after, params.claim_to if to_claim else None,
                     dead_letter_stream, tuple(moves), tuple(consumers), emptied,
                     emptied if params.remove_dead_consumers else (), tuple(notes),
                     params.claim_to if kept else None, len(kept))


def _choices(consumers: Sequence[ConsumerInfo], idle_ms: int) -> str:
    healthy = [c for c in sorted(consumers, key=lambda c: c.idle_ms) if c.idle_ms < idle_ms]
    if not healthy:
        return (f"the group has no consumer that read within {idle_ms} ms (consumers: "
                f"{', '.join(c.name for c in consumers) or 'none'}): start one, then name it")
    return "healthy consumers: " + ", ".join(f"{c.name} (idle {c.idle_ms} ms, {c.pending} pending)" for c in healthy)


def _fields(entry: StreamEntry | None, show_values: bool) -> str:
    if entry is None:
        return ""
    if show_values:
        shown = []
        for name, value in entry.fields:
            decoded = value.decode(errors="replace")
            cut = decoded[:VALUE_SHOWN] + ("..." if len(decoded) > VALUE_SHOWN else "")
            shown.append(f"{name.decode(errors='replace')}={cut}")
        return ", ".join(shown)
    return ", ".join(f"{name.decode(errors='replace')}=<{len(value)} bytes>" for name, value in entry.fields)
