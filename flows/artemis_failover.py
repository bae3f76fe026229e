"""Runbooks `artemis-failover` and `artemis-failback`: hand an Artemis primary over to its replicating
backup (or, failing back, the backup over to the primary that runs again as its backup), point the
clients' endpoint switch at the broker that took over, and prove it with a canary through the switch:

    observe (both brokers' HA state, the switch) -> plan (fail over or back, switch, canary)
      refused when the broker taking over is not a backup in sync, unless accept_at_risk (the plan
      counts the messages at risk); refused when it does not answer
    snapshot (the switch's value) -> force-failover (the active broker's process stops; wait until the
    other is active) -> switch -> canary (AMQP: one message sent and received through the switch)
    -> verify (the broker that took over is active, the switch points at it, the canary came back)
    restore (on failure after switching, or `runbook restore RUN`): the switch goes back to its value
    before; the hand-over itself is not undone (cannot_undo: the other runbook hands back)

Failing back: start the old primary again (`dev/stack up artemis-primary` on the local stack): with
check-for-active-server it finds the active backup and syncs from it as its backup; artemis-failback
then hands over to it the same way. The broker that handed over has stopped: start it again to have
a backup (it syncs as one).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.base.clusters import ArtemisCluster, Clusters
from mq_runbooks.base.errors import BrokerError, ParameterError, UnreachableError
from mq_runbooks.flows.switching import open_switch
from mq_runbooks.integrations.artemis import ArtemisManagement, BrokerState
from mq_runbooks.integrations.artemis_amqp import AmqpSession
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem

__all__ = ["FailoverParameters", "artemis_failback", "artemis_failover", "dry_run", "failback_dry_run"]

RUNBOOK_ID = "artemis-failover"
FAILBACK_ID = "artemis-failback"
CANARY_QUEUE = "mq-runbooks.canary"


class FailoverParameters(BaseModel):
    """Parameters of artemis-failover and artemis-failback."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="the Artemis primary named in clusters.yaml (its backup has standby_of: it)")
    switch: str = Field("artemis-clients", min_length=1, description="the endpoint switch the clients read")
    accept_at_risk: bool = Field(False, description="hand over even though the broker taking over is not in sync")
    active_timeout_s: float = Field(60, gt=0, le=600, description="how long the broker taking over may take to be active")


@dataclass(frozen=True)
class FailoverPlan(PlanTable):
    verb: str  # "fail over" or "fail back"
    source: str  # the broker that hands over (active now)
    target: str  # the broker that takes over
    source_state: BrokerState | None  # None: it does not answer
    target_state: BrokerState | None
    switch: str
    switch_now: str | None
    switch_to: str
    at_risk: int  # messages on the primary when the backup is not in sync

    COLUMNS = ("step", "what", "now", "after")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        rows = []
        if self.target_state is None or not self.target_state.active:
            rows.append((self.verb, f"{self.source} -> {self.target}",
                         self.source_state.role if self.source_state else "not answering", f"{self.target} active"))
        if self.switch_now != self.switch_to:
            rows.append(("switch", self.switch, self.switch_now, self.switch_to))
        if rows:
            rows.append(("canary", f"AMQP through {self.switch_to}", "", "sent and received"))
        return rows

    @property
    def in_sync(self) -> bool:
        return self.target_state is not None and (self.target_state.active or self.target_state.replica_sync)

    def summary(self) -> str:
        if not self.rows():
            return f"{self.target} is active and {self.switch} points at it already"
        if self.target_state is None:
            return f"{self.verb} {self.source} to {self.target}: {self.target} does not answer"
        sync = "in sync" if self.in_sync else f"NOT in sync ({self.at_risk} message(s) on {self.source} at risk)"
        return f"{self.verb} {self.source} to {self.target} ({sync}) and switch {self.switch} to it"


def standby_of(clusters: Clusters, primary: str) -> ArtemisCluster:
    found = [c for c in clusters.artemis.values() if c.standby_of == primary]
    if not found:
        raise ParameterError(RUNBOOK_ID, [("cluster", f"no artemis cluster in clusters.yaml has standby_of: {primary} "
                                                      "(its replicating backup)")])
    return found[0]


def _state(cluster: ArtemisCluster) -> BrokerState | None:
    try:
        with ArtemisManagement.from_cluster(cluster) as artemis:
            return artemis.broker()
    except UnreachableError:
        return None


def observe_failover(clusters: Clusters, params: FailoverParameters, back: bool = False) -> FailoverPlan:
    runbook = FAILBACK_ID if back else RUNBOOK_ID
    primary = clusters.artemis_cluster(params.cluster)
    backup = standby_of(clusters, params.cluster)
    source, target = (backup, primary) if back else (primary, backup)
    switch = open_switch(clusters, params.switch, runbook)
    source_state, target_state, at_risk = _state(source), _state(target), 0
    if source_state is not None and source_state.active and not source_state.replica_sync:
        with ArtemisManagement.from_cluster(source) as artemis:
            at_risk = sum(artemis.queue(q).message_count for q in artemis.queue_names())
    return FailoverPlan(verb="fail back" if back else "fail over", source=source.name, target=target.name,
                        source_state=source_state, target_state=target_state, switch=switch.name,
                        switch_now=switch.current(), switch_to=switch.value_for(target.name), at_risk=at_risk)


def force_failover(source: ArtemisCluster, backup: ArtemisCluster, timeout_s: float) -> dict[str, Any]:
    """Artemis' forceFailover on the active broker (it stops), then wait until `backup` is active."""
    with ArtemisManagement.from_cluster(source) as artemis:
        artemis.force_failover()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with ArtemisManagement.from_cluster(backup) as artemis:
                state = artemis.broker()
            if state.active:
                return {"backup": backup.name, "role": state.role}
        except UnreachableError:
            pass
        if time.monotonic() > deadline:
            raise BrokerError(f"{backup.name} did not become active within {timeout_s:g}s after the failover")
        time.sleep(0.5)


def canary(backup: ArtemisCluster, endpoint: str, run_id: str) -> dict[str, Any]:
    """One message sent and received over AMQP through `endpoint` (what the switch now says)."""
    marker = f"{run_id}-{uuid.uuid4().hex[:8]}"
    with AmqpSession.from_cluster(backup, "mq-runbooks canary", endpoint=endpoint) as amqp:
        amqp.send(CANARY_QUEUE, "canary", {"canary": marker})
        got = amqp.receive(CANARY_QUEUE, 1, timeout_s=10, selector=f"canary = '{marker}'")
    if not got:
        raise BrokerError(f"the canary sent through {endpoint} did not come back within 10s")
    return {"endpoint": endpoint, "canary": marker, "received": True}


class Failover(RunbookSteps[FailoverParameters, FailoverPlan]):
    id = RUNBOOK_ID
    back: bool = False
    cannot_undo = ("the hand-over: the broker that took over stays active and the one that handed over stays "
                   "stopped, so the switch put back points the clients at a stopped broker until it is started again "
                   "(it syncs as the backup) and handed back with artemis-failback",
                   "the canary message (sent and consumed)")

    def target(self, params: FailoverParameters) -> str:
        return (f"{params.cluster}'s backup -> {params.cluster}" if self.back else f"{params.cluster} -> its backup") \
            + f" (switch {params.switch})"

    def observe(self, env: Env, params: FailoverParameters) -> FailoverPlan:
        plan = observe_failover(env.clusters, params, self.back)
        if isinstance(env, Run):
            roles = "; ".join(f"{name}: {state.role if state else 'not answering'}" for name, state in
                              ((plan.source, plan.source_state), (plan.target, plan.target_state)))
            env.observed(f"{roles}; {plan.switch}: {plan.switch_now}")
        return plan

    def refusal(self, params: FailoverParameters, plan: FailoverPlan) -> str | None:
        if not plan.rows():
            return None
        if plan.target_state is None:
            start = " (start it again: it syncs from the active backup as its backup)" if self.back else ""
            return f"{plan.target} does not answer{start}"
        if not plan.in_sync and not params.accept_at_risk:
            return (f"{plan.target} is not in sync with {plan.source}: {plan.at_risk} message(s) would be at risk; "
                    f"run again with accept_at_risk=true to {plan.verb} anyway")
        return None

    def snapshot(self, run: Run, params: FailoverParameters, plan: FailoverPlan) -> Snapshot:
        return Snapshot(summary=f"switch {plan.switch} before: {plan.switch_now}",
                        data={"switch": plan.switch, "switch_old": plan.switch_now},
                        restore_command=f"the switch {plan.switch} back to {plan.switch_now!r} (the hand-over itself "
                                        f"is undone by {'artemis-failover' if self.back else 'artemis-failback'})")

    def act(self, run: Run, params: FailoverParameters, plan: FailoverPlan) -> dict[str, Any]:
        source = run.clusters.artemis_cluster(plan.source)
        target = run.clusters.artemis_cluster(plan.target)
        if plan.target_state is None or not plan.target_state.active:
            done = "failed back" if self.back else "failed over"
            run.step("force-failover", lambda: force_failover(source, target, params.active_timeout_s),
                     lambda r: f"{done}: {plan.source} stopped, {r['backup']} is {r['role']}", lambda r: r)
        switch = open_switch(run.clusters, params.switch, self.id)
        if plan.switch_now != plan.switch_to:
            run.step("switch", lambda: switch.switch(plan.switch_to),
                     lambda old: f"switch {plan.switch}: {old} -> {plan.switch_to}",
                     lambda old: {"switch": plan.switch, "switch_old": old, "switch_new": plan.switch_to})
        return run.step("canary", lambda: canary(target, switch.current() or plan.switch_to, run.id),
                        lambda r: f"canary sent and received through {r['endpoint']}", lambda r: r) or {}

    def verify(self, run: Run, params: FailoverParameters, plan: FailoverPlan, result: Any) -> Verification:
        with ArtemisManagement.from_cluster(run.clusters.artemis_cluster(plan.target)) as artemis:
            state = artemis.broker()
        current = open_switch(run.clusters, params.switch, self.id).current()
        data = {"target_role": state.role, "switch": current}
        if not state.active:
            return Verification(ok=False, summary=f"{plan.target} is not active ({state.role})", data=data)
        if current != plan.switch_to:
            return Verification(ok=False, summary=f"{plan.switch} holds {current!r}, not {plan.switch_to!r}", data=data)
        return Verification(summary=f"{plan.target} is active; {plan.switch} points at it; the canary came back",
                            data=data)

    def restore(self, run: Run, params: FailoverParameters, plan: FailoverPlan | None, snapshot: Snapshot) -> Restore:
        """The switch back to the snapshot's value, after a failure or in a restore run (`plan` None)."""
        switch = open_switch(run.clusters, params.switch, self.id)
        old = snapshot.data.get("switch_old")
        switch.restore(old)
        if plan is None:
            return Restore(summary=f"switch {params.switch} restored to {old!r}; the hand-over stays (see cannot be "
                                   "undone)", restored=True, restore_command=snapshot.restore_command,
                           data={"switch": params.switch, "switch_old": old})
        return Restore(summary=f"switch {plan.switch} restored to {old!r}; {plan.target} stays active ({plan.source} "
                               "stopped)", restored=True)

    def restore_items(self, env: Env, params: FailoverParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        """The switch: its value before the run, now, and the one the run set (its switch step)."""
        switched = next((e for e in reversed(original) if e.kind == "action" and e.data.get("step") == "switch"), None)
        return [RestoreItem(f"switch {params.switch}", saved=snapshot.data.get("switch_old"),
                            now=open_switch(env.clusters, params.switch, self.id).current(),
                            left=switched.data.get("switch_new") if switched is not None else None)]


class Failback(Failover):
    id = FAILBACK_ID
    back = True
    cannot_undo = ("the hand-back: the primary stays active and the backup stays stopped, so the switch put back "
                   "points the clients at a stopped broker until it is started again (it syncs as the backup) and "
                   "handed over with artemis-failover",
                   "the canary message (sent and consumed)")


STEPS = Failover()
dry_run = STEPS.dry_run
FAILBACK_STEPS = Failback()
failback_dry_run = FAILBACK_STEPS.dry_run


artemis_failover = runbook_flow(
    STEPS, FailoverParameters,
    "Fail an Artemis primary over to its replicating backup and switch the clients to it.")


artemis_failback = runbook_flow(
    FAILBACK_STEPS, FailoverParameters,
    "Hand an Artemis backup that took over back to its primary (running again as its backup), and switch back.")
