"""A consumer group's committed offsets, for every runbook that moves them (kafka-replay,
kafka-drain-stuck, kafka-failover, kafka-failback): wait for the group to be empty, alter its offsets,
save them as `kafka-consumer-groups.sh --export` CSV and put them back from it. Each function takes the
client the runbook got from its Env (`env.kafka(cluster)`), so the driver closes it with the step:

    with run.kafka(params.cluster) as kafka:
        inactive_group(kafka, group, wait_s=30)
        snapshot = save_offsets_snapshot(kafka, group, partitions, run.settings.snapshot_dir, name)
        alter(kafka, group, {("orders", 0): 42})
"""
from __future__ import annotations

import time
from pathlib import Path

from mq_runbooks.base.errors import BrokerError, PreconditionError
from mq_runbooks.base.files import write_file
from mq_runbooks.flows.replay_spec import RUNBOOK as REPLAY_ID, parse_offsets_csv
from mq_runbooks.integrations.kafka import ConsumerGroup, KafkaClient
from mq_runbooks.kit.records import Restore, Snapshot

__all__ = ["alter", "inactive_group", "restore_command", "restore_offsets", "save_offsets_snapshot"]


def inactive_group(kafka: KafkaClient, group: str, wait_s: float) -> ConsumerGroup:
    """The group once it is Empty (or Dead: no members, nothing committed yet); PreconditionError listing
    the active members when it is not within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        described = kafka.describe_group(group)
        if described.state in ("Empty", "Dead"):
            return described
        if time.monotonic() >= deadline:
            members = "\n".join(
                f"  - {m.client_id} on {m.host} (member {m.member_id}): "
                + (", ".join(f"{t}:{p}" for t, p in m.assignment) or "no partitions")
                for m in described.members
            )
            waited = f" after waiting {wait_s:.0f}s" if wait_s else ""
            raise PreconditionError(
                f"offsets of group {group!r} can only be reset when it is inactive, but its state is "
                f"{described.state}{waited}. Stop its consumers (or pass wait_for_inactive=SECONDS). "
                f"Active members:\n{members or '  (none listed)'}"
            )
        time.sleep(1)


def alter(kafka: KafkaClient, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Alter the offsets; BrokerError listing each partition that failed (others may have succeeded)."""
    errors = kafka.alter_group_offsets(group, offsets)
    failed = {tp: error for tp, error in errors.items() if error}
    if failed:
        listed = ", ".join(f"{t}:{p} ({e})" for (t, p), e in sorted(failed.items()))
        raise BrokerError(f"altering offsets of group {group!r} failed for {len(failed)} partition(s): {listed}")


def restore_command(cluster: str, group: str, snapshot_path: Path | str) -> str:
    """The command that puts a group's offsets back from an `--export` CSV (kafka-replay's from_file)."""
    return f"runbook run {REPLAY_ID} -p cluster={cluster} -p group={group} -p from_file={snapshot_path}"


def save_offsets_snapshot(kafka: KafkaClient, group: str, partitions: list[tuple[str, int]],
                          directory: Path, name: str) -> Snapshot:
    """The group's committed offsets of `partitions`, as the Java tool's --export CSV in a file, with
    the kafka-replay command that restores them."""
    committed = kafka.committed_offsets(group)
    text = "".join(f"{t},{p},{committed[(t, p)]}\n" for t, p in partitions if (t, p) in committed)
    path = write_file(Path(directory) / f"{name}.csv", text)  # 0600, in a directory made 0700
    command = restore_command(kafka.name, group, path)
    return Snapshot(summary=f"committed offsets of {group} on {kafka.name} saved to {path}",
                    path=str(path), csv=text, restore_command=command,
                    data={"group": group, "cluster": kafka.name})


def restore_offsets(kafka: KafkaClient, group: str, partitions: list[tuple[str, int]], snapshot: Snapshot) -> Restore:
    """Put back the offsets of a snapshot; partitions that had none before cannot be un-committed by
    this client, so they are named with the command that removes them."""
    offsets = parse_offsets_csv(snapshot.csv) if snapshot.csv.strip() else {}
    if offsets:
        alter(kafka, group, offsets)
    had_none = [f"{t}:{p}" for t, p in sorted(partitions) if (t, p) not in offsets]
    extra = ""
    if had_none:
        extra = (f"; {len(had_none)} partition(s) had no committed offset before and keep the new one "
                 f"({', '.join(had_none[:10])}): remove them with kafka-consumer-groups.sh --delete-offsets "
                 f"--group {group} --topic TOPIC")
    return Restore(summary=f"restored {len(offsets)} offset(s) from the snapshot of {group}{extra}", restored=True,
                   restore_command=snapshot.restore_command,
                   data={"offsets_restored": len(offsets), "had_no_offset_before": had_none})
