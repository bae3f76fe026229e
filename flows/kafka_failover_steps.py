"""What kafka-failover and kafka-failback share: both move consumer groups onto a cluster and point
the clients at it. One copy of the move, as the driver's steps (mq_runbooks.kit.driver) both runbooks
inherit from `MoveAndSwitch`:

    snapshot   each group's committed offsets on the destination, as ONE kafka-replay `--export` CSV per
               group (flows/kafka_replay.py's save_offsets_snapshot), and the switch's value
    act        commit each group's targets there (a fenced step per group), check each group resumes at
               them (read as it would on restart), then switch the clients (one fenced step)
    verify     a canary produced and consumed through the switched endpoint reaches the destination
    restore    the offsets that existed before and the switch's old value: after a failure part-way, and
               in `runbook restore RUN` from the snapshot's data alone (restore_items: each saved offset
               and the switch, against what is there now and what the run left)

Plain helpers (no Prefect) used by the steps:

    read_from_committed(cluster, group, targets)                   # {"topic:p": first offset read}
    canary_through(endpoint, cluster, run_id)                      # {"endpoint", "cluster_id", ...}
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Any, ClassVar, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from pydantic import BaseModel

from mq_runbooks.base.clusters import KafkaCluster
from mq_runbooks.base.errors import BrokerError, RunbookError, UnreachableError
from mq_runbooks.flows.kafka_offsets import alter, inactive_group, restore_offsets, save_offsets_snapshot
from mq_runbooks.flows.replay_spec import parse_offsets_csv
from mq_runbooks.flows.switching import open_switch
from mq_runbooks.integrations.kafka import KafkaClient, TopicPartitionKey
from mq_runbooks.integrations.switches import EndpointSwitch
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Env, Run, RunbookSteps
from mq_runbooks.kit.plans import Plan
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem, planned

CANARY_TOPIC = "mq-runbooks.canary"


class Move(Plan, Protocol):
    """What the move needs of a failover or failback plan (besides the plan contract)."""

    groups: tuple[str, ...]
    switch: str
    switch_old: str | None
    switch_new: str

    def targets(self, group: str) -> dict[TopicPartitionKey, int]: ...


P = TypeVar("P", bound=BaseModel)
M = TypeVar("M", bound=Move)


class MoveAndSwitch(RunbookSteps[P, M]):
    """snapshot, act, verify and restore of a runbook that moves groups and switches clients; the
    subclass says where to (`destination`) and writes target/observe (and refusal, report, outcome).
    Its parameters have a `switch` (the endpoint switch's name) and `wait_for_inactive`."""

    # The plan's columns (as journalled) of each row's topic and offset on the destination: what the
    # run set there, which a restore's plan shows beside the saved and the current offset.
    destination_columns: ClassVar[tuple[str, str]]
    cannot_undo = (
        "an offset committed on a partition where the group had none on the destination before stays (this client "
        "cannot delete a group's offset: kafka-consumer-groups.sh --delete-offsets does)",
        "what clients produced and consumed through the switched endpoint meanwhile stays done",
        f"the canary records produced to {CANARY_TOPIC} stay")

    def destination(self, params: P) -> str:
        """The Kafka cluster the groups and clients move to."""
        raise NotImplementedError

    def snapshot(self, run: Run, params: P, plan: M) -> Snapshot:
        return snapshot_groups(run, self.id, run.clusters.kafka_cluster(self.destination(params)), plan,
                               open_switch(run.clusters, params.switch, self.id))

    def act(self, run: Run, params: P, plan: M) -> str | None:
        return move_groups_and_switch(run, run.clusters.kafka_cluster(self.destination(params)), plan,
                                      open_switch(run.clusters, params.switch, self.id))

    def verify(self, run: Run, params: P, plan: M, result: Any) -> Verification:
        return canary_verification(run, open_switch(run.clusters, params.switch, self.id),
                                   run.clusters.kafka_cluster(self.destination(params)))

    def restore(self, run: Run, params: P, plan: M | None, snapshot: Snapshot) -> Restore:
        return restore_groups_and_switch(run, run.clusters.kafka_cluster(self.destination(params)), plan,
                                         open_switch(run.clusters, params.switch, self.id), snapshot)

    def restore_items(self, env: Env, params: P, snapshot: Snapshot,
                      original: list[journal.Entry]) -> list[RestoreItem]:
        return groups_and_switch_items(env.clusters.kafka_cluster(self.destination(params)),
                                       open_switch(env.clusters, params.switch, self.id), snapshot, original,
                                       self.destination_columns,
                                       params.wait_for_inactive if isinstance(env, Run) else 0)


def snapshot_groups(run: Run, runbook: str, destination: KafkaCluster, plan: Move, switch: EndpointSwitch) -> Snapshot:
    """Each group's offsets on the partitions it will get on `destination`, one `--export` CSV per group,
    and the switch's value; the restore command lists a kafka-replay run per group and the switch."""
    with run.kafka(destination.name) as kafka:
        saved = [save_offsets_snapshot(kafka, group, sorted(plan.targets(group)), run.settings.snapshot_dir,
                                       f"{runbook}-{run.id}-{re.sub(r'[^A-Za-z0-9._-]', '_', group)}")
                 for group in plan.groups if plan.targets(group)]
    switch_old = switch.current()
    commands = [s.restore_command for s in saved if s.csv]
    had_none = [s.data["group"] for s in saved if not s.csv]
    if had_none:
        commands.append(f"group(s) {', '.join(had_none)} had no committed offsets on {destination.name} before "
                        f"(kafka-consumer-groups.sh --bootstrap-server {destination.bootstrap_servers} "
                        f"--delete-offsets --group GROUP --topic TOPIC removes the new ones)")
    commands.append(f"put switch {switch.name} ({switch.describe()}) back to "
                    + (repr(switch_old) if switch_old is not None else "no value (remove its key)"))
    committed = sum(len(s.csv.splitlines()) for s in saved)
    csv = saved[0].csv if len(saved) == 1 else "".join(f"# {s.data['group']}: {s.path}\n{s.csv}" for s in saved)
    return Snapshot(
        summary=(f"{committed} committed offset(s) of {len(saved)} group(s) on {destination.name} saved to "
                 f"{', '.join(str(s.path) for s in saved)}" if saved else f"no group offsets to move on "
                 f"{destination.name}") + f"; switch {switch.name} is {switch_old!r}",
        path=saved[0].path if len(saved) == 1 else str(run.settings.snapshot_dir), csv=csv,
        restore_command="; ".join(commands),
        data={"cluster": destination.name, "switch": switch.name, "switch_old": switch_old,
              "group_snapshots": [{"group": s.data["group"], "path": s.path, "csv": s.csv,
                                   "restore_command": s.restore_command} for s in saved]})


def move_groups_and_switch(run: Run, destination: KafkaCluster, plan: Move, switch: EndpointSwitch) -> str | None:
    """Commit each group's targets on `destination` (a step per group), check that each group resumes
    there, then switch the clients (a step). Returns the switch's old value."""
    moving = {group: plan.targets(group) for group in plan.groups if plan.targets(group)}
    with run.kafka(destination.name) as kafka:
        for group, targets in moving.items():
            run.step(f"offsets:{group}", lambda group=group, targets=targets: alter(kafka, group, targets),
                     f"committed {len(targets)} offset(s) of {group} on {destination.name}",
                     lambda _, group=group, targets=targets: {"group": group, "cluster": destination.name,
                                                              "partitions": len(targets)})
    resumed = {group: read_from_committed(destination, group, targets) for group, targets in moving.items()}
    journal.write(run.id, Verification(summary=f"{len(resumed)} group(s) resume at their planned offsets on "
                                               f"{destination.name}", data={"resumed": resumed}))
    if plan.switch_old == plan.switch_new:
        run.note(f"switch {plan.switch} already points at {plan.switch_new}: not switched")
        return plan.switch_old
    old = run.step("switch", lambda: switch.switch(plan.switch_new),
                   lambda old: f"switch {plan.switch}: {old} -> {plan.switch_new}",
                   lambda old: {"switch": plan.switch, "switch_old": old, "switch_new": plan.switch_new})
    return plan.switch_old if old is None else old


def canary_verification(run: Run, switch: EndpointSwitch, destination: KafkaCluster) -> Verification:
    """The canary through the switch's endpoint as a verification (a failed canary is ok=False)."""
    try:
        checked = canary_through(switch.current() or "", destination, run.id)
    except RunbookError as exc:
        return Verification(ok=False, summary=f"the canary through switch {switch.name} failed: {exc}")
    return Verification(summary=f"canary produced and consumed through {checked['endpoint']}", data=checked)


def restore_groups_and_switch(run: Run, destination: KafkaCluster, plan: Move | None, switch: EndpointSwitch,
                              snapshot: Snapshot) -> Restore:
    """Put back each group's offsets that existed before, and the switch's old value if it moved. In a
    restore run (`plan` None) the partitions are those the snapshot saved."""
    summaries, restored, had_none = [], 0, []
    with run.kafka(destination.name) as kafka:
        for saved in snapshot.data["group_snapshots"]:
            group = saved["group"]
            partitions = plan.targets(group) if plan is not None else _saved_offsets(saved["csv"])
            done = restore_offsets(kafka, group, sorted(partitions),
                                   Snapshot(summary="", csv=saved["csv"], restore_command=saved["restore_command"]))
            summaries.append(done.summary)
            restored += done.data["offsets_restored"]
            had_none += [f"{group} {key}" for key in done.data["had_no_offset_before"]]
    old = snapshot.data["switch_old"]
    switched = any(e.kind == "action" and e.data.get("step") == "switch" for e in journal.read(run.id))
    if switched or switch.current() != old:
        switch.restore(old)
        summaries.append(f"switch {switch.name} put back to {old!r}")
        switched = True
    else:
        summaries.append(f"switch {switch.name} was not changed")
    return Restore(summary=f"on {destination.name}: " + "; ".join(summaries), restored=True,
                   restore_command=snapshot.restore_command,
                   data={"offsets_restored": restored, "had_no_offset_before": had_none, "switch_restored": switched,
                         "switch_old": old})


def groups_and_switch_items(destination: KafkaCluster, switch: EndpointSwitch, snapshot: Snapshot,
                            original: list[journal.Entry], columns: tuple[str, str],
                            wait_for_inactive: float = 0) -> list[RestoreItem]:
    """`runbook restore` of a move: each group's offset the snapshot saved on `destination`, the one
    committed now and the one the run set (its plan's `columns`: topic and offset there); then the
    switch, saved, now and the value the run switched it to. The groups must be inactive there
    (within `wait_for_inactive` seconds), as for any change of their offsets."""
    topic, offset = columns
    left = planned(original, ("group", topic, "partition"), offset)
    items = []
    with KafkaClient.from_cluster(destination) as kafka:
        for saved in snapshot.data["group_snapshots"]:
            group = saved["group"]
            offsets = _saved_offsets(saved["csv"])
            if not offsets:
                continue
            inactive_group(kafka, group, wait_for_inactive)
            committed = kafka.committed_offsets(group)
            items += [RestoreItem(f"{group} {t}:{p} on {destination.name}", saved=offset, now=committed.get((t, p)),
                                  left=left.get((group, t, p))) for (t, p), offset in sorted(offsets.items())]
    switched = next((e for e in reversed(original) if e.kind == "action" and e.data.get("step") == "switch"), None)
    old = snapshot.data["switch_old"]
    items.append(RestoreItem(f"switch {switch.name}", saved=old, now=switch.current(),
                             left=switched.data.get("switch_new") if switched is not None else old))
    return items


def _saved_offsets(csv: str) -> dict[TopicPartitionKey, int]:
    return parse_offsets_csv(csv) if csv.strip() else {}


def read_from_committed(cluster: KafkaCluster, group: str, targets: dict[TopicPartitionKey, int],
                        timeout_s: float = 15.0) -> dict[str, int | None]:
    """Consume one record per partition as `group` would on restart (from its committed offsets,
    assigned without joining, never committing); BrokerError unless each partition that has records
    at or after its target yields exactly the target first. Per partition: the offset read (None
    where the target is the log end)."""
    with KafkaClient.from_cluster(cluster) as kafka:
        ends = kafka.log_offsets(list(targets))
    expect = {key: offset for key, offset in targets.items() if offset < ends[key].log_end_offset}
    seen: dict[TopicPartitionKey, int] = {}
    if expect:
        consumer = Consumer({**cluster.client_config(), "group.id": group, "enable.auto.commit": False,
                             "auto.offset.reset": "error"})
        try:
            consumer.assign([TopicPartition(t, p) for t, p in expect])  # no offset: the committed one
            deadline = time.monotonic() + timeout_s
            while len(seen) < len(expect) and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error() is not None:
                    raise BrokerError(f"group {group} cannot consume on {cluster.name}: {message.error().str()}")
                key = (message.topic(), message.partition())
                if key not in seen:
                    seen[key] = message.offset()
                    consumer.pause([TopicPartition(*key)])
        finally:
            consumer.close()
    wrong = [f"{t}:{p} started at {seen.get((t, p), 'nothing')}, expected {o}"
             for (t, p), o in sorted(expect.items()) if seen.get((t, p)) != o]
    if wrong:
        raise BrokerError(f"group {group} on {cluster.name} does not resume where planned: {'; '.join(wrong[:10])}")
    return {f"{t}:{p}": seen.get((t, p)) for t, p in sorted(targets)}


def canary_through(endpoint: str, cluster: KafkaCluster, run_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """Produce one record through `endpoint` (bootstrap servers, with `cluster`'s security settings)
    and consume it back; BrokerError unless it comes back and the endpoint is `cluster` itself."""
    config = {**cluster.client_config(), "bootstrap.servers": endpoint}
    with KafkaClient.from_cluster(cluster) as expected, KafkaClient(config, name=f"endpoint {endpoint}", timeout_s=timeout_s) as via:
        want, reached = expected.describe_cluster().cluster_id, via.describe_cluster().cluster_id
        if reached != want:
            raise BrokerError(f"the switch points at {endpoint!r}, which is cluster {reached}, not {cluster.name} ({want})")
        if CANARY_TOPIC not in via.list_topics():
            try:
                via.create_topic(CANARY_TOPIC, 1)
            except BrokerError as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    marker = f"canary-{run_id}-{uuid.uuid4().hex[:6]}".encode()
    delivered: list[Any] = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": int(timeout_s * 1000)})
    producer.produce(CANARY_TOPIC, value=marker, partition=0, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(timeout_s)
    if not delivered or delivered[0][0] is not None:
        raise BrokerError(f"the canary produced through {endpoint!r} was not confirmed: "
                          f"{delivered[0][0] if delivered else 'no answer'}")
    offset = delivered[0][1].offset()
    consumer = Consumer({**config, "group.id": "mq-runbooks.canary", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(CANARY_TOPIC, 0, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.value() == marker:
                return {"endpoint": endpoint, "cluster_id": reached, "topic": CANARY_TOPIC, "offset": offset}
    except KafkaException as exc:
        raise BrokerError(f"the canary could not be consumed through {endpoint!r}: {exc}") from None
    finally:
        consumer.close()
    raise UnreachableError(f"the canary produced through {endpoint!r} did not come back within {timeout_s:g}s")
