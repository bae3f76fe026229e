"""Runbook `artemis-failover`: hand an Artemis primary over to its replicating backup, point the clients'
endpoint switch at the backup, and prove it with a canary through the switched endpoint:

    observe (the primary's and the backup's HA state, the switch) -> plan (fail over, switch, canary)
      refused when the backup is not in sync, unless accept_at_risk (the plan counts the messages at risk)
    snapshot (the switch's value) -> force-failover (the primary stops; wait until the backup is active)
    -> switch -> canary (AMQP: send and receive one message through the switched endpoint)
    -> verify (the backup is active, the switch points at it, the canary came back)
    restore (on failure after switching): the switch goes back to its value before

A failover cannot be undone by this runbook: the primary process stops (Artemis' forceFailover), and
failing back means starting it again as its backup's backup.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.base.clusters import ArtemisCluster, Clusters
from mq_runbooks.base.errors import BrokerError, ParameterError, UnreachableError
from mq_runbooks.flows.switching import open_switch
from mq_runbooks.integrations.artemis import ArtemisManagement, BrokerState
from mq_runbooks.integrations.artemis_amqp import AmqpSession
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, drive
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Restore, Snapshot, Verification

__all__ = ["FailoverParameters", "artemis_failover", "dry_run"]

RUNBOOK_ID = "artemis-failover"
CANARY_QUEUE = "mq-runbooks.canary"


class FailoverParameters(BaseModel):
    """Parameters of artemis-failover."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="the Artemis primary named in clusters.yaml (its backup has standby_of: it)")
    switch: str = Field("artemis-clients", min_length=1, description="the endpoint switch the clients read")
    accept_at_risk: bool = Field(False, description="fail over even though the backup is not in sync")
    active_timeout_s: float = Field(60, gt=0, le=600, description="how long the backup may take to become active")


@dataclass(frozen=True)
class FailoverPlan(PlanTable):
    primary: str
    backup: str
    primary_state: BrokerState | None  # None: it does not answer
    backup_state: BrokerState
    switch: str
    switch_now: str | None
    switch_to: str
    at_risk: int  # messages on the primary when the backup is not in sync

    COLUMNS = ("step", "what", "now", "after")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        rows = []
        if not self.backup_state.active:
            rows.append(("fail over", f"{self.primary} -> {self.backup}",
                         self.primary_state.role if self.primary_state else "not answering", "backup active"))
        if self.switch_now != self.switch_to:
            rows.append(("switch", self.switch, self.switch_now, self.switch_to))
        if rows:
            rows.append(("canary", f"AMQP through {self.switch_to}", "", "sent and received"))
        return rows

    @property
    def in_sync(self) -> bool:
        return self.backup_state.active or self.backup_state.replica_sync

    def summary(self) -> str:
        if not self.rows():
            return f"{self.backup} is active and {self.switch} points at it already"
        sync = "in sync" if self.in_sync else f"NOT in sync ({self.at_risk} message(s) on the primary at risk)"
        return f"fail over {self.primary} to its backup {self.backup} ({sync}) and switch {self.switch} to it"


def standby_of(clusters: Clusters, primary: str) -> ArtemisCluster:
    found = [c for c in clusters.artemis.values() if c.standby_of == primary]
    if not found:
        raise ParameterError(RUNBOOK_ID, [("cluster", f"no artemis cluster in clusters.yaml has standby_of: {primary} "
                                                      "(its replicating backup)")])
    return found[0]


def observe_failover(clusters: Clusters, params: FailoverParameters) -> FailoverPlan:
    primary = clusters.artemis_cluster(params.cluster)
    backup = standby_of(clusters, params.cluster)
    switch = open_switch(clusters, params.switch, RUNBOOK_ID)
    primary_state, at_risk = None, 0
    try:
        with ArtemisManagement.from_cluster(primary) as artemis:
            primary_state = artemis.broker()
            if not primary_state.replica_sync:
                at_risk = sum(artemis.queue(q).message_count for q in artemis.queue_names())
    except UnreachableError:
        pass  # a dead primary: the backup may have taken over by itself
    with ArtemisManagement.from_cluster(backup) as artemis:
        backup_state = artemis.broker()
    return FailoverPlan(primary=primary.name, backup=backup.name, primary_state=primary_state,
                        backup_state=backup_state, switch=switch.name, switch_now=switch.current(),
                        switch_to=switch.value_for(backup.name), at_risk=at_risk)


def force_failover(primary: ArtemisCluster, backup: ArtemisCluster, timeout_s: float) -> dict[str, Any]:
    """Artemis' forceFailover on the primary (it stops), then wait until the backup is active."""
    with ArtemisManagement.from_cluster(primary) as artemis:
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
    with AmqpSession.from_cluster(backup, f"mq-runbooks {RUNBOOK_ID} canary", endpoint=endpoint) as amqp:
        amqp.send(CANARY_QUEUE, "canary", {"canary": marker})
        got = amqp.receive(CANARY_QUEUE, 1, timeout_s=10, selector=f"canary = '{marker}'")
    if not got:
        raise BrokerError(f"the canary sent through {endpoint} did not come back within 10s")
    return {"endpoint": endpoint, "canary": marker, "received": True}


class Failover(RunbookSteps[FailoverParameters, FailoverPlan]):
    id = RUNBOOK_ID

    def target(self, params: FailoverParameters) -> str:
        return f"{params.cluster} -> its backup (switch {params.switch})"

    def observe(self, env: Env, params: FailoverParameters) -> FailoverPlan:
        plan = observe_failover(env.clusters, params)
        if isinstance(env, Run):
            env.observed(f"{plan.primary}: {plan.primary_state.role if plan.primary_state else 'not answering'}; "
                         f"{plan.backup}: {plan.backup_state.role}; {plan.switch}: {plan.switch_now}")
        return plan

    def refusal(self, params: FailoverParameters, plan: FailoverPlan) -> str | None:
        if not plan.in_sync and not params.accept_at_risk:
            return (f"{plan.backup} is not in sync with {plan.primary}: {plan.at_risk} message(s) would be at risk; "
                    "run again with accept_at_risk=true to fail over anyway")
        return None

    def snapshot(self, run: Run, params: FailoverParameters, plan: FailoverPlan) -> Snapshot:
        return Snapshot(summary=f"switch {plan.switch} before: {plan.switch_now}",
                        data={"switch": plan.switch, "switch_old": plan.switch_now},
                        restore_command=f"the switch {plan.switch} back to {plan.switch_now!r} (the failover itself "
                                        f"is undone by failing back)")

    def act(self, run: Run, params: FailoverParameters, plan: FailoverPlan) -> dict[str, Any]:
        primary = run.clusters.artemis_cluster(params.cluster)
        backup = run.clusters.artemis_cluster(plan.backup)
        if not plan.backup_state.active:
            run.step("force-failover", lambda: force_failover(primary, backup, params.active_timeout_s),
                     lambda r: f"failed over: {plan.primary} stopped, {r['backup']} is {r['role']}", lambda r: r)
        switch = open_switch(run.clusters, params.switch, RUNBOOK_ID)
        if plan.switch_now != plan.switch_to:
            run.step("switch", lambda: switch.switch(plan.switch_to),
                     lambda old: f"switch {plan.switch}: {old} -> {plan.switch_to}",
                     lambda old: {"switch": plan.switch, "switch_old": old, "switch_new": plan.switch_to})
        if run.fault == "canary":
            raise BrokerError("injected fault: the canary failed")
        return run.step("canary", lambda: canary(backup, switch.current() or plan.switch_to, run.id),
                        lambda r: f"canary sent and received through {r['endpoint']}", lambda r: r) or {}

    def verify(self, run: Run, params: FailoverParameters, plan: FailoverPlan, result: Any) -> Verification:
        with ArtemisManagement.from_cluster(run.clusters.artemis_cluster(plan.backup)) as artemis:
            state = artemis.broker()
        current = open_switch(run.clusters, params.switch, RUNBOOK_ID).current()
        data = {"backup_role": state.role, "switch": current}
        if not state.active:
            return Verification(ok=False, summary=f"{plan.backup} is not active ({state.role})", data=data)
        if current != plan.switch_to:
            return Verification(ok=False, summary=f"{plan.switch} holds {current!r}, not {plan.switch_to!r}", data=data)
        return Verification(summary=f"{plan.backup} is active; {plan.switch} points at it; the canary came back",
                            data=data)

    def restore(self, run: Run, params: FailoverParameters, plan: FailoverPlan, snapshot: Snapshot) -> Restore:
        switch = open_switch(run.clusters, params.switch, RUNBOOK_ID)
        old = snapshot.data.get("switch_old")
        switch.restore(old)
        return Restore(summary=f"switch {plan.switch} restored to {old!r}; {plan.backup} stays active (the primary "
                               "stopped: fail back to return to it)", restored=True)


STEPS = Failover()
dry_run = STEPS.dry_run


@flow(name=RUNBOOK_ID, persist_result=False)
def artemis_failover(params: FailoverParameters, requested_by: str = "unknown", trigger: dict[str, Any] | None = None):
    """Fail an Artemis primary over to its replicating backup and switch the clients to it."""
    return drive(STEPS, params, requested_by, trigger)
