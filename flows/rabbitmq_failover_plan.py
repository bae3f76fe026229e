"""The plan of `rabbitmq-failover` / `rabbitmq-failback` (plain Python, no Prefect): which
definitions the destination lacks, which queues' backlogs move and how deep they were when planned,
and what the endpoint switch will change.

    plan = plan_move(params, clusters, direction="failover")
    plan.markdown(), plan.to_csv(), plan.digest()

The digest binds the direction, the clusters, the queue list, the definition set and the switch's
old and new value; not the depths, which move while the approver reads: they are shown as "at plan
time" and counted again when the move starts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote


from mq_runbooks.base.clusters import Clusters, RabbitCluster
from mq_runbooks.base.errors import BrokerError, ParameterError, PreconditionError, UnreachableError
from mq_runbooks.flows.rabbitmq_failover_params import RabbitFailoverParameters
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_definitions import Change, Definitions, compare, export_definitions, read_definitions
from mq_runbooks.integrations.rabbitmq_shovels import queue_depth
from mq_runbooks.flows.rabbitmq_stuck_plan import refuse_unknown_vhost
from mq_runbooks.flows.rabbitmq_switch import open_switch, value_before_failover
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, PlanTable, table_json


@dataclass(frozen=True)
class QueueBacklog:
    name: str
    depth_at_plan: int | None  # None: the source did not answer


@dataclass(frozen=True)
class MovePlan(PlanTable):
    """What a failover (primary -> standby) or failback (standby -> primary) will do."""

    direction: str
    source: str
    destination: str
    vhost: str
    source_reachable: bool
    definitions: Definitions | None
    changes: tuple[Change, ...]
    queues: tuple[QueueBacklog, ...]
    switch: str
    switch_old: str | None  # None: the switch held no value
    switch_new: str | None
    warnings: tuple[str, ...] = field(default=())

    @property
    def definitions_to_apply(self) -> list[Change]:
        return [c for c in self.changes if c.action != "present"]

    @property
    def messages_at_plan(self) -> int:
        return sum(q.depth_at_plan or 0 for q in self.queues)

    # -- the plan contract (mq_runbooks.kit.plans.Plan) ------------------------------------------
    COLUMNS = ("change", "kind", "name", "detail")
    # A row is named by what it changes, so a backlog that grew while the gate waited reads as its detail
    # moving ("orders detail 300 ... -> 345 ..."), not as one row gone and another new (the digest is its own).
    KEY_COLUMNS = ("change", "kind", "name")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        """What changes, in the order it is done: definitions (by kind and name), backlogs (by queue),
        the switch."""
        rows: list[tuple] = [(c.action, c.item.kind, c.item.shown()["name"], f"on {self.destination}")
                             for c in sorted(self.definitions_to_apply, key=lambda c: (c.item.kind, c.item.label))]
        if self.source_reachable:
            rows += [("move backlog", "queue", q.name, f"{q.depth_at_plan} message(s) at plan time")
                     for q in sorted(self.queues, key=lambda q: q.name)]
        if self.switch_old != self.switch_new:
            rows.append(("switch", "endpoint switch", self.switch,
                         f"{self.switch_old or '(no value)'} -> {self.switch_new}"))
        return rows

    def changes_anything(self) -> bool:
        """False when the destination has every definition, no backlog is to move and the switch
        already points at the destination (a failover already done)."""
        return bool(self.rows())

    def summary(self) -> str:
        return (f"{self.direction} of vhost {self.vhost} {self.source} -> {self.destination}: "
                f"{len(self.definitions_to_apply)} definition(s) to apply, {len(self.queues)} queue(s) with "
                f"{self.messages_at_plan} message(s) at plan time, switch {self.switch} "
                f"{self.switch_old or '(no value)'} -> {self.switch_new}")

    def digest(self) -> str:
        bound = {"direction": self.direction, "source": self.source, "destination": self.destination,
                 "vhost": self.vhost, "queues": [q.name for q in self.queues],
                 "definitions": self.definitions.digest() if self.definitions else None,
                 "switch": [self.switch, self.switch_old, self.switch_new]}
        return hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()

    def to_csv(self) -> str:
        return "queue,depth_at_plan\n" + "".join(f"{q.name},{'' if q.depth_at_plan is None else q.depth_at_plan}\n"
                                                 for q in self.queues)

    def to_json(self) -> dict[str, Any]:
        return {
            **table_json(self),
            "direction": self.direction, "source": self.source, "destination": self.destination,
            "vhost": self.vhost, "source_reachable": self.source_reachable,
            "definitions": [dict(c.item.shown(), action=c.action) for c in self.changes],
            "users": list(self.definitions.users) if self.definitions else [],
            "queues": [{"name": q.name, "depth_at_plan": q.depth_at_plan} for q in self.queues],
            "messages_at_plan": self.messages_at_plan,
            "switch": {"name": self.switch, "old": self.switch_old, "new": self.switch_new},
            "warnings": list(self.warnings),
        }

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        lines = [f"**RabbitMQ {self.direction}** of vhost `{self.vhost}`: `{self.source}` -> `{self.destination}`.", ""]
        if self.definitions is None:
            lines.append("**Definitions**: not copied.")
        else:
            apply = self.definitions_to_apply
            lines.append(f"**Definitions**: {len(apply)} to create or update on `{self.destination}`, "
                         f"{len(self.changes) - len(apply)} already there"
                         + (f"; users: {', '.join(self.definitions.users)}" if self.definitions.users else "") + ".")
            lines += [f"- {c.action} {c.item.label}" for c in apply[:rows]]
            if len(apply) > rows:
                lines.append(f"- ... and {len(apply) - rows} more (`runbook plan ... --json` lists all)")
        lines += ["", f"**Backlog**: {len(self.queues)} queue(s), **{self.messages_at_plan}** message(s) at plan "
                      "time (depths keep moving; they are counted again when the move starts).", "",
                  "| queue | depth at plan time |", "|---|---:|"]
        for queue in self.queues[:rows]:
            lines.append(f"| {queue.name} | {'unknown' if queue.depth_at_plan is None else queue.depth_at_plan} |")
        if len(self.queues) > rows:
            lines.append(f"\n... and {len(self.queues) - rows} more queue(s).")
        lines += ["", f"**Switch** `{self.switch}`: `{self.switch_old or '(no value)'}` -> `{self.switch_new}`."]
        lines += [f"\n> WARN {warning}" for warning in self.warnings]
        return "\n".join(lines)


def clusters_for(params: RabbitFailoverParameters, clusters: Clusters, direction: str
                 ) -> tuple[RabbitCluster, RabbitCluster]:
    """(source, destination): primary -> standby for a failover, the reverse for a failback."""
    primary = clusters.rabbit_cluster(params.cluster)
    if params.standby is not None:
        standby = clusters.rabbit_cluster(params.standby)
    else:
        named = [c for c in clusters.rabbitmq.values() if c.standby_of == primary.name]
        if len(named) != 1:
            found = ", ".join(c.name for c in named) or "none"
            raise ParameterError(f"rabbitmq-{direction}", [("standby", f"give it: {len(named)} cluster(s) have "
                                                                       f"standby_of: {primary.name} ({found})")])
        standby = named[0]
    return (primary, standby) if direction == "failover" else (standby, primary)


def plan_move(params: RabbitFailoverParameters, clusters: Clusters, direction: str) -> MovePlan:
    """Observe both clusters and the switch, and compute the plan (nothing is changed).

    ParameterError for a queue that the source does not have; PreconditionError (with the reason)
    when the destination does not answer, or lacks a queue and definitions are not copied.
    """
    runbook = f"rabbitmq-{direction}"
    source, destination = clusters_for(params, clusters, direction)
    switch = open_switch(clusters, params.switch, runbook)
    with RabbitManagement.from_cluster(destination) as target:
        try:
            target.overview()
        except BrokerError as exc:
            raise PreconditionError(f"the destination {destination.name} cannot take the clients: {exc}") from None
        warnings: list[str] = []
        try:
            with RabbitManagement.from_cluster(source) as origin:
                definitions, queues = _observe_source(origin, source, params, runbook)
            reachable = True
        except UnreachableError as exc:
            reachable, definitions = False, None
            queues = [QueueBacklog(name, None) for name in params.queues]
            warnings.append(f"the source {source.name} does not answer ({exc}): definitions are not copied and no "
                            "backlog moves; messages on it stay there until it returns (fail back to collect them)")
        changes = compare(definitions, read_definitions(target, [params.vhost])) if definitions else []
        if reachable and not params.copy_definitions:
            present = {q["name"] for q in _queues_of(target, params.vhost)}
            missing = [q.name for q in queues if q.name not in present]
            if missing:
                raise PreconditionError(f"{destination.name} has no queue(s) {', '.join(missing)} in vhost "
                                        f"{params.vhost!r}: pass copy_definitions=true or declare them there")
    old = switch.current()
    if direction == "failback" and params.failover_run:
        new = value_before_failover(params.failover_run, params.switch, runbook)
    else:
        new = switch.value_for(destination.name)
    if not reachable:
        warnings.append("the backlog at risk is unknown while the source does not answer")
    return MovePlan(direction, source.name, destination.name, params.vhost, reachable, definitions,
                    tuple(changes), tuple(queues), params.switch, old, new, tuple(warnings))


def _queues_of(rabbit: RabbitManagement, vhost: str) -> list[dict[str, Any]]:
    try:
        return rabbit.get_json(f"/api/queues/{quote(vhost, safe='')}")
    except BrokerError:
        return []  # no such vhost there (yet)


def _observe_source(origin: RabbitManagement, source: RabbitCluster, params: RabbitFailoverParameters,
                    runbook: str) -> tuple[Definitions | None, list[QueueBacklog]]:
    refuse_unknown_vhost(origin, params.vhost, source.name, runbook)
    listed = {q["name"]: q for q in origin.get_json(f"/api/queues/{quote(params.vhost, safe='')}",
                                                    not_found=f"vhost {params.vhost!r} does not exist")}
    unknown = [name for name in params.queues if name not in listed]
    if unknown:
        shown = ", ".join(sorted(listed)[:20]) or "none"
        raise ParameterError(runbook, [("queues", f"{name!r} is not a queue in vhost {params.vhost!r} on "
                                                  f"{source.name} (queues there: {shown})") for name in unknown])
    amqp_url = source.amqp_url.get_secret_value()
    names = params.queues or sorted(name for name, q in listed.items() if not q.get("exclusive"))
    depths = {name: queue_depth(amqp_url, params.vhost, name) for name in names}
    queues = [QueueBacklog(name, depth) for name, depth in depths.items() if params.queues or depth > 0]
    definitions = None
    if params.copy_definitions:
        definitions = export_definitions(origin, [params.vhost], include_users=params.include_users)
    return definitions, queues


__all__ = ["MovePlan", "QueueBacklog", "RabbitFailoverParameters", "clusters_for", "plan_move"]
