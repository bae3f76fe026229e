"""Runbook `kafka-failback`: move consumer groups and clients back from the MirrorMaker 2 standby to
the primary once it is healthy again.

Replication direction: the stack (and this runbook) needs only MM2 primary -> standby, the one that
was running before the failover; no standby -> primary flow is assumed. A group's position on the
standby is an offset of `<alias>.<topic>`; it goes back to `<topic>` on the primary through MM2's
offset syncs (`mm2-offset-syncs.<standby>.internal`, kept on the primary): from the newest sync at or
before the position, records were copied one for one. Each translated position is checked by
comparing the record there on both clusters (key, value, timestamp):

    exact       the records match: the group resumes on the primary exactly where it stopped
    estimate    no offset sync at or before it: by the timestamp of the standby record (may replay
                or skip records of the same millisecond); the approver sees it labelled
    mismatch    the records differ: refused (the topic was not copied one for one)

What failback does NOT move: records produced on the standby's own topics while failed over (no
standby -> primary replication); they are counted per partition and listed. Records the primary
holds that never reached the standby (the failover's messages at risk) are read by the group after
failback: counted as `delivered_late`. The switch gets back the value it had before the failover
(from that run's journal with failover_run=RUN, else the switch's configured value for the primary).

    observe + plan -> [gate] -> snapshot, commit on the primary, resume check, switch, canary
    (the driver, mq_runbooks.kit.driver, and flows/kafka_failover_steps.py, shared with kafka-failover)

Groups the standby has no committed offsets of (and no members) do not exist: missing targets,
refused before a run exists. A plan that changes nothing (no offset to commit, the switch already on
the primary) ends unchanged and never switches.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal
from uuid import UUID

from prefect.artifacts import create_table_artifact

from mq_runbooks.base.clusters import Clusters, KafkaCluster
from mq_runbooks.base.errors import BrokerError, ParameterError, PreconditionError
from mq_runbooks.flows.kafka_failback_params import KafkaFailbackParameters
from mq_runbooks.flows.kafka_failover_plan import failover_pair, require_reachable, switch_value
from mq_runbooks.flows.kafka_failover_steps import MoveAndSwitch
from mq_runbooks.flows.kafka_offsets import inactive_group
from mq_runbooks.flows.switching import open_switch
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.integrations.kafka_records import KafkaRecords
from mq_runbooks.integrations.mirrormaker import read_offset_syncs, upstream_of, upstream_topic
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, runbook_flow
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, table_json, table_markdown

RUNBOOK_ID = "kafka-failback"


@dataclass(frozen=True)
class BackPartition:
    group: str
    replica: str
    topic: str
    partition: int
    standby_offset: int
    primary_offset: int | None
    how: Literal["exact", "estimate", "mismatch"]
    delivered_late: int  # on the primary, never replicated: the group reads them after failback
    reason: str = ""
    primary_committed: int | None = None  # the group's offset on the primary now; None: none committed


@dataclass(frozen=True)
class FailbackPlan:
    cluster: str
    standby: str
    groups: tuple[str, ...]
    partitions: tuple[BackPartition, ...]
    not_moved: tuple[tuple[str, str, int, int], ...]  # (group, standby topic, partition, records there)
    switch: str
    switch_old: str | None
    switch_new: str
    missing_groups: tuple[str, ...] = ()  # no committed offsets on the standby and no members

    def targets(self, group: str) -> dict[tuple[str, int], int]:
        return {(p.topic, p.partition): p.primary_offset for p in self.partitions
                if p.group == group and p.primary_offset is not None and p.how != "mismatch"}

    def to_csv(self) -> str:
        return "".join(f"{p.group},{p.topic},{p.partition},{p.primary_offset}\n" for p in self.partitions)

    def digest(self) -> str:
        bound = {"clusters": [self.cluster, self.standby], "switch": [self.switch, self.switch_old, self.switch_new],
                 "partitions": [[p.group, p.topic, p.partition, p.primary_offset, p.how] for p in self.partitions]}
        if self.missing_groups:
            bound["missing"] = list(self.missing_groups)
        return hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()

    # -- the plan contract (mq_runbooks.kit.plans.Plan) ------------------------------------------
    COLUMNS = ("group", "standby topic", "partition", "standby offset", "primary topic", "primary now",
               "primary target", "how", "delivered late")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        """One row per group and partition, in group/topic/partition order."""
        return [(p.group, p.replica, p.partition, p.standby_offset, p.topic, p.primary_committed, p.primary_offset,
                 p.how, p.delivered_late) for p in sorted(self.partitions, key=lambda p: (p.group, p.replica, p.partition))]

    def changes_anything(self) -> bool:
        """An offset to commit that the primary does not have yet, or a switch to move back."""
        return (any(p.primary_offset is not None and p.how != "mismatch" and p.primary_offset != p.primary_committed
                    for p in self.partitions) or self.switch_old != self.switch_new)

    def missing_targets(self) -> tuple[str, ...]:
        return tuple(f"group {g!r} (no committed offsets on {self.standby} and no members)" for g in self.missing_groups)

    def summary(self) -> str:
        return (f"{len(self.partitions)} partition(s) of {len(self.groups)} group(s) back to {self.cluster}, "
                f"{sum(p.how != 'exact' for p in self.partitions)} not exact, {len(self.not_moved)} standby-only "
                f"partition(s) not moved; switch {self.switch} {self.switch_old} -> {self.switch_new}")

    def to_json(self) -> dict[str, Any]:
        return {**table_json(self), "cluster": self.cluster, "standby": self.standby, "groups": list(self.groups),
                "switch": {"name": self.switch, "old": self.switch_old, "new": self.switch_new},
                "partitions": [asdict(p) for p in self.partitions],
                "not_moved": [{"group": g, "topic": t, "partition": p, "records": n} for g, t, p, n in self.not_moved]}

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        late = sum({(p.topic, p.partition): p.delivered_late for p in self.partitions}.values())
        headline = "\n".join([
            f"**Fail back** groups {', '.join(f'`{g}`' for g in self.groups)} from `{self.standby}` to "
            f"`{self.cluster}` (replication needed: MM2 {self.cluster} -> {self.standby} only).",
            f"**{late}** message(s) the primary kept that never reached the standby: the groups read them now.",
            f"**Switch** `{self.switch}`: `{self.switch_old}` -> `{self.switch_new}`."])
        shown = [tuple("none" if value is None else value for value in row) for row in self.rows()]
        lines = [table_markdown(headline, self.COLUMNS, shown, rows)]
        if self.not_moved:
            lines.append("\n**Not moved back** (produced on the standby, no standby -> primary replication): "
                         + "; ".join(f"{g} {t}:{p} ({n} records)" for g, t, p, n in self.not_moved[:20]))
        if self.missing_groups:
            lines.append("\n**Do not exist**: " + "; ".join(self.missing_targets()))
        return "\n".join(lines)


def plan_failback(params: KafkaFailbackParameters, clusters: Clusters) -> FailbackPlan:
    """Observe both clusters and compute the way back (nothing is changed)."""
    primary, standby, alias = failover_pair(clusters, params.cluster, params.standby, RUNBOOK_ID)
    switch = open_switch(clusters, params.switch, RUNBOOK_ID)
    switch_new = (value_before_failover(params.failover_run, params.switch) if params.failover_run
                  else switch_value(switch, primary.name, RUNBOOK_ID))
    require_reachable(primary, "primary")
    require_reachable(standby, "standby")
    with KafkaClient.from_cluster(standby) as kafka:
        committed = {g: kafka.committed_offsets(g) for g in params.groups}
        missing = tuple(g for g in params.groups if not committed[g] and not kafka.describe_group(g).members)
    with KafkaClient.from_cluster(primary) as kafka:
        on_primary = {g: kafka.committed_offsets(g) for g in params.groups}
    replicas = sorted({(t, p) for offsets in committed.values() for t, p in offsets if upstream_topic(alias, t)})
    syncs = read_offset_syncs(primary.client_config(), standby.name, name=primary.name,
                              topics={upstream_topic(alias, t) for t, _ in replicas})
    with KafkaClient.from_cluster(standby) as kafka:
        replica_ends = kafka.log_offsets(replicas)
        local = sorted({(t, p) for offsets in committed.values() for t, p in offsets if not upstream_topic(alias, t)})
        local_ends = kafka.log_offsets(local)
    with KafkaClient.from_cluster(primary) as kafka:
        primary_ends = kafka.log_offsets([(upstream_topic(alias, t), p) for t, p in replicas])
    rows, not_moved = [], []
    for group, offsets in committed.items():
        for (topic, partition), offset in sorted(offsets.items()):
            if (topic, partition) in local_ends:
                not_moved.append((group, topic, partition, local_ends[(topic, partition)].log_end_offset))
                continue
            upstream = upstream_topic(alias, topic)
            end = replica_ends[(topic, partition)].log_end_offset
            reached = upstream_of(end, syncs.get((upstream, partition), []))
            late = primary_ends[(upstream, partition)].log_end_offset - (end if reached is None else reached)
            row = _translate_back(primary, standby, group, topic, upstream, partition, offset, end,
                                  syncs.get((upstream, partition), []), max(0, late))
            rows.append(replace(row, primary_committed=on_primary[group].get((upstream, partition))))
    return FailbackPlan(primary.name, standby.name, tuple(params.groups), tuple(rows), tuple(not_moved),
                        params.switch, switch.current(), switch_new, missing)


def _translate_back(primary: KafkaCluster, standby: KafkaCluster, group: str, replica: str, topic: str,
                    partition: int, offset: int, end: int, syncs: list, late: int) -> BackPartition:
    """The primary offset of standby `offset`, checked on the record there (or the one before it)."""
    probe = offset if offset < end else offset - 1
    row = dict(group=group, replica=replica, topic=topic, partition=partition, standby_offset=offset, delivered_late=late)
    if probe < 0:
        return BackPartition(**row, primary_offset=0, how="exact", reason="nothing consumed yet")
    down = KafkaRecords(standby.client_config(), name=standby.name).read_record(replica, partition, probe)
    up_probe = upstream_of(probe, syncs)
    if up_probe is None:
        with KafkaClient.from_cluster(primary) as kafka:
            found = kafka.offsets_for_timestamp([(topic, partition)], down.timestamp_ms or 0)[(topic, partition)]
        return BackPartition(**row, primary_offset=None if found < 0 else found + (probe != offset), how="estimate",
                             reason="no offset sync at or before it: by the record's timestamp")
    up = KafkaRecords(primary.client_config(), name=primary.name).read_record(topic, partition, up_probe)
    same = (up.offset == up_probe and (up.key, up.value, up.timestamp_ms) == (down.key, down.value, down.timestamp_ms))
    target = up_probe + (offset - probe)
    if not same:
        return BackPartition(**row, primary_offset=target, how="mismatch",
                             reason=f"the record at {topic}:{partition}@{up_probe} differs from {replica}@{probe}")
    return BackPartition(**row, primary_offset=target, how="exact")


def value_before_failover(failover_run: str, switch: str) -> str:
    """The value `switch` had before the kafka-failover run `failover_run` switched it (its journal)."""
    try:
        entries = journal.read(UUID(failover_run))
    except ValueError:
        raise ParameterError(RUNBOOK_ID, [("failover_run", f"{failover_run!r} is not a run id")]) from None
    switched = [e for e in entries if e.kind == "action" and e.data.get("step") == "switch"
                and e.data.get("switch") == switch]
    if not switched or switched[-1].data.get("switch_old") is None:
        raise ParameterError(RUNBOOK_ID, [("failover_run", f"run {failover_run} never switched {switch!r} from a value")])
    return switched[-1].data["switch_old"]


class Failback(MoveAndSwitch[KafkaFailbackParameters, FailbackPlan]):
    id = RUNBOOK_ID
    destination_columns = ("primary topic", "primary target")

    def target(self, params: KafkaFailbackParameters) -> str:
        return f"{params.standby} -> {params.cluster}, groups {', '.join(params.groups)}"

    def destination(self, params: KafkaFailbackParameters) -> str:
        return params.cluster

    def observe(self, env: Env, params: KafkaFailbackParameters) -> FailbackPlan:
        # In a run the groups must be empty on both clusters (or become so within wait_for_inactive).
        if isinstance(env, Run):
            primary, standby, _ = failover_pair(env.clusters, params.cluster, params.standby, RUNBOOK_ID)
            for cluster in (standby, primary):
                try:
                    with KafkaClient.from_cluster(cluster) as kafka:
                        for group in params.groups:
                            inactive_group(kafka, group, params.wait_for_inactive)
                except PreconditionError:
                    raise
                except BrokerError as exc:
                    raise PreconditionError(f"{cluster.name} is not healthy: {exc}") from None
        return plan_failback(params, env.clusters)

    def refusal(self, params: KafkaFailbackParameters, plan: FailbackPlan) -> str | None:
        mismatched = [f"{p.group} {p.topic}:{p.partition}: {p.reason}" for p in plan.partitions if p.how == "mismatch"]
        return f"cannot translate back exactly: {'; '.join(mismatched[:10])}" if mismatched else None

    def report(self, run: Run, params: KafkaFailbackParameters, plan: FailbackPlan, result: str | None) -> None:
        create_table_artifact(table=[{"group": p.group, "from": f"{p.replica}:{p.partition}@{p.standby_offset}",
                                      "to": f"{p.topic}:{p.partition}@{p.primary_offset}", "how": p.how,
                                      "delivered_late": p.delivered_late} for p in plan.partitions],
                              description=f"kafka-failback {plan.standby} -> {plan.cluster}")

    def outcome(self, params: KafkaFailbackParameters, plan: FailbackPlan, result: str | None) -> str:
        return (f"{len(plan.groups)} group(s) back on {plan.cluster}, switch {plan.switch} {result} -> "
                f"{plan.switch_new}; {len(plan.not_moved)} standby-only partition(s) not moved")


STEPS = Failback()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


kafka_failback = runbook_flow(STEPS, KafkaFailbackParameters, "Move consumer groups and clients back to the primary.")
