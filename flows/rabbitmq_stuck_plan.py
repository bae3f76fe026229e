"""The planning core of `rabbitmq-drain-stuck`: find the consumers that hold their prefetch and ack
nothing, and say what closing their connections will do. Plain Python over the management API.

    with RabbitManagement.from_cluster(cluster) as rabbit:
        plan = plan_drain(rabbit, params)
    plan.stuck, plan.digest(), plan.markdown()

A channel is stuck when, in every sample over `window_s` (statistics refresh every 5 s): it holds
as many unacknowledged deliveries as its prefetch allows (a prefetch of 0, unlimited, never counts),
its ack counter does not move, it has been idle for `idle_threshold_s` or more at the last sample,
and a queue it consumes from has ready messages waiting.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mq_runbooks.base.errors import BrokerError, ParameterError
from mq_runbooks.integrations.rabbitmq import ChannelActivity, Queue, RabbitManagement
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, PlanTable, table_json, table_markdown

RUNBOOK_ID = "rabbitmq-drain-stuck"
STATS_REFRESH_S = 5.0


class DrainStuckParameters(BaseModel):
    """Parameters of rabbitmq-drain-stuck."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a RabbitMQ cluster named in clusters.yaml, e.g. primary")
    vhost: str = Field("/", min_length=1, description="the virtual host, e.g. / or orders")
    queue: str | None = Field(None, min_length=1, description="the queue to look at; none = every queue of the vhost")
    idle_threshold_s: float = Field(60, ge=0, le=86400,
                                    description="seconds a channel must have been idle to count as stuck")
    window_s: float = Field(15, ge=STATS_REFRESH_S, le=600,
                            description="seconds to sample over (statistics refresh every 5 s, so at least 5)")
    verify_window_s: float = Field(10, ge=STATS_REFRESH_S, le=600,
                                   description="seconds to watch the queue drain after acting")
    poison_after: int | None = Field(None, ge=0, le=1000, description=(
        "park messages delivered more than this many times (x-delivery-count, quorum queues only) "
        "instead of returning them to the queue; none = no parking"))
    parking_queue: str | None = Field(None, min_length=1, description=(
        "where poison messages go (created if missing); default <queue>.parking"))
    poison_scan: int = Field(1000, ge=1, le=100_000,
                             description="how many messages at the head of the queue the poison sweep inspects")
    backlog_to: str | None = Field(None, min_length=1, description=(
        "also move the queue's ready backlog to this queue (created if missing) with a dynamic shovel"))

    @model_validator(mode="after")
    def _consistent(self) -> DrainStuckParameters:
        if self.backlog_to is not None and self.queue is None:
            raise ValueError("backlog_to needs a queue: a shovel moves one queue's backlog")
        if self.queue is not None and self.queue in (self.backlog_to, self.parking_queue):
            raise ValueError("backlog_to and parking_queue must differ from the queue itself")
        if self.parking_queue is not None and self.poison_after is None:
            raise ValueError("parking_queue is only used with poison_after")
        return self

    def parking_for(self, queue: str) -> str:
        return self.parking_queue or f"{queue}.parking"


@dataclass(frozen=True)
class QueueState:
    name: str
    type: str
    messages_ready: int
    messages_unacknowledged: int
    consumers: int


@dataclass(frozen=True)
class StuckConnection:
    """A connection to close: the stuck channels on it, and everything else closing it takes down."""

    connection_name: str
    client_provided_name: str | None
    peer_host: str | None
    consumer_tags: tuple[str, ...]
    queues: tuple[str, ...]
    unacked: int
    prefetch: int
    idle_for_s: float
    other_channels: int  # channels on the same connection that are not stuck: closed too


@dataclass(frozen=True)
class DrainPlan(PlanTable):
    """What a drain will do: the connections to close (one row each, by name), the poison sweeps and
    the backlog shovel; and the queues as they were sampled."""

    cluster: str
    vhost: str
    queues: tuple[QueueState, ...]
    stuck: tuple[StuckConnection, ...]
    healthy_consumers: int
    samples: int
    window_s: float
    poison_after: int | None
    parking: tuple[tuple[str, str], ...]  # (queue, parking queue) swept for poison
    poison_scan: int
    backlog_to: str | None
    warnings: tuple[str, ...] = ()

    COLUMNS = ("change", "connection or queue", "client name", "peer host", "consumer tags", "queues", "unacked",
               "prefetch", "idle s", "note")
    KEY_COLUMNS = ("change", "connection or queue")
    INTENT_COLUMNS = ("unacked",)  # idle times and other channels move by themselves (the digest is its own)

    @property
    def unacked_held(self) -> int:
        return sum(c.unacked for c in self.stuck)

    # -- the plan contract (mq_runbooks.kit.plans.Plan) ------------------------------------------
    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        """Every change, in the order it is made: the connections to close (by name), the queues swept
        for poison, the backlog shovel."""
        rows: list[tuple] = [
            ("close", c.connection_name, c.client_provided_name, c.peer_host, " ".join(c.consumer_tags),
             " ".join(c.queues), c.unacked, c.prefetch, round(c.idle_for_s),
             f"{c.other_channels} other channel(s) closed too" if c.other_channels else "")
            for c in self._stuck_by_name()]
        rows += [("park poison", queue, None, None, None, None, None, None, None,
                  f"of the first {self.poison_scan}, those delivered more than {self.poison_after} time(s) -> {parking}")
                 for queue, parking in self.parking]
        if self.backlog_to and self.queues:
            rows.append(("shovel backlog", self.queues[0].name, None, None, None, None, None, None, None,
                         f"ready messages -> {self.backlog_to}"))
        return rows

    def _stuck_by_name(self) -> list[StuckConnection]:
        return sorted(self.stuck, key=lambda c: c.connection_name)

    def changes_anything(self) -> bool:
        return bool(self.stuck or self.parking or self.backlog_to)

    def summary(self) -> str:
        parts = [f"{len(self.stuck)} stuck connection(s) holding {self.unacked_held} message(s) to close"]
        parts += [f"poison of {queue} parked in {parking}" for queue, parking in self.parking]
        if self.backlog_to:
            parts.append(f"backlog of {self.queues[0].name if self.queues else '?'} shovelled to {self.backlog_to}")
        return f"{'; '.join(parts)} (vhost {self.vhost} on {self.cluster})"

    def digest(self) -> str:
        """Binds what is approved: the connections and what they hold, and the options (not the
        queue depths, which move all the time)."""
        bound = {"vhost": self.vhost, "connections": sorted((c.connection_name, c.unacked) for c in self.stuck),
                 "poison_after": self.poison_after, "parking": list(self.parking), "scan": self.poison_scan,
                 "backlog_to": self.backlog_to}
        return hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {**table_json(self), "cluster": self.cluster, "vhost": self.vhost,
                "unacked_held": self.unacked_held, "healthy_consumers": self.healthy_consumers,
                "samples": self.samples, "window_s": self.window_s, "poison_after": self.poison_after,
                "parking": [{"queue": q, "parking_queue": p} for q, p in self.parking],
                "poison_scan": self.poison_scan, "backlog_to": self.backlog_to, "warnings": list(self.warnings),
                "queues": [asdict(q) for q in self.queues], "connections": [asdict(c) for c in self.stuck]}

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        where = f"vhost `{self.vhost}` on RabbitMQ cluster `{self.cluster}`"
        headline = (f"**{len(self.stuck)}** stuck connection(s) in {where} (sampled {self.samples} times over "
                    f"{self.window_s:g}s), holding **{self.unacked_held}** unacknowledged message(s). Closing them "
                    f"returns those messages to their queues, redelivered to the **{self.healthy_consumers}** "
                    "healthy consumer(s).")
        shown = [(c.connection_name, c.client_provided_name, c.peer_host, ", ".join(c.consumer_tags),
                  ", ".join(c.queues), f"{c.unacked} / {c.prefetch}", f"{c.idle_for_s:.0f}s", c.other_channels)
                 for c in self._stuck_by_name()]
        lines = [table_markdown(headline, ("connection", "client name", "peer host", "consumer tags", "queues",
                                           "unacked / prefetch", "idle", "other channels closed"), shown, rows)]
        lines += ["", "| queue | type | ready | unacked | consumers |", "|---|---|---:|---:|---:|"]
        lines += [f"| {q.name} | {q.type} | {q.messages_ready} | {q.messages_unacknowledged} | {q.consumers} |"
                  for q in self.queues[:rows]]
        for queue, parking in self.parking:
            lines.append(f"\nPoison: of the first {self.poison_scan} message(s) of `{queue}`, those delivered more "
                         f"than {self.poison_after} time(s) go to `{parking}` (confirmed, then acked); the others "
                         "go back to the queue (counted as one more delivery).")
        if self.backlog_to:
            lines.append(f"\nBacklog: a dynamic shovel moves the ready messages of `{self.queues[0].name}` to "
                         f"`{self.backlog_to}` (ack on confirm; it stops at the length it measured at start).")
        lines += [f"\n> WARN {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True)
class Sample:
    at: datetime
    queues: dict[str, Queue]
    channels: dict[str, ChannelActivity]


def take_samples(rabbit: RabbitManagement, params: DrainStuckParameters,
                 sleep: Callable[[float], None] = time.sleep) -> list[Sample]:
    """Samples of the target queues and of every channel, spread over `window_s` (one per refresh)."""
    count = max(2, math.ceil(params.window_s / STATS_REFRESH_S) + 1)
    interval = params.window_s / (count - 1)
    refuse_unknown_vhost(rabbit, params.vhost, params.cluster)
    if params.queue is not None:
        try:
            rabbit.queue(params.vhost, params.queue)
        except BrokerError as exc:
            if "does not exist" not in str(exc):
                raise
            queues = sorted(q.name for q in rabbit.queues(params.vhost))
            shown = ", ".join(queues[:20]) + (" ..." if len(queues) > 20 else "") if queues else "none"
            raise ParameterError(RUNBOOK_ID, [("queue", f"no queue {params.queue!r} in vhost {params.vhost!r} on "
                                                        f"{params.cluster} (queues there: {shown})")]) from None
    samples = []
    for index in range(count):
        if index:
            sleep(interval)
        queues = [rabbit.queue(params.vhost, params.queue)] if params.queue else rabbit.queues(params.vhost)
        samples.append(Sample(datetime.now(timezone.utc), {q.name: q for q in queues},
                              {c.name: c for c in rabbit.channel_activity()}))
    return samples


def refuse_unknown_vhost(rabbit: RabbitManagement, vhost: str, cluster: str, runbook: str = RUNBOOK_ID,
                         field: str = "vhost") -> None:
    """ParameterError naming the vhosts there when `vhost` does not exist on the cluster (an unknown
    vhost must be refused as bad input, not planned as a vhost with nothing to do)."""
    vhosts = sorted(v["name"] for v in rabbit.get_json("/api/vhosts"))
    if vhost not in vhosts:
        raise ParameterError(runbook, [(field, f"no vhost {vhost!r} on RabbitMQ cluster {cluster} "
                                               f"(vhosts there: {', '.join(vhosts) or 'none'})")])


def _stuck_channels(samples: list[Sample], consumed: dict[str, set[str]], idle_threshold_s: float) -> list[str]:
    last = samples[-1]
    stuck = []
    for name, queues in consumed.items():
        seen = [s.channels.get(name) for s in samples]
        if any(c is None or c.prefetch_count <= 0 or c.messages_unacknowledged < c.prefetch_count for c in seen):
            continue
        if seen[0].acks != seen[-1].acks or seen[-1].idle_since is None:
            continue
        if (last.at - seen[-1].idle_since).total_seconds() < idle_threshold_s:
            continue
        if any(q in last.queues and last.queues[q].messages_ready > 0 for q in queues):
            stuck.append(name)
    return stuck


def plan_drain(rabbit: RabbitManagement, params: DrainStuckParameters, *,
               sleep: Callable[[float], None] = time.sleep) -> DrainPlan:
    """Observe over the window and compute the plan; ParameterError for options the queues cannot honour."""
    samples = take_samples(rabbit, params, sleep)
    last = samples[-1]
    consumers = [c for c in rabbit.consumers(params.vhost) if c.queue in last.queues]
    consumed: dict[str, set[str]] = {}
    for consumer in consumers:
        consumed.setdefault(consumer.channel_name, set()).add(consumer.queue)
    stuck_channels = set(_stuck_channels(samples, consumed, params.idle_threshold_s))
    connections = {c.name: c for c in rabbit.connections()}
    by_connection: dict[str, list[str]] = {}
    for name in sorted(stuck_channels):
        by_connection.setdefault(last.channels[name].connection_name, []).append(name)
    stuck = []
    for connection_name, channels in sorted(by_connection.items()):
        info = connections.get(connection_name)
        on_it = [c for c in consumers if c.connection_name == connection_name]
        held = [last.channels[name] for name in channels]
        stuck.append(StuckConnection(
            connection_name=connection_name,
            client_provided_name=info.client_provided_name if info else None,
            peer_host=info.peer_host if info else None,
            consumer_tags=tuple(sorted(c.consumer_tag for c in on_it)),
            queues=tuple(sorted({c.queue for c in on_it})),
            unacked=sum(c.messages_unacknowledged for c in held),
            prefetch=sum(c.prefetch_count for c in held),
            idle_for_s=min((last.at - c.idle_since).total_seconds() for c in held if c.idle_since),
            other_channels=sum(1 for c in last.channels.values()
                               if c.connection_name == connection_name and c.name not in stuck_channels),
        ))
    stuck_names = {c.connection_name for c in stuck}
    parking, warnings = _poison_targets(params, last, stuck)
    return DrainPlan(
        cluster=params.cluster, vhost=params.vhost,
        queues=tuple(QueueState(q.name, q.type, q.messages_ready, q.messages_unacknowledged, q.consumers)
                     for q in sorted(last.queues.values(), key=lambda q: q.name)),
        stuck=tuple(stuck),
        healthy_consumers=sum(1 for c in consumers if c.connection_name not in stuck_names),
        samples=len(samples), window_s=params.window_s, poison_after=params.poison_after,
        parking=parking, poison_scan=params.poison_scan, backlog_to=params.backlog_to, warnings=warnings,
    )


def _poison_targets(params: DrainStuckParameters, last: Sample,
                    stuck: list[StuckConnection]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(queue, parking queue) pairs to sweep, and warnings for the queues that cannot be swept."""
    if params.poison_after is None:
        return (), ()
    if params.queue is not None:
        queue = last.queues[params.queue]
        if queue.type != "quorum":
            raise ParameterError(RUNBOOK_ID, [("poison_after", (
                f"queue {queue.name!r} is a {queue.type} queue: RabbitMQ counts deliveries (x-delivery-count) "
                "only on quorum queues; leave poison_after out, or move consumers to a quorum queue"))])
        return ((queue.name, params.parking_for(queue.name)),), ()
    targets, warnings = [], []
    for name in sorted({q for c in stuck for q in c.queues}):
        if last.queues[name].type == "quorum":
            targets.append((name, params.parking_for(name)))
        else:
            warnings.append(f"queue {name} is {last.queues[name].type}: its deliveries are not counted, "
                            "so it is not swept for poison messages")
    return tuple(targets), tuple(warnings)
