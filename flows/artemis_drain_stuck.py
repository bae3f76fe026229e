"""Runbook `artemis-drain-stuck`: consumers of an Artemis queue that hold deliveries and acknowledge
nothing while messages wait. Sampled twice `window_s` apart, a consumer is stuck when it holds
deliveries in both samples, acknowledged nothing between them, has acknowledged nothing for
`stuck_after_s` (or never), and the queue has messages waiting beyond those being delivered. After
approval their connections are closed, so Artemis redelivers what they held to the healthy consumers:

    observe (two samples) -> plan (each stuck consumer: connection, client id, remote address, held)
    -> snapshot (the state before, for the record: a closed connection cannot be reopened)
    -> close each connection (one fenced step) -> verify (over verify_window_s the queue makes progress:
       the remaining consumers acknowledge, or it is empty; the closed consumers are gone)

Closing loses nothing: what a consumer held unacknowledged goes back to the queue.

Poison: with `park_after=N`, a message the stuck consumers held when this runbook closed them N times
(this time included) moves to `parking_queue` instead of going back to the healthy consumers. Artemis
does not show a message's delivery count through management (and an AMQP consumer closed without
settling does not raise it), so the runbook counts itself, per message id in the queue, in a ledger
(mq_runbooks.flows.artemis_ledger). To park before a healthy consumer takes them, the queue is paused
for the moment of closing and moving (resumed whatever happens).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.base.clusters import ArtemisCluster
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.artemis_ledger import append_ledger, ledger_path, read_ledger
from mq_runbooks.integrations.artemis import ArtemisManagement, ArtemisNotFound, ConsumerInfo, QueueState
from mq_runbooks.integrations.artemis_messages import ORIGINAL_MESSAGE_ID, held_by, list_messages, move, pause
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Snapshot, Verification

__all__ = ["DrainStuckParameters", "artemis_drain_stuck", "dry_run"]

RUNBOOK_ID = "artemis-drain-stuck"


class DrainStuckParameters(BaseModel):
    """Parameters of artemis-drain-stuck."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="an Artemis cluster named in clusters.yaml, e.g. primary")
    queue: str = Field(min_length=1, description="the queue whose consumers are stuck")
    stuck_after_s: float = Field(60, ge=0, le=86400, description=(
        "seconds a consumer must have acknowledged nothing (while holding deliveries) to count as stuck"))
    window_s: float = Field(10, ge=1, le=600, description="seconds between the two samples")
    verify_window_s: float = Field(10, ge=1, le=600, description="seconds to watch the queue after closing")
    park_after: int | None = Field(None, ge=1, le=1000, description=(
        "a message stuck consumers held when this runbook closed them this many times (this time included) "
        "moves to parking_queue instead of back to the healthy consumers"))
    parking_queue: str | None = Field(None, min_length=1, description="where those go (default <queue>.parking)")

    @property
    def parking(self) -> str:
        return self.parking_queue or f"{self.queue}.parking"


@dataclass(frozen=True)
class StuckConsumer:
    consumer_id: str
    session_id: str
    connection_id: str | None
    client_id: str | None
    remote_address: str | None
    protocol: str | None
    held: int  # deliveries not acknowledged
    acknowledged: int
    idle_s: float  # since its last acknowledgement (or its first delivery, if none)
    held_ids: tuple[int, ...] = ()  # the ids (in the queue) of the messages it holds


@dataclass(frozen=True)
class DrainPlan(PlanTable):
    cluster: str
    queue: QueueState
    stuck: tuple[StuckConsumer, ...]
    healthy: int  # consumers of the queue that are not stuck
    window_s: float
    to_park: tuple[int, ...] = ()  # held message ids at park_after: moved to the parking queue
    parking_queue: str | None = None

    COLUMNS = ("connection", "client id", "remote address", "protocol", "held", "acknowledged", "idle s",
               "to park")
    # A row is named by its connection: a changed plan shows "a0dbb951: no longer in the plan", not every
    # cell of the row joined into one key (the digest is its own).
    KEY_COLUMNS = ("connection",)

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        parked = set(self.to_park)
        return [(c.connection_id, c.client_id, c.remote_address, c.protocol, c.held, c.acknowledged, round(c.idle_s),
                 sum(1 for i in c.held_ids if i in parked)) for c in sorted(self.stuck, key=lambda c: c.connection_id or "")]

    def digest(self) -> str:  # binds the connections to close, not the counts that move by themselves
        import hashlib
        return hashlib.sha256(" ".join(sorted(c.connection_id or "" for c in self.stuck)).encode()).hexdigest()

    @property
    def waiting(self) -> int:
        return self.queue.message_count - self.queue.delivering_count

    def summary(self) -> str:
        parking = (f"; {len(self.to_park)} of them held at park_after go to {self.parking_queue}"
                   if self.to_park else "")
        return (f"{len(self.stuck)} stuck consumer connection(s) of {self.queue.name} holding "
                f"{sum(c.held for c in self.stuck)} message(s) to close; {self.waiting} waiting, "
                f"{self.healthy} healthy consumer(s)" + parking)


def _sample(artemis: ArtemisManagement, queue: str) -> tuple[QueueState, dict[str, ConsumerInfo]]:
    return artemis.queue(queue), {c.consumer_id: c for c in artemis.consumers(queue)}


def observe_stuck(cluster: ArtemisCluster, params: DrainStuckParameters, closed_before: dict[str, int] | None = None,
                  sleep=time.sleep) -> DrainPlan:
    """Sample twice and plan; `closed_before` (message id -> times held when this runbook closed its
    consumers, from the ledger) decides what is parked with park_after."""
    with ArtemisManagement.from_cluster(cluster) as artemis:
        try:
            _, first = _sample(artemis, params.queue)
        except ArtemisNotFound:
            raise ParameterError(RUNBOOK_ID, [("queue", f"{params.queue!r} is not a queue of artemis cluster "
                                                        f"{cluster.name!r}")]) from None
        sleep(params.window_s)
        queue, second = _sample(artemis, params.queue)
        now_ms = time.time() * 1000
        waiting = queue.message_count - queue.delivering_count
        stuck = []
        for consumer_id, now in second.items():
            before = first.get(consumer_id)
            if before is None or now.delivering_count == 0 or before.delivering_count == 0:
                continue
            if now.messages_acknowledged != before.messages_acknowledged:
                continue
            since = now.last_acknowledged_time or now.last_delivered_time or now_ms
            idle_s = max(0.0, (now_ms - since) / 1000)
            if idle_s < params.stuck_after_s or waiting <= 0:
                continue
            stuck.append(StuckConsumer(
                consumer_id=consumer_id, session_id=now.session_id,
                connection_id=artemis.session_connection(now.session_id), client_id=now.client_id,
                remote_address=now.remote_address, protocol=now.protocol, held=now.delivering_count,
                acknowledged=now.messages_acknowledged, idle_s=idle_s))
        if stuck and params.park_after is not None:
            held = held_by(artemis, params.queue)
            stuck = [replace(c, held_ids=tuple(held.get((c.connection_id or "", c.session_id), ()))) for c in stuck]
    before = closed_before or {}
    to_park = tuple(i for c in stuck for i in c.held_ids
                    if params.park_after is not None and before.get(str(i), 0) + 1 >= params.park_after)
    return DrainPlan(cluster=cluster.name, queue=queue, stuck=tuple(stuck), healthy=len(second) - len(stuck),
                     window_s=params.window_s, to_park=to_park, parking_queue=params.parking if to_park else None)


def close_connections(cluster: ArtemisCluster, plan: DrainPlan, park_wait_s: float = 10.0) -> dict[str, Any]:
    """Close the stuck consumers' connections. With messages to park, the queue is paused first (so
    what the consumers held is not delivered again meanwhile), those messages are moved by id to the
    parking queue as soon as Artemis has taken them back, and the queue is resumed, whatever happens."""
    closed, gone, parked, waiting = [], [], [], list(plan.to_park)
    with ArtemisManagement.from_cluster(cluster) as artemis:
        if plan.to_park:
            artemis.create_queue(plan.parking_queue)
            pause(artemis, plan.queue.name, True)
        try:
            for consumer in plan.stuck:
                if consumer.connection_id is None:
                    gone.append(consumer.consumer_id)
                    continue
                artemis.close_connection(consumer.connection_id)
                closed.append(consumer.connection_id)
            deadline = time.monotonic() + park_wait_s
            while waiting:  # a held message can be moved once the closed session has given it back
                moved = move(artemis, plan.queue.name, waiting, plan.parking_queue)
                parked += [i for i, done in moved.items() if done]
                waiting = [i for i, done in moved.items() if not done]
                if waiting and time.monotonic() > deadline:
                    break
                if waiting:
                    time.sleep(0.2)
        finally:
            if plan.to_park:
                pause(artemis, plan.queue.name, False)
    return {"closed": closed, "already_gone": gone, "parked": parked, "not_parked": waiting}


class DrainStuck(RunbookSteps[DrainStuckParameters, DrainPlan]):
    id = RUNBOOK_ID
    verify_attempts = 1  # verify is itself a measurement over verify_window_s
    # `runbook restore` refuses a run of it, naming these (its snapshot is for the record only).
    cannot_undo = ("the closed connections: a closed connection cannot be reopened (its clients reconnect on their own)",
                   "the redelivery of what the closed consumers held: the other consumers may have processed it",
                   "the messages parked in the parking queue stay there: moving them back to the queue would hand the "
                   "poison to the healthy consumers again; move them by hand with Artemis' moveMessages to retry them",
                   "the ledger's count of closes per message (it counts toward park_after)")

    def target(self, params: DrainStuckParameters) -> str:
        return f"{params.cluster}/{params.queue}"

    def observe(self, env: Env, params: DrainStuckParameters) -> DrainPlan:
        closed_before = read_ledger(_ledger(env, params)) if params.park_after is not None else {}
        plan = observe_stuck(env.clusters.artemis_cluster(params.cluster), params, closed_before)
        if isinstance(env, Run):
            env.observed(f"{params.queue}: {plan.queue.message_count} message(s), {plan.queue.delivering_count} "
                         f"delivering, {plan.queue.consumer_count} consumer(s), sampled twice {params.window_s:g}s apart",
                         queue=asdict(plan.queue))
        return plan

    def replan(self, run: Run, params: DrainStuckParameters, approved: DrainPlan) -> DrainPlan:
        """The approved plan, less the connections that closed meanwhile (sampling again would take a window)."""
        with ArtemisManagement.from_cluster(run.clusters.artemis_cluster(params.cluster)) as artemis:
            live = {c.session_id for c in artemis.consumers(params.queue)}
            queue = artemis.queue(params.queue)
        stuck = tuple(c for c in approved.stuck if c.session_id in live)
        kept = {i for c in stuck for i in c.held_ids}
        return replace(approved, queue=queue, stuck=stuck, to_park=tuple(i for i in approved.to_park if i in kept))

    def snapshot(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> None:
        # For the record only: a closed connection cannot be reopened, so nothing is handed to the
        # driver to restore.
        journal.write(run.id, Snapshot(summary="state before closing (it cannot be undone; it loses nothing)",
                                       data={"queue": asdict(plan.queue), "consumers": [asdict(c) for c in plan.stuck]}))
        return None

    def act(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> dict[str, Any]:
        cluster = run.clusters.artemis_cluster(params.cluster)
        result = run.step("close-connections", lambda: close_connections(cluster, plan),
                          lambda r: f"closed {len(r['closed'])} connection(s) of stuck consumers of {params.queue}; "
                                    f"{sum(c.held for c in plan.stuck) - len(r['parked'])} held message(s) go back "
                                    "to the queue" + (f", {len(r['parked'])} parked in {plan.parking_queue}"
                                                      if plan.to_park else ""),
                          lambda r: {**r, "parked_count": len(r["parked"])}, partial=bool(plan.to_park))
        if result is not None and params.park_after is not None:  # what they held, once more, for the next run
            parked = set(result["parked"])
            append_ledger(_ledger(run, params), run.id, params.queue,
                          [str(i) for c in plan.stuck for i in c.held_ids if i not in parked])
        if result is not None and result["not_parked"]:
            run.note(f"{len(result['not_parked'])} message(s) to park were not given back by Artemis in time: "
                     "they stay in the queue", not_parked=result["not_parked"])
        return {"queue_before": asdict(plan.queue), **(result or {})}

    def verify(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: Any) -> Verification:
        cluster = run.clusters.artemis_cluster(params.cluster)
        closed_sessions = {c.session_id for c in plan.stuck}
        with ArtemisManagement.from_cluster(cluster) as artemis:
            start = artemis.queue(params.queue)
            time.sleep(params.verify_window_s)
            end = artemis.queue(params.queue)
            left = [c for c in artemis.consumers(params.queue) if c.session_id in closed_sessions]
            # a parked message is a copy whose _AMQ_ORIG_MESSAGE_ID is its id in the queue
            parked = sum(1 for m in list_messages(artemis, plan.parking_queue)
                         if m.properties.get(ORIGINAL_MESSAGE_ID) in set(plan.to_park)) if plan.to_park else 0
        acked = end.messages_acknowledged - start.messages_acknowledged
        if parked < len(plan.to_park):
            return Verification(ok=False, summary=f"{parked} of {len(plan.to_park)} message(s) to park are in "
                                f"{plan.parking_queue}", data={"parked": parked, "to_park": len(plan.to_park)})
        data = {"parked": parked, "acknowledged_in_window": acked, "message_count": [start.message_count, end.message_count],
                "consumers_after": end.consumer_count, "window_s": params.verify_window_s}
        if left:
            return Verification(ok=False, summary=f"{len(left)} closed consumer(s) are still attached", data=data)
        if acked > 0 or end.message_count == 0:
            return Verification(summary=f"{params.queue} makes progress: {acked} acknowledged in "
                                        f"{params.verify_window_s:g}s, {end.message_count} message(s) left", data=data)
        advice = ("no consumer is left: start healthy consumers" if end.consumer_count == 0 else
                  f"its {end.consumer_count} remaining consumer(s) acknowledged nothing: they may be stuck too")
        return Verification(ok=False, summary=f"no progress on {params.queue} over {params.verify_window_s:g}s "
                            f"({end.message_count} message(s)); {advice}. The closed connections cannot be reopened; "
                            "what they held is back in the queue", data=data)

    def outcome(self, params: DrainStuckParameters, plan: DrainPlan, result: Any) -> str:
        return f"done: {plan.summary()}; the queue makes progress (verified over {params.verify_window_s:g}s)"


def _ledger(env: Env, params: DrainStuckParameters):
    return ledger_path(env.settings.snapshot_dir, "artemis-stuck-ledger", params.cluster, params.queue)


STEPS = DrainStuck()
dry_run = STEPS.dry_run


artemis_drain_stuck = runbook_flow(
    STEPS, DrainStuckParameters,
    "Close the connections of Artemis consumers that hold deliveries and acknowledge nothing.")
