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
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.base.clusters import ArtemisCluster
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.integrations.artemis import ArtemisManagement, ArtemisNotFound, ConsumerInfo, QueueState
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


@dataclass(frozen=True)
class DrainPlan(PlanTable):
    cluster: str
    queue: QueueState
    stuck: tuple[StuckConsumer, ...]
    healthy: int  # consumers of the queue that are not stuck
    window_s: float

    COLUMNS = ("connection", "client id", "remote address", "protocol", "held", "acknowledged", "idle s")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        return [(c.connection_id, c.client_id, c.remote_address, c.protocol, c.held, c.acknowledged, round(c.idle_s))
                for c in sorted(self.stuck, key=lambda c: c.connection_id or "")]

    def digest(self) -> str:  # binds the connections to close, not the counts that move by themselves
        import hashlib
        return hashlib.sha256(" ".join(sorted(c.connection_id or "" for c in self.stuck)).encode()).hexdigest()

    @property
    def waiting(self) -> int:
        return self.queue.message_count - self.queue.delivering_count

    def summary(self) -> str:
        return (f"{len(self.stuck)} stuck consumer connection(s) of {self.queue.name} holding "
                f"{sum(c.held for c in self.stuck)} message(s) to close; {self.waiting} waiting, "
                f"{self.healthy} healthy consumer(s)")


def _sample(artemis: ArtemisManagement, queue: str) -> tuple[QueueState, dict[str, ConsumerInfo]]:
    return artemis.queue(queue), {c.consumer_id: c for c in artemis.consumers(queue)}


def observe_stuck(cluster: ArtemisCluster, params: DrainStuckParameters,
                  sleep=time.sleep) -> DrainPlan:
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
    return DrainPlan(cluster=cluster.name, queue=queue, stuck=tuple(stuck), healthy=len(second) - len(stuck),
                     window_s=params.window_s)


def close_connections(cluster: ArtemisCluster, plan: DrainPlan) -> dict[str, list[str]]:
    closed, gone = [], []
    with ArtemisManagement.from_cluster(cluster) as artemis:
        for consumer in plan.stuck:
            if consumer.connection_id is None:
                gone.append(consumer.consumer_id)
                continue
            artemis.close_connection(consumer.connection_id)
            closed.append(consumer.connection_id)
    return {"closed": closed, "already_gone": gone}


class DrainStuck(RunbookSteps[DrainStuckParameters, DrainPlan]):
    id = RUNBOOK_ID
    verify_attempts = 1  # verify is itself a measurement over verify_window_s

    def target(self, params: DrainStuckParameters) -> str:
        return f"{params.cluster}/{params.queue}"

    def observe(self, env: Env, params: DrainStuckParameters) -> DrainPlan:
        plan = observe_stuck(env.clusters.artemis_cluster(params.cluster), params)
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
        return DrainPlan(cluster=approved.cluster, queue=queue, stuck=stuck,
                         healthy=approved.healthy, window_s=approved.window_s)

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
                                    f"{sum(c.held for c in plan.stuck)} held message(s) go back to the queue",
                          lambda r: r)
        return {"queue_before": asdict(plan.queue), **(result or {})}

    def verify(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: Any) -> Verification:
        cluster = run.clusters.artemis_cluster(params.cluster)
        closed_sessions = {c.session_id for c in plan.stuck}
        with ArtemisManagement.from_cluster(cluster) as artemis:
            start = artemis.queue(params.queue)
            time.sleep(params.verify_window_s)
            end = artemis.queue(params.queue)
            left = [c for c in artemis.consumers(params.queue) if c.session_id in closed_sessions]
        acked = end.messages_acknowledged - start.messages_acknowledged
        data = {"acknowledged_in_window": acked, "message_count": [start.message_count, end.message_count],
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


STEPS = DrainStuck()
dry_run = STEPS.dry_run


artemis_drain_stuck = runbook_flow(
    STEPS, DrainStuckParameters,
    "Close the connections of Artemis consumers that hold deliveries and acknowledge nothing.")
