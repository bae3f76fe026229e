"""The plan of `kafka-failover` (plain Python, no Prefect): per consumer group and partition, the
standby offset translated from MirrorMaker 2's checkpoints, the messages at risk, and what the
endpoint switch will change.

    plan = plan_failover(params, clusters, state_dir)
    plan.markdown(), plan.rows(), plan.missing_targets(), plan.digest()   (the kit's plan contract)

Translation: the latest checkpoint of (group, `<alias>.<topic>`, partition) on the standby gives
the downstream offset. When the primary answers, a checkpoint counts only if its upstream offset
equals the group's committed offset there (else it is `stale`: MM2 has not caught up); when the
primary is down, only if it is younger than `max_checkpoint_age_s` (MM2 writes a checkpoint only
when the group's offset moves, so an idle group's checkpoint ages too: raise the limit explicitly).
Partitions with no usable checkpoint are `missing`/`stale` and not translatable: the run refuses
them unless the approver chose `untranslatable=by_timestamp` (the first standby record at or after
`fallback_to_datetime`). A group with no committed offsets on an answering primary (and no members)
does not exist: it is a missing target, refused before a run exists.

Messages at risk (per upstream partition): exact when the primary answers (its end offset minus how
far the replica reaches, through MM2's offset syncs); otherwise the lag last observed with the
primary up (kept in `state_dir`), labelled an estimate with the time it was observed.

The digest binds the groups, each partition's status and target, the fallback and the switch's old
and new value; not the ages and counts at risk, which move while the approver reads, nor the
group's offsets on the standby now (MM2 may sync them meanwhile).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mq_runbooks.base.clusters import Clusters, KafkaCluster
from mq_runbooks.base.files import write_file
from mq_runbooks.base.errors import BrokerError, ConfigError, NotFoundError, ParameterError, PreconditionError, RunbookError
from mq_runbooks.flows.replay_spec import parse_datetime
from mq_runbooks.flows.switching import open_switch
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.integrations.mirrormaker import MirrorState, read_offset_syncs, remote_topic, replication_lag, upstream_topic
from mq_runbooks.integrations.switches import EndpointSwitch
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, table_json, table_markdown

RUNBOOK_ID = "kafka-failover"
PROBE_TIMEOUT_S = 3.0  # how long a primary that may be dead gets to answer


class KafkaFailoverParameters(BaseModel):
    """Parameters of kafka-failover."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field("primary", min_length=1, description="the Kafka cluster clients leave (MM2's source)")
    standby: str = Field("standby", min_length=1, description="the cluster they move to (MM2's target, "
                                                             "replication: mirrormaker2 in clusters.yaml)")
    groups: list[str] = Field(min_length=1, description="consumer groups to move (repeatable)")
    switch: str = Field("kafka-clients", min_length=1, description="the endpoint switch of clusters.yaml")
    max_checkpoint_age_s: float = Field(300, gt=0, description="with the primary down: older checkpoints "
                                                              "are stale (not translatable)")
    untranslatable: Literal["refuse", "by_timestamp"] = Field(
        "refuse", description="partitions without a usable checkpoint: refuse the run, or start them at the "
                              "first standby record at or after fallback_to_datetime")
    fallback_to_datetime: str | None = Field(None, description="yyyy-MM-ddTHH:mm:ss.SSS (UTC unless a zone is "
                                                               "given); needed with untranslatable=by_timestamp")
    fallback_topics: list[str] = Field(default_factory=list, description="with by_timestamp: the upstream topics "
                                       "of groups the standby knows nothing of (primary down, no checkpoint)")
    wait_for_inactive: float = Field(0, ge=0, le=3600, description="seconds to wait for the groups to be empty")

    @model_validator(mode="after")
    def _fallback_complete(self) -> "KafkaFailoverParameters":
        if self.untranslatable == "by_timestamp" and self.fallback_to_datetime is None:
            raise ValueError("untranslatable=by_timestamp needs fallback_to_datetime")
        if self.untranslatable == "refuse" and (self.fallback_to_datetime or self.fallback_topics):
            raise ValueError("fallback_to_datetime and fallback_topics apply only with untranslatable=by_timestamp")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError("groups: each group once")
        return self


@dataclass(frozen=True)
class GroupPartition:
    group: str
    topic: str  # upstream name
    partition: int
    replica: str  # the standby topic, <alias>.<topic>
    committed_upstream: int | None  # None: the primary did not answer
    checkpoint_upstream: int | None
    checkpoint_downstream: int | None
    checkpoint_age_s: float | None
    status: Literal["translated", "stale", "missing", "by_timestamp"]
    target_offset: int | None  # on the replica; None: not translatable
    messages_at_risk: int | None  # of the upstream partition; None: unknown
    reason: str = ""
    standby_committed: int | None = None  # the group's offset on the replica now; None: none committed


@dataclass(frozen=True)
class FailoverPlan:
    cluster: str
    standby: str
    source_alias: str
    groups: tuple[str, ...]
    primary_reachable: bool
    primary_error: str | None
    heartbeat_age_s: float | None
    partitions: tuple[GroupPartition, ...]
    unknown_groups: tuple[str, ...]  # the standby has no checkpoint of them and the primary is down
    at_risk_exact: bool
    at_risk_observed_at: float | None  # epoch seconds of the observation the figures come from
    switch: str
    switch_where: str
    switch_old: str | None
    switch_new: str
    fallback: str
    warnings: tuple[str, ...] = ()
    missing_groups: tuple[str, ...] = ()  # the primary answered: no committed offsets there, no members

    @property
    def untranslatable(self) -> list[GroupPartition]:
        return [p for p in self.partitions if p.target_offset is None]

    @property
    def messages_at_risk(self) -> int | None:
        """Total over the distinct upstream partitions the groups read (None if any is unknown)."""
        per_partition = {(p.topic, p.partition): p.messages_at_risk for p in self.partitions}
        if any(v is None for v in per_partition.values()):
            return None
        return sum(per_partition.values())

    def targets(self, group: str) -> dict[tuple[str, int], int]:
        return {(p.replica, p.partition): p.target_offset for p in self.partitions
                if p.group == group and p.target_offset is not None}

    def to_csv(self) -> str:
        """group,topic,partition,offset rows: what will be committed on the standby."""
        return "".join(f"{p.group},{p.replica},{p.partition},{p.target_offset}\n"
                       for p in self.partitions if p.target_offset is not None)

    def digest(self) -> str:
        bound = {"clusters": [self.cluster, self.standby], "fallback": self.fallback,
                 "unknown": list(self.unknown_groups), "switch": [self.switch, self.switch_old, self.switch_new],
                 "partitions": [[p.group, p.replica, p.partition, p.status, p.target_offset] for p in self.partitions]}
        if self.missing_groups:
            bound["missing"] = list(self.missing_groups)
        return hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()

    # -- the plan contract (mq_runbooks.kit.plans.Plan) ------------------------------------------
    COLUMNS = ("group", "standby topic", "partition", "upstream committed", "checkpoint (up -> down, age)",
               "standby now", "standby target", "how", "at risk")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        """One row per group and partition, in group/topic/partition order."""
        return [(p.group, p.replica, p.partition, p.committed_upstream,
                 None if p.checkpoint_upstream is None else
                 f"{p.checkpoint_upstream} -> {p.checkpoint_downstream}, {p.checkpoint_age_s:.0f}s",
                 p.standby_committed, p.target_offset, p.status, p.messages_at_risk)
                for p in sorted(self.partitions, key=lambda p: (p.group, p.replica, p.partition))]

    def changes_anything(self) -> bool:
        """An offset to commit that the standby does not have yet, or a switch to move."""
        return (any(p.target_offset is not None and p.target_offset != p.standby_committed for p in self.partitions)
                or self.switch_old != self.switch_new)

    def missing_targets(self) -> tuple[str, ...]:
        return tuple(f"group {g!r} (no committed offsets on {self.cluster} and no members)" for g in self.missing_groups)

    def summary(self) -> str:
        exact = "" if self.at_risk_exact else " (estimate)"
        at_risk = "unknown" if self.messages_at_risk is None else f"{self.messages_at_risk}{exact}"
        return (f"{len(self.partitions)} partition(s) of {len(self.groups)} group(s) to {self.standby}, "
                f"{len(self.untranslatable) + len(self.unknown_groups)} not translatable; messages at risk {at_risk}; "
                f"switch {self.switch} {self.switch_old} -> {self.switch_new}")

    def not_translatable(self) -> list[str]:
        """Each partition (and group) the run refuses unless the fallback is chosen, with why."""
        listed = [f"{p.group} {p.replica}:{p.partition} ({p.status}: {p.reason})" for p in self.untranslatable]
        return listed + [f"{g} (no checkpoint on {self.standby} and the primary is down)" for g in self.unknown_groups]

    def to_json(self) -> dict[str, Any]:
        return {**table_json(self), "cluster": self.cluster, "standby": self.standby, "groups": list(self.groups),
                "primary_reachable": self.primary_reachable,
                "primary_error": self.primary_error, "heartbeat_age_s": self.heartbeat_age_s,
                "messages_at_risk": self.messages_at_risk, "at_risk_exact": self.at_risk_exact,
                "at_risk_observed_at": self.at_risk_observed_at, "unknown_groups": list(self.unknown_groups),
                "switch": {"name": self.switch, "where": self.switch_where, "old": self.switch_old,
                           "new": self.switch_new},
                "fallback": self.fallback, "warnings": list(self.warnings),
                "partitions": [asdict(p) for p in self.partitions]}

    def at_risk_text(self) -> str:
        total = self.messages_at_risk
        if not self.partitions:
            return "**0** (no partition to move)"
        if total is None:
            return "**unknown** (the primary is down and no earlier observation of the lag was kept)"
        if self.at_risk_exact:
            return f"**{total}** (exact: the primary answered)"
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at_risk_observed_at or 0))
        return f"**~{total}** (ESTIMATE: the primary is down; lag last observed at {seen})"

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        primary = "reachable" if self.primary_reachable else f"DOWN ({self.primary_error})"
        beat = "none seen" if self.heartbeat_age_s is None else f"{self.heartbeat_age_s:.0f}s ago"
        headline = "\n".join([
            f"**Fail over** groups {', '.join(f'`{g}`' for g in self.groups)} from Kafka `{self.cluster}` "
            f"({primary}) to `{self.standby}` (MM2 heartbeat {beat}).",
            f"**Messages at risk** (produced on `{self.cluster}`, not on `{self.standby}`): {self.at_risk_text()}.",
            f"**Switch** `{self.switch}` ({self.switch_where}): `{self.switch_old}` -> `{self.switch_new}`."])
        shown = [tuple(_dash(value) if index in (3, 8) else ("none" if value is None else value)
                       for index, value in enumerate(row)) for row in self.rows()]
        lines = [table_markdown(headline, self.COLUMNS, shown, rows)]
        listed = self.not_translatable()
        if listed:
            lines += ["", f"**Not translatable** ({len(listed)}): " + "; ".join(listed[:20]),
                      "The run refuses these. To start them at the first standby record at or after a time, run "
                      "again with `untranslatable=by_timestamp fallback_to_datetime=...` (and `fallback_topics` "
                      "for groups the standby knows nothing of)."]
        if self.missing_targets():
            lines += ["", "**Do not exist**: " + "; ".join(self.missing_targets())]
        lines += [f"\n> WARN {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _dash(value: int | None) -> str:
    return "?" if value is None else str(value)


def failover_pair(clusters: Clusters, cluster: str, standby: str, runbook: str) -> tuple[KafkaCluster, KafkaCluster, str]:
    """(primary, standby, MM2 source alias); ParameterError when the standby is not MM2's target of it."""
    try:
        source, target = clusters.kafka_cluster(cluster), clusters.kafka_cluster(standby)
    except NotFoundError as exc:
        raise ParameterError(runbook, [("cluster" if cluster not in clusters.kafka else "standby", str(exc))]) from None
    if target.standby_of != source.name or target.replication is None:
        raise ParameterError(runbook, [("standby", f"{standby!r} is not a MirrorMaker 2 standby of {cluster!r} in "
                                                   f"{clusters.source} (needs standby_of: {cluster} and replication)")])
    return source, target, target.replication.source_alias


def switch_value(switch: EndpointSwitch, cluster: str, runbook: str) -> str:
    try:
        return switch.value_for(cluster)
    except ConfigError as exc:
        raise ParameterError(runbook, [("switch", str(exc))]) from None


def require_reachable(cluster: KafkaCluster, role: str) -> None:
    """PreconditionError saying why when `cluster` does not answer."""
    try:
        with KafkaClient.from_cluster(cluster, PROBE_TIMEOUT_S) as kafka:
            kafka.describe_cluster()
    except BrokerError as exc:
        raise PreconditionError(f"the {role} {cluster.name} cannot take the clients: {exc}") from None


def lag_state_path(state_dir: Path, cluster: str, standby: str) -> Path:
    return state_dir / f"kafka-replication-lag-{cluster}-{standby}.json"


def plan_failover(params: KafkaFailoverParameters, clusters: Clusters, state_dir: Path) -> FailoverPlan:
    """Observe both clusters, MM2 and the switch, and compute the plan (nothing is changed, except
    that a lag observed with the primary up is kept in `state_dir` for a later estimate)."""
    source, target, alias = failover_pair(clusters, params.cluster, params.standby, RUNBOOK_ID)
    switch = open_switch(clusters, params.switch, RUNBOOK_ID)
    switch_new = switch_value(switch, target.name, RUNBOOK_ID)
    fallback_ms = None
    if params.fallback_to_datetime is not None:
        try:
            fallback_ms = parse_datetime(params.fallback_to_datetime, field="fallback_to_datetime")
        except ParameterError as exc:
            raise ParameterError(RUNBOOK_ID, exc.problems) from None
    require_reachable(target, "standby")
    mirror = MirrorState(target.client_config(), source_alias=alias, name=target.name,
                         timeout_s=target.request_timeout_s)
    checkpoints = mirror.checkpoints(groups=params.groups)
    beat = mirror.last_heartbeat()
    committed, primary_error = _committed_on_primary(source, params.groups)
    warnings = [] if beat is not None else [f"no MM2 heartbeat from {alias} on {target.name}: is MirrorMaker 2 running?"]

    rows: list[dict[str, Any]] = []
    unknown, missing = [], []
    now_ms = int(time.time() * 1000)
    for group in params.groups:
        mine = {(t, p): c for (g, t, p), c in checkpoints.items() if g == group}
        if committed is not None:
            keys = sorted(committed[group])
            if not keys:
                missing.append(group)  # inactive (checked) and nothing committed: no such group
        else:
            keys = sorted({(upstream_topic(alias, t) or t, p) for t, p in mine})
            if not keys and params.fallback_topics:
                keys = [(topic, None) for topic in params.fallback_topics]
            elif not keys:
                unknown.append(group)
        for topic, partition in keys:
            rows.append(_translate(group, topic, partition, alias, mine, committed, params, now_ms))
    with KafkaClient.from_cluster(target) as standby_kafka:
        rows = _expand_fallback_topics(standby_kafka, rows, alias)
        _apply_fallback(standby_kafka, rows, fallback_ms)
        on_standby = {g: standby_kafka.committed_offsets(g) for g in params.groups}
    for row in rows:
        row["standby_committed"] = on_standby[row["group"]].get((row["replica"], row["partition"]))
    at_risk, exact, observed_at = _messages_at_risk(source, target, alias, rows, committed is not None,
                                                     lag_state_path(state_dir, source.name, target.name))
    partitions = tuple(GroupPartition(**row, messages_at_risk=at_risk.get((row["topic"], row["partition"])))
                       for row in rows)
    return FailoverPlan(source.name, target.name, alias, tuple(params.groups), committed is not None, primary_error,
                        None if beat is None else round(beat.age_s(), 1), partitions, tuple(unknown), exact,
                        observed_at, params.switch, switch.describe(), switch.current(), switch_new,
                        params.untranslatable, tuple(warnings), tuple(missing))


def _committed_on_primary(source: KafkaCluster, groups: list[str]
                          ) -> tuple[dict[str, dict[tuple[str, int], int]] | None, str | None]:
    """Each group's committed offsets on the primary, or (None, why) when the primary is down."""
    try:
        with KafkaClient.from_cluster(source, PROBE_TIMEOUT_S) as kafka:
            kafka.describe_cluster()
            active = [g for g in groups if not kafka.describe_group(g).is_inactive]
            if active:
                raise PreconditionError(f"group(s) {', '.join(active)} still have members on {source.name}: stop "
                                        f"their consumers first, so that MM2 checkpoints their last position")
            return {g: kafka.committed_offsets(g) for g in groups}, None
    except PreconditionError:
        raise
    except BrokerError as exc:
        return None, str(exc)


def _translate(group: str, topic: str, partition: int | None, alias: str, mine: dict, committed: dict | None,
               params: KafkaFailoverParameters, now_ms: int) -> dict[str, Any]:
    replica = remote_topic(alias, topic)
    checkpoint = mine.get((replica, partition))
    upstream = None if committed is None else committed[group].get((topic, partition))
    row = {"group": group, "topic": topic, "partition": partition, "replica": replica,
           "committed_upstream": upstream, "checkpoint_upstream": None, "checkpoint_downstream": None,
           "checkpoint_age_s": None, "status": "missing", "target_offset": None,
           "reason": f"MM2 has no checkpoint of {group} on {replica}:{partition}"}
    if checkpoint is None:
        return row
    age = round(checkpoint.age_s(now_ms), 1)
    row.update(checkpoint_upstream=checkpoint.upstream_offset, checkpoint_downstream=checkpoint.downstream_offset,
               checkpoint_age_s=age)
    if upstream is not None and checkpoint.upstream_offset != upstream:
        return {**row, "status": "stale", "reason": f"checkpoint at upstream {checkpoint.upstream_offset}, group "
                                                    f"committed {upstream}: MM2 has not caught up (retry shortly)"}
    if upstream is None and age > params.max_checkpoint_age_s:
        return {**row, "status": "stale", "reason": f"{age:.0f}s old (max_checkpoint_age_s "
                                                    f"{params.max_checkpoint_age_s:g}) and the primary cannot confirm it"}
    return {**row, "status": "translated", "target_offset": checkpoint.downstream_offset, "reason": ""}


def _expand_fallback_topics(kafka: KafkaClient, rows: list[dict[str, Any]], alias: str) -> list[dict[str, Any]]:
    """Rows of fallback_topics (partition None) become one row per partition of the replica."""
    expanded = []
    for row in rows:
        if row["partition"] is not None:
            expanded.append(row)
            continue
        for partition in kafka.partitions(row["replica"]):
            expanded.append({**row, "partition": partition})
    return expanded


def _apply_fallback(kafka: KafkaClient, rows: list[dict[str, Any]], fallback_ms: int | None) -> None:
    """With an explicit fallback time, untranslatable rows get the standby offset of that time (the log
    end where no record is that recent)."""
    pending = [row for row in rows if row["target_offset"] is None]
    if fallback_ms is None or not pending:
        return
    keys = [(row["replica"], row["partition"]) for row in pending]
    by_time = kafka.offsets_for_timestamp(keys, fallback_ms)
    ends = kafka.log_offsets(keys)
    for row, key in zip(pending, keys):
        offset = by_time[key] if by_time[key] >= 0 else ends[key].log_end_offset
        row.update(status="by_timestamp", target_offset=offset, reason=f"{row['reason']}; by timestamp")


def _messages_at_risk(source: KafkaCluster, target: KafkaCluster, alias: str, rows: list[dict[str, Any]],
                      primary_up: bool, state: Path) -> tuple[dict[tuple[str, int], int], bool, float | None]:
    """Per upstream partition: messages not on the standby; exact now, or the last kept observation."""
    keys = sorted({(row["topic"], row["partition"]) for row in rows})
    if primary_up and keys:
        try:
            syncs = read_offset_syncs(source.client_config(), target.name, name=source.name,
                                      timeout_s=source.request_timeout_s, topics={t for t, _ in keys})
            with KafkaClient.from_cluster(source) as upstream, KafkaClient.from_cluster(target) as downstream:
                lags = replication_lag(upstream, downstream, alias, keys, syncs)
        except RunbookError:
            lags = None
        if lags is not None:
            at_risk = {(lag.topic, lag.partition): lag.messages_at_risk for lag in lags}
            _keep_observation(state, at_risk)
            return at_risk, True, time.time()
    kept = json.loads(state.read_text()) if state.exists() else {}
    known = {tuple(json.loads(key)): value for key, value in kept.items()}
    found = {key: known[key] for key in keys if key in known}
    return ({key: value for key, (value, _) in found.items()}, False,
            min((at for _, at in found.values()), default=None))


def _keep_observation(state: Path, at_risk: dict[tuple[str, int], int]) -> None:
    """Keep [messages at risk, when] per upstream partition, for a plan made once the primary is gone."""
    kept = json.loads(state.read_text()) if state.exists() else {}
    now = time.time()
    kept.update({json.dumps(list(key)): [value, now] for key, value in at_risk.items()})
    write_file(state, json.dumps(kept))
