"""Runbook `rabbitmq-drain-stuck`: close the connections of consumers that hold their prefetch and ack
nothing, so their messages go to the healthy consumers; park poison messages; optionally shovel the
backlog away. The driver (mq_runbooks.kit.driver) gives it the lock, the gate, the re-plan and the
outcome; this module is the runbook's own logic:

    observe (sampled over a window) -> the state before -> close -> park poison -> shovel
            -> verify (sampled: the queues make progress, or the run fails saying what changed)

Closing a connection cannot be undone, and loses nothing: RabbitMQ requeues what it held. Parking is
a confirmed move (mq_runbooks.integrations.rabbitmq_moves), so a failure part-way leaves every message in the
queue or in the parking queue, and the journal says exactly how many moved.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from prefect.artifacts import create_table_artifact

from mq_runbooks.base.clusters import RabbitCluster
from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.flows.rabbitmq_stuck_plan import RUNBOOK_ID, DrainPlan, DrainStuckParameters, plan_drain
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_moves import MoveReport, delivered_more_than, ensure_queue, move_messages
from mq_runbooks.integrations.rabbitmq_shovels import QueueMove, local_uri, queue_depth, shovel_state, start_shovel
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Snapshot, Verification

__all__ = ["DrainStuckParameters", "dry_run", "judge_progress", "rabbitmq_drain_stuck"]


def _amqp_url(cluster: RabbitCluster) -> str:
    return cluster.amqp_url.get_secret_value()


# --- the changes (plain functions; each runs inside a fenced step) -------------------------------

def close_connections(cluster: RabbitCluster, plan: DrainPlan, reason: str) -> dict[str, list[str]]:
    """Close each planned connection with `reason`; one that is already gone is reported, not an error."""
    closed, gone = [], []
    with RabbitManagement.from_cluster(cluster) as rabbit:
        for connection in plan.stuck:
            try:
                rabbit.close_connection(connection.connection_name, reason)
                closed.append(connection.connection_name)
            except BrokerError as exc:
                if "does not exist" not in str(exc):
                    raise
                gone.append(connection.connection_name)
    return {"closed": closed, "already_gone": gone}


def park_poison(cluster: RabbitCluster, plan: DrainPlan, queue: str, parking: str,
                run_id: str) -> tuple[MoveReport, bool]:
    """Move the messages of `queue` delivered more than poison_after times to `parking` (confirmed);
    and whether `parking` had to be created."""
    created = ensure_queue(_amqp_url(cluster), plan.vhost, parking)
    report = move_messages(
        _amqp_url(cluster), plan.vhost, queue, parking, select=delivered_more_than(plan.poison_after or 0),
        limit=plan.poison_scan, window=plan.poison_scan, idle_s=2.0, max_s=300.0,
        headers={"x-parked-from-queue": queue, "x-parked-by": f"{RUNBOOK_ID} {run_id}"},
        connection_name=f"mq-runbooks {RUNBOOK_ID} {run_id}",
    )
    return report, created


def start_backlog_shovel(cluster: RabbitCluster, plan: DrainPlan, run_id: str) -> dict[str, Any]:
    queue, destination = plan.queues[0].name, plan.backlog_to or ""
    ensure_queue(_amqp_url(cluster), plan.vhost, destination)
    move = QueueMove(vhost=plan.vhost, queue=queue, shovel=f"{RUNBOOK_ID}-{queue}-{run_id[:8]}",
                     dest_queue=destination)
    with RabbitManagement.from_cluster(cluster) as rabbit:
        start_shovel(rabbit, move, src_uri=local_uri(plan.vhost), dest_uri=local_uri(plan.vhost))
        return {"shovel": move.shovel, "from": queue, "to": destination, "state": shovel_state(rabbit, move)}


# --- verify: measure over a window, then judge ---------------------------------------------------

@dataclass(frozen=True)
class QueueProgress:
    """One queue over the verify window: what its remaining consumers acked, and its ready count."""

    queue: str
    ready_before: int  # at plan time
    unacked_before: int
    ready_at_start: int  # when the window opened (after acting)
    ready_after: int
    unacked_after: int
    consumers_after: int  # consumers left on it (not on a closed connection)
    acks: int  # by the consumers left on the queue, during the window

    @property
    def progressing(self) -> bool:
        return self.acks > 0 or self.ready_after == 0 or self.ready_after < self.ready_at_start


def measure(cluster: RabbitCluster, plan: DrainPlan, window_s: float) -> tuple[list[str], list[QueueProgress]]:
    """The planned connections still open, and over `window_s` how each queue acted on moves: its
    ready count read exactly over AMQP (the management statistics lag up to 5 s behind the close)
    and the acks of the consumers left on it."""
    closed = {c.connection_name for c in plan.stuck}
    acted = sorted(queues_acted_on(plan))
    with RabbitManagement.from_cluster(cluster) as rabbit:
        still_open = sorted(closed & {c.name for c in rabbit.connections()})
        consumed: dict[str, set[str]] = {}  # queue -> channels of the consumers left on it
        left: dict[str, int] = {}
        for consumer in rabbit.consumers(plan.vhost):
            # The statistics may still list the closed connections' consumers for a few seconds.
            if consumer.queue in acted and consumer.connection_name not in closed:
                consumed.setdefault(consumer.queue, set()).add(consumer.channel_name)
                left[consumer.queue] = left.get(consumer.queue, 0) + 1
        first_acks = _acks(rabbit, set().union(*consumed.values()) if consumed else set())
        first = _ready(cluster, plan.vhost, acted)
        time.sleep(window_s)
        last = _ready(cluster, plan.vhost, acted)
        last_acks = _acks(rabbit, set(first_acks))
        stats = {q.name: q for q in rabbit.queues(plan.vhost) if q.name in acted}
    before = {q.name: q for q in plan.queues}
    rows = []
    for name in acted:
        if first.get(name) is None or last.get(name) is None or name not in stats:
            continue  # deleted meanwhile
        acks = sum(last_acks.get(c, 0) - first_acks[c] for c in consumed.get(name, ()) if c in first_acks)
        rows.append(QueueProgress(name, before[name].messages_ready, before[name].messages_unacknowledged,
                                  first[name], last[name], stats[name].messages_unacknowledged,
                                  left.get(name, 0), acks))
    return still_open, rows


def _ready(cluster: RabbitCluster, vhost: str, queues: list[str]) -> dict[str, int | None]:
    """Each queue's ready count now, exactly; None for a queue that no longer exists."""
    ready: dict[str, int | None] = {}
    for name in queues:
        try:
            ready[name] = queue_depth(_amqp_url(cluster), vhost, name)
        except UnreachableError:
            raise
        except BrokerError:
            ready[name] = None
    return ready


def _acks(rabbit: RabbitManagement, channels: set[str]) -> dict[str, int]:
    return {c.name: c.acks for c in rabbit.channel_activity() if c.name in channels}


def queues_acted_on(plan: DrainPlan) -> set[str]:
    """The queues whose progress proves the drain worked: those of the closed connections, the swept
    ones and the one whose backlog is shovelled (every sampled queue when none of those is known)."""
    acted = {q for c in plan.stuck for q in c.queues} | {q for q, _ in plan.parking}
    if plan.backlog_to and plan.queues:
        acted.add(plan.queues[0].name)
    return acted or {q.name for q in plan.queues}


def judge_progress(plan: DrainPlan, still_open: list[str], rows: list[QueueProgress], window_s: float,
                   closed: int) -> Verification:
    """ok only when every queue acted on made progress over the window (its remaining consumers acked
    something, or it drained); otherwise say what changed and how to go on. Closed connections cannot
    be reopened, so there is nothing to restore."""
    data = {"queues": [{**asdict(r), "progressing": r.progressing} for r in rows], "window_s": window_s,
            "acks_by_remaining_consumers": sum(r.acks for r in rows), "closed_gone": sorted(
                {c.connection_name for c in plan.stuck} - set(still_open))}
    if still_open:
        return Verification(ok=False, summary=f"connection(s) still open after closing: {', '.join(still_open)}",
                            data=data)
    acted = queues_acted_on(plan)
    stalled = [r for r in rows if r.queue in acted and not r.progressing]
    shown = "; ".join([f"{r.queue}: remaining consumers acked {r.acks} in {window_s:g}s, ready "
                       f"{r.ready_before} -> {r.ready_after}, unacked {r.unacked_before} -> {r.unacked_after}"
                       for r in rows if r.queue in acted][:5])
    if not stalled:
        return Verification(summary=f"the queue(s) make progress: {shown}", data=data)
    advice = []
    for r in stalled:
        if r.consumers_after == 0:
            advice.append(f"{r.queue} has no consumer left: start healthy consumers")
        else:
            advice.append(f"{r.queue}'s {r.consumers_after} remaining consumer(s) acked nothing: they may be "
                          f"stuck too (run {RUNBOOK_ID} again once they have been idle for idle_threshold_s) or "
                          "failing on every message (try poison_after on a quorum queue)")
    requeued = (f"The {closed} closed connection(s) cannot be reopened (nothing to restore): their messages were "
                "requeued and wait in the queue" if closed else "No connection was closed")
    summary = (f"no progress over {window_s:g}s on {', '.join(r.queue for r in stalled)} ({shown}). {requeued}. "
               f"To go on: {'; '.join(advice)}; or move the backlog elsewhere with backlog_to=QUEUE.")
    return Verification(ok=False, summary=summary, data=data)


# --- the runbook's steps (the driver does the rest) -----------------------------------------------

class DrainStuck(RunbookSteps[DrainStuckParameters, DrainPlan]):
    id = RUNBOOK_ID
    verify_attempts = 1  # verify is itself a measurement over verify_window_s
    # No restore_items: nothing this runbook changes can be put back by a run, so `runbook restore` of
    # one of its runs is refused with these (kit/restore_plan.py not_restorable).
    cannot_undo = (
        "the connections it closed stay closed (a connection cannot be reopened: its consumers reconnect on their "
        "own, and RabbitMQ requeued every message they held)",
        "the poison messages it parked stay in the parking queue (shovel them back to their queue once fixed)",
        "a backlog shovel started with backlog_to keeps moving messages until deleted (rabbitmqctl delete_shovel "
        "NAME), and what it moved stays on the other queue")

    def target(self, params: DrainStuckParameters) -> str:
        return f"{params.cluster}{params.vhost}{'' if params.vhost.endswith('/') else '/'}{params.queue or '*'}"

    def observe(self, env: Env, params: DrainStuckParameters) -> DrainPlan:
        # The idle threshold is measured at each plan's own last sample, not pinned to the first plan:
        # pinned, a re-plan of the poison test dropped the approved stuck connection once on CI (the
        # channel's idle_since, as the management API reports it, moved), so the gate asked again.
        with RabbitManagement.from_cluster(env.clusters.rabbit_cluster(params.cluster)) as rabbit:
            plan = plan_drain(rabbit, params)
        if isinstance(env, Run):
            env.observed(_observed(plan), queues=[asdict(q) for q in plan.queues], samples=plan.samples,
                         window_s=plan.window_s)
        return plan

    def snapshot(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> None:
        # The state before, for the record. It is not restorable (a closed connection cannot be
        # reopened), so it is journalled here and not handed to the driver, which would offer to
        # restore it.
        journal.write(run.id, Snapshot(
            summary="state before acting (closing cannot be undone; it requeues, loses nothing)",
            data={"connections": [asdict(c) for c in plan.stuck], "queues": [asdict(q) for q in plan.queues]}))
        return None

    def act(self, run: Run, params: DrainStuckParameters, plan: DrainPlan) -> int:
        cluster = run.clusters.rabbit_cluster(params.cluster)
        closed = 0
        if plan.stuck:
            reason = (f"closed by mq-runbooks {RUNBOOK_ID} (run {run.id}): consumer held its prefetch and "
                      "acknowledged nothing; its messages are requeued")
            result = run.step("close-connections", lambda: close_connections(cluster, plan, reason),
                              lambda r: f"closed {len(r['closed'])} connection(s); their messages were requeued "
                              f"({plan.unacked_held} unacknowledged message(s) back in their queues)"
                              + (f"; {len(r['already_gone'])} had closed already" if r["already_gone"] else ""),
                              lambda r: {"reason": reason, **r})
            closed = len(result["closed"]) if result is not None else len(plan.stuck)
        for queue, parking in plan.parking:
            done = run.step(f"park-poison-{queue}", lambda: park_poison(cluster, plan, queue, parking, run.id),
                            lambda r: _parked(queue, parking, *r), lambda r: _parked_data(queue, parking, *r))
            if done is not None and done[0].error:
                raise BrokerError(f"parking poison messages of {queue} stopped after moving {done[0].moved}: "
                                  f"{done[0].error}")
        if plan.backlog_to:
            run.step("backlog-shovel", lambda: start_backlog_shovel(cluster, plan, run.id),
                     lambda s: f"started shovel {s['shovel']}: {s['from']} -> {s['to']}", lambda s: s)
        return closed

    def verify(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: int) -> Verification:
        still_open, rows = measure(run.clusters.rabbit_cluster(params.cluster), plan, params.verify_window_s)
        return judge_progress(plan, still_open, rows, params.verify_window_s, result or 0)

    def report(self, run: Run, params: DrainStuckParameters, plan: DrainPlan, result: int) -> None:
        verified = journal.last(journal.read(run.id), "verification")
        rows = verified.data.get("queues") if verified else None
        create_table_artifact(table=rows or [{"queue": "(none)"}],
                              description=f"{RUNBOOK_ID}: queues before and after ({params.verify_window_s:g}s window)")

    def outcome(self, params: DrainStuckParameters, plan: DrainPlan, result: int) -> str:
        return f"done: {plan.summary()}; the queue(s) make progress (verified over {params.verify_window_s:g}s)"


def _parked(queue: str, parking: str, report: MoveReport, created: bool) -> str:
    return (f"parked {report.moved} poison message(s) of {queue} in {parking}{' (created)' if created else ''} "
            f"({report.inspected} inspected, {report.returned} returned to the queue)")


def _parked_data(queue: str, parking: str, report: MoveReport, created: bool) -> dict[str, Any]:
    return {"queue": queue, "parking_queue": parking, "moved": report.moved, "inspected": report.inspected,
            "returned": report.returned, "in_flight": report.in_flight, "moved_ids": report.moved_ids[:1000],
            "error": report.error, "parking_created": created}


def _observed(plan: DrainPlan) -> str:
    queues = ", ".join(f"{q.name}: {q.messages_ready} ready, {q.messages_unacknowledged} unacked, "
                       f"{q.consumers} consumer(s)" for q in plan.queues[:5])
    return f"{len(plan.queues)} queue(s) sampled {plan.samples} times over {plan.window_s:g}s ({queues})"


STEPS = DrainStuck()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


rabbitmq_drain_stuck = runbook_flow(
    STEPS, DrainStuckParameters,
    "Unblock a queue whose consumers hold their prefetch and acknowledge nothing.")
