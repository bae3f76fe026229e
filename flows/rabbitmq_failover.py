"""Runbooks `rabbitmq-failover` (primary -> standby) and `rabbitmq-failback` (standby -> primary). The
driver (mq_runbooks.kit.driver) gives them the lock, the gate, the re-plan, the restore on failure and
the outcome; this module is their own logic:

    observe -> plan -> snapshot (the switch's value, the definitions and depths seen)
            -> copy definitions and read them back -> move the backlogs (dynamic shovels), counted
            -> switch clients -> verify: a canary through the switched endpoint
    a failure after the switch puts the switch back; a move that stops part-way reports exactly what
    moved per queue, and the clients are not switched.

Nothing is deleted on either cluster: definitions are created or updated, messages are moved by
shovels that ack at the source only after the destination confirmed them.
"""
from __future__ import annotations

import shlex
from typing import Any, ClassVar

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mq_runbooks.base.clusters import RabbitCluster
from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.flows.rabbitmq_failover_plan import MovePlan, RabbitFailoverParameters, clusters_for, plan_move
from mq_runbooks.flows.rabbitmq_switch import canary_round_trip, open_switch
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_amqp import vhost_uri
from mq_runbooks.integrations.rabbitmq_definitions import import_definitions, verify_definitions
from mq_runbooks.integrations.rabbitmq_shovels import (
    QueueMove, delete_shovel, local_uri, queue_depth, start_shovel, wait_for_shovels,
)
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem

__all__ = ["dry_run", "dry_run_failback", "move_backlog", "rabbitmq_failback", "rabbitmq_failover"]


# --- the changes (plain functions; each runs inside a fenced step) -------------------------------

def copy_definitions(destination: RabbitCluster, plan: MovePlan) -> dict[str, Any]:
    """Import the definition set into the destination and read it back; BrokerError listing what is
    missing or different there."""
    assert plan.definitions is not None
    with RabbitManagement.from_cluster(destination) as target:
        import_definitions(target, plan.definitions)
        problems = verify_definitions(target, plan.definitions)
    if problems:
        raise BrokerError(f"definitions on {destination.name} after the import: " + "; ".join(problems[:20]))
    return {"applied": len(plan.definitions_to_apply), "verified": len(plan.definitions.items),
            "users": list(plan.definitions.users)}


def move_backlog(source: RabbitCluster, destination: RabbitCluster, plan: MovePlan, params: RabbitFailoverParameters,
                 run_id: str) -> list[dict[str, Any]]:
    """Shovel every planned queue from source to destination, wait, and count per queue: seen at plan
    time, at the start of the move, arrived on the destination (exact), left on the source."""
    source_url, destination_url = source.amqp_url.get_secret_value(), destination.amqp_url.get_secret_value()
    vhost = plan.vhost
    moves = [QueueMove(vhost, q.name, f"runbook-{plan.direction}-{q.name}-{run_id[:8]}") for q in plan.queues]
    before = {m.queue: queue_depth(destination_url, vhost, m.queue) for m in moves}
    at_start = {m.queue: queue_depth(source_url, vhost, m.queue) for m in moves}
    with RabbitManagement.from_cluster(destination) as host:
        try:
            for move in moves:
                start_shovel(host, move, src_uri=vhost_uri(source_url, vhost), dest_uri=local_uri(vhost),
                             prefetch=params.shovel_prefetch)
            outcomes = wait_for_shovels(
                host, moves, timeout_s=params.move_timeout_s, stall_s=params.stall_s,
                progress=lambda: sum(queue_depth(destination_url, vhost, m.queue) for m in moves))
        finally:  # an interrupted wait must not leave shovels moving behind the run's back
            for move in moves:
                delete_shovel(host, move)
    rows = []
    for backlog, move in zip(plan.queues, moves):
        rows.append({"queue": move.queue, "seen_at_plan": backlog.depth_at_plan, "at_start": at_start[move.queue],
                     "moved": queue_depth(destination_url, vhost, move.queue) - before[move.queue],
                     "left_on_source": _depth_or_none(source_url, vhost, move.queue),
                     "outcome": outcomes[move.queue]})
    return rows


def _depth_or_none(amqp_url: str, vhost: str, queue: str) -> int | None:
    try:
        return queue_depth(amqp_url, vhost, queue)
    except UnreachableError:
        return None


# --- the runbooks' steps (the driver does the rest) -----------------------------------------------

class _Move(RunbookSteps[RabbitFailoverParameters, MovePlan]):
    """Both directions; `direction` picks source and destination (plan_move, clusters_for)."""

    direction: ClassVar[str]
    reverse: ClassVar[str]  # the runbook that puts the switch back
    cannot_undo = ("the messages moved stay on the destination (the snapshot's restore command moves them back)",
                   "the definitions copied to the destination stay there")

    def target(self, params: RabbitFailoverParameters) -> str:
        return f"vhost {params.vhost} of {params.cluster} ({self.direction}, switch {params.switch})"

    def observe(self, env: Env, params: RabbitFailoverParameters) -> MovePlan:
        return plan_move(params, env.clusters, self.direction)

    def restore_command(self, run: Run, params: RabbitFailoverParameters) -> str:
        raise NotImplementedError

    def snapshot(self, run: Run, params: RabbitFailoverParameters, plan: MovePlan) -> Snapshot:
        """The switch's value before (what a restore puts back), and what was seen: the definitions
        the destination lacked and the queue depths at plan time."""
        depths = "".join(f"{q.name},{'' if q.depth_at_plan is None else q.depth_at_plan}\n" for q in plan.queues)
        return Snapshot(
            summary=f"switch {plan.switch} points at {plan.switch_old or '(no value)'}; "
                    f"{len(plan.queues)} queue(s) with {plan.messages_at_plan} message(s) on {plan.source} at plan "
                    f"time; {len(plan.definitions_to_apply)} definition(s) missing on {plan.destination}",
            csv="queue,depth_at_plan\n" + depths, restore_command=self.restore_command(run, params),
            data={"switch": plan.switch, "value": plan.switch_old, "source": plan.source,
                  "destination": plan.destination, "vhost": plan.vhost,
                  "queues": [{"name": q.name, "depth_at_plan": q.depth_at_plan} for q in plan.queues],
                  "definitions_to_apply": [c.item.label for c in plan.definitions_to_apply]})

    def act(self, run: Run, params: RabbitFailoverParameters, plan: MovePlan) -> dict[str, Any]:
        source, destination = clusters_for(params, run.clusters, self.direction)
        switch = open_switch(run.clusters, params.switch, self.id)
        if plan.definitions is not None:
            run.step("definitions", lambda: copy_definitions(destination, plan),
                     lambda r: f"imported {r['applied']} definition(s) into {destination.name}, "
                               f"{r['verified']} read back", lambda r: r)
        rows: list[dict[str, Any]] = []
        if plan.queues and plan.source_reachable:
            moved = run.step("move", lambda: move_backlog(source, destination, plan, params, run.id),
                             lambda rs: f"moved {_moved(rs)} message(s) to {destination.name} "
                                        f"({plan.messages_at_plan} seen at plan time)",
                             lambda rs: {"queues": rs, "moved": _moved(rs), "seen_at_plan": plan.messages_at_plan})
            rows = moved if moved is not None else _applied(run, "move").get("queues", [])
            incomplete = [r for r in rows if r["outcome"] != "done"]
            if incomplete:
                _report(plan, rows, None)
                raise BrokerError(_incomplete_move(plan, incomplete, params.shovel_prefetch))
        old = run.step("switch", lambda: switch.switch(plan.switch_new),
                       lambda old: f"switch {plan.switch}: {old} -> {plan.switch_new}",
                       lambda old: {"switch": plan.switch, "switch_old": old, "switch_new": plan.switch_new})
        if old is None and "switch" in run.applied_steps:
            old = _applied(run, "switch").get("switch_old")
        return {"queues": rows, "switch_old": old}

    def verify(self, run: Run, params: RabbitFailoverParameters, plan: MovePlan,
               result: dict[str, Any]) -> Verification:
        """A canary published and consumed through whatever the switch now points at."""
        counts = {"moved": _moved(result["queues"]), "seen_at_plan": plan.messages_at_plan, "queues": result["queues"]}
        _, destination = clusters_for(params, run.clusters, self.direction)
        endpoint = open_switch(run.clusters, params.switch, self.id).current()
        try:
            checked = canary_round_trip(endpoint, destination, plan.vhost, run.id)
        except BrokerError as exc:
            return Verification(ok=False, summary=f"canary through {endpoint} failed: {exc}", data=counts)
        return Verification(summary=f"canary published and consumed through {checked['endpoint']}",
                            data={**checked, **counts})

    def restore(self, run: Run, params: RabbitFailoverParameters, plan: MovePlan | None,
                snapshot: Snapshot) -> Restore | None:
        """Put the switch back when this run switched it; the definitions copied and the messages
        moved stay where they are (nothing is deleted): the restore command moves them back. In a
        restore run (`plan` None) the switch goes back to the snapshot's value."""
        if plan is None:
            old = snapshot.data["value"]
            open_switch(run.clusters, params.switch, self.id).restore(old)
            return Restore(summary=f"switch {params.switch} restored to {old}", restored=True,
                           restore_command=snapshot.restore_command, data={"switch": params.switch, "switch_old": old})
        if "switch" not in run.applied_steps:
            return None
        old = _applied(run, "switch").get("switch_old", snapshot.data.get("value"))
        open_switch(run.clusters, params.switch, self.id).restore(old)
        moved = _applied(run, "move").get("moved", 0)
        stays = (f"; the {moved} message(s) moved stay on {plan.destination} (`{snapshot.restore_command}` "
                 "moves them back)") if moved else ""
        return Restore(summary=f"switch {plan.switch} restored to {old}{stays}", restored=True,
                       restore_command=snapshot.restore_command, data={"switch": plan.switch, "switch_old": old})

    def restore_items(self, env: Env, params: RabbitFailoverParameters, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        """The switch: its value before the run, now, and the one the run set (its switch step's data)."""
        switched = next((e for e in reversed(original) if e.kind == "action" and e.data.get("step") == "switch"), None)
        return [RestoreItem(f"switch {params.switch}", saved=snapshot.data["value"],
                            now=open_switch(env.clusters, params.switch, self.id).current(),
                            left=switched.data.get("switch_new") if switched is not None else None)]

    def report(self, run: Run, params: RabbitFailoverParameters, plan: MovePlan, result: dict[str, Any]) -> None:
        _report(plan, result["queues"], result["switch_old"])

    def outcome(self, params: RabbitFailoverParameters, plan: MovePlan, result: dict[str, Any]) -> str:
        return (f"{plan.direction} to {plan.destination} done: {_moved(result['queues'])} message(s) moved "
                f"({plan.messages_at_plan} seen at plan time), switch {plan.switch} {result['switch_old']} -> "
                f"{plan.switch_new}")


def _command(runbook: str, params: RabbitFailoverParameters, **extra: str) -> str:
    values = {"cluster": params.cluster, **({"standby": params.standby} if params.standby else {}),
              "vhost": params.vhost, "switch": params.switch, **extra}
    return f"runbook run {runbook} " + " ".join(f"-p {shlex.quote(f'{k}={v}')}" for k, v in values.items())


class Failover(_Move):
    id = "rabbitmq-failover"
    direction = "failover"

    def restore_command(self, run: Run, params: RabbitFailoverParameters) -> str:
        # rabbitmq-failback reads the switch's old value from this run's journal (its snapshot).
        return _command("rabbitmq-failback", params, failover_run=run.id)


class Failback(_Move):
    id = "rabbitmq-failback"
    direction = "failback"

    def restore_command(self, run: Run, params: RabbitFailoverParameters) -> str:
        # Back to the standby: the failover sets the switch to the standby's value (and moves what
        # built up on the primary meanwhile).
        return _command("rabbitmq-failover", params)


def _moved(rows: list[dict[str, Any]]) -> int:
    return sum(r["moved"] for r in rows)


def _applied(run: Run, step: str) -> dict[str, Any]:
    """The data of the action `step` this run already recorded (a re-executed run skips the step)."""
    done = run.applied_steps.get(step)
    return done.data if done is not None else {}


def _incomplete_move(plan: MovePlan, incomplete: list[dict[str, Any]], prefetch: int) -> str:
    parts = [f"{r['queue']}: {r['moved']} arrived on {plan.destination}, "
             + (f"{r['left_on_source']} left on {plan.source}" if r["left_on_source"] is not None
                else f"the rest still on {plan.source}, which does not answer")
             + f" ({r['outcome']})" for r in incomplete]
    return (f"the backlog move stopped part-way; clients were NOT switched. {'; '.join(parts)}. Messages not "
            f"arrived were never acked at the source, so they are still there (persistent messages survive a "
            f"restart); up to {prefetch} per queue may be on both sides. Run again once {plan.source} answers.")


def _report(plan: MovePlan, rows: list[dict[str, Any]], switch_old: str | None) -> None:
    if rows:
        create_table_artifact(table=rows, description=f"rabbitmq-{plan.direction}: messages moved vs seen")
    switched = f"`{switch_old}` -> `{plan.switch_new}`" if switch_old is not None else "not switched"
    create_markdown_artifact(markdown=f"**{plan.direction}** `{plan.source}` -> `{plan.destination}`: "
                             f"{_moved(rows)} moved, {plan.messages_at_plan} seen at plan time; "
                             f"switch `{plan.switch}` {switched}.", description=f"rabbitmq-{plan.direction} report")


FAILOVER, FAILBACK = Failover(), Failback()
dry_run = FAILOVER.dry_run  # `runbook plan rabbitmq-failover` and the CLI's preflight
dry_run_failback = FAILBACK.dry_run


rabbitmq_failover = runbook_flow(
    FAILOVER, RabbitFailoverParameters,
    "Move a vhost's definitions and queue backlogs to the standby, then point clients at it.")


rabbitmq_failback = runbook_flow(
    FAILBACK, RabbitFailoverParameters,
    "Move them back to the primary and restore the clients' old endpoint.")
