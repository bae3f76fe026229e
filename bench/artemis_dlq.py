"""Benchmark: redelivering a dead-letter queue of 100,000 messages on the local Artemis primary through
the runbook `artemis-dlq-redeliver` (a real run: plan, approval, re-plan, snapshot, batches, verify)
against Artemis' own `retryMessages()` called through Jolokia, alternately in the same run.

It runs on an Artemis primary of its own (dev/stack with a private STACK_DIR and ports, its heap raised
to 1 GB, stopped at the end), never on the shared stack's pair: dead-lettering 100,000 messages in
one call ran the stack's 256 MB broker out of heap, and so did retryMessages() over 100,000 (one
transaction); the runbook moves in batches of batch_size. Each round makes a queue whose dead-letter address is a DLQ of its
own, fills it over AMQP (each message with a unique msg_id), dead-letters every message with Artemis'
sendMessagesToDeadLetterAddress (10,000 per call), redelivers, then consumes the queue and counts
every msg_id: lost (never arrived, or left in the DLQ) and duplicated must both be 0.

The runbook's rate is messages / (outcome - approval), from its journal's timestamps: everything the
run does after the approval (re-plan, snapshot, every batch, verify). The plan before the gate (the
DLQ listed through Jolokia's browse) is reported beside it, not counted.

    .venv/bin/python bench/artemis_dlq.py [--messages 100000] [--rounds 3] [--batch-size 100000] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from mq_runbooks.integrations.artemis import ArtemisManagement  # noqa: E402
from mq_runbooks.integrations.artemis_amqp import AmqpSession  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = "artemis-dlq-redeliver"
DEAD_LETTER_CHUNK = 10_000
PRIVATE_PORTS = {"STACK_ARTEMIS_PRIMARY_PORT": "61757", "STACK_ARTEMIS_PRIMARY_HTTP_PORT": "8302",
                 "STACK_ARTEMIS_BACKUP_PORT": "61758", "STACK_ARTEMIS_BACKUP_HTTP_PORT": "8303"}
os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")  # the stack's Prefect server


def prepare(cluster, messages: int) -> tuple[str, str, list[str]]:
    """A queue whose dead letters go to its own DLQ, `messages` of it dead-lettered there."""
    queue = f"bench-dlq-{uuid.uuid4().hex[:8]}"
    dlq = f"{queue}.dlq"
    ids = [f"{queue}-{i}" for i in range(messages)]
    with ArtemisManagement.from_cluster(cluster) as artemis:
        artemis.set_address_settings(queue, {"deadLetterAddress": dlq, "maxDeliveryAttempts": 10})
        artemis.create_queue(dlq)
        artemis.create_queue(queue)
    with AmqpSession.from_cluster(cluster, "bench-fill", timeout_s=60) as amqp:
        amqp.sender(queue).send_many((f"body of {i}", {"msg_id": i, "seq": n}) for n, i in enumerate(ids))
    with ArtemisManagement.from_cluster(patient(cluster)) as artemis:
        dead = sum(int(artemis.exec(artemis.queue_mbean(queue), "sendMessagesToDeadLetterAddress",
                                    f"seq >= {start} AND seq < {start + DEAD_LETTER_CHUNK}"))
                   for start in range(0, messages, DEAD_LETTER_CHUNK))
        if dead != messages or artemis.queue(dlq).message_count != messages:
            raise SystemExit(f"dead-lettered {dead} of {messages}")
    return queue, dlq, ids


def patient(cluster):
    """The cluster with a Jolokia timeout long enough for one call over 100,000 messages."""
    return cluster.model_copy(update={"request_timeout_s": 600})


def count_ids(cluster, queue: str, expected: int) -> Counter:
    seen: Counter = Counter()
    with AmqpSession.from_cluster(cluster, "bench-count") as amqp:
        for received in amqp.receive(queue, expected + 1, timeout_s=5.0):
            seen[received.properties.get("msg_id")] += 1
    return seen


def cleanup(cluster, queue: str, dlq: str) -> int:
    with ArtemisManagement.from_cluster(cluster) as artemis:
        left = artemis.queue(dlq).message_count
        artemis.destroy_queue(queue)
        artemis.destroy_queue(dlq)
        artemis.remove_address_settings(queue)
    return left


def by_jolokia(cluster, dlq: str, messages: int) -> dict[str, float]:
    started = time.monotonic()
    with ArtemisManagement.from_cluster(patient(cluster)) as artemis:  # one call moves them all
        retried = int(artemis.exec(artemis.queue_mbean(dlq), "retryMessages()"))
    seconds = time.monotonic() - started
    if retried != messages:
        raise SystemExit(f"retryMessages moved {retried} of {messages}")
    return {"seconds": seconds}


def by_runbook(dlq: str, batch_size: int) -> dict[str, float]:
    from mq_runbooks.app import runs, starts
    from mq_runbooks.base.catalog import load_catalog
    from mq_runbooks.base.settings import Settings
    from mq_runbooks.kit import journal

    settings = Settings.from_environ()
    catalog = load_catalog(settings.catalog, settings.team_catalog)
    runbook = catalog.get(RUNBOOK)
    params = runbook.validate_parameters({"cluster": "primary", "dlq": dlq, "batch_size": str(batch_size)})
    run_id = starts.start_run(settings, runbook, params, requested_by="alice")
    view = wait(run_id, lambda v: v.state_type == "PAUSED" or v.finished, 1800)
    start = journal.last(view.entries, "parameters")
    plan = journal.last(view.entries, "plan")
    runs.answer_gate(settings, catalog, run_id, True, "grace", "bench")
    wait_final(run_id, 1800)  # the run's state only: reading its journal while it works would load the machine
    view = runs.read_run(run_id)
    if not view.succeeded:
        raise SystemExit(f"the run failed: {view.message}")
    approval = journal.last(view.entries, "approval")
    outcome = journal.last(view.entries, "outcome")
    actions = [e for e in view.entries if e.kind == "action"]
    snapshot = journal.last(view.entries, "snapshot")
    verification = journal.last(view.entries, "verification")
    for e in view.entries:  # where the time went after the approval
        if e.at >= approval.at:
            print(f"  +{(e.at - approval.at).total_seconds():7.2f}s {e.kind:12} {e.summary[:70]} "
                  f"{e.data.get('move_s', '')}", flush=True)
    move_s = sum(float(e.data.get("move_s", 0)) for e in actions)
    return {"seconds": (outcome.at - approval.at).total_seconds(), "plan_s": (plan.at - start.at).total_seconds(),
            "snapshot_s": (snapshot.at - approval.at).total_seconds(),
            "act_s": (actions[-1].at - snapshot.at).total_seconds(), "move_s": move_s,
            "verify_s": (verification.at - actions[-1].at).total_seconds(),
            "outcome_s": (outcome.at - verification.at).total_seconds(), "batches": len(actions)}


def wait_final(run_id: str, timeout: float) -> None:
    """Until the run is in a final state, polling only its state (one cheap query a second): the
    reference's measurement has no observer beside it either."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(UUID(run_id)).state
            if state is not None and state.is_final():
                return
            time.sleep(1.0)
    raise SystemExit(f"run {run_id} did not end in {timeout:g}s")


def wait(run_id: str, done, timeout: float):
    from mq_runbooks.app import runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = runs.read_run(run_id)
        if done(view):
            return view
        time.sleep(0.5)
    raise SystemExit(f"run {run_id} did not get there in {timeout:g}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("RUNBOOK_SNAPSHOT_DIR", tempfile.mkdtemp(prefix="bench-artemis-dlq-"))
    os.environ.setdefault("RUNBOOK_POSTMORTEM_DIR", tempfile.mkdtemp(prefix="bench-artemis-dlq-postmortems-"))
    stack_dir = Path(tempfile.mkdtemp(prefix="bench-artemis-stack-"))
    os.environ.update(PRIVATE_PORTS)  # clusters.yaml, and the runs this process starts, read them
    stack = [str(REPO / "dev" / "stack")]
    env = {**os.environ, "STACK_DIR": str(stack_dir)}
    for attempt in ("create", "with 1 GB"):
        started = subprocess.run([*stack, "up", "artemis-primary"], env=env, capture_output=True, text=True,
                                 timeout=300)
        if started.returncode != 0:
            raise SystemExit(f"could not start a private Artemis primary: {started.stdout}{started.stderr}")
        if attempt == "create":  # dev/stack made the instance with 256 MB: give retryMessages() room
            subprocess.run([*stack, "down", "artemis-primary"], env=env, capture_output=True, timeout=120)
            profile = stack_dir / "artemis-primary" / "instance" / "etc" / "artemis.profile"
            profile.write_text(profile.read_text().replace("-Xmx256M", "-Xmx1G"))
    try:
        run_rounds(args)
    finally:
        subprocess.run([*stack, "down", "artemis-primary"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(stack_dir, ignore_errors=True)


def run_rounds(args: argparse.Namespace) -> None:
    cluster = load_clusters(REPO / "clusters.yaml").artemis_cluster("primary")
    results: dict[str, list[dict[str, float]]] = {"runbook artemis-dlq-redeliver": [], "retryMessages() via Jolokia": []}
    for _ in range(args.rounds):
        for label in results:
            queue, dlq, ids = prepare(cluster, args.messages)
            try:
                measured = (by_runbook(dlq, args.batch_size) if label.startswith("runbook")
                            else by_jolokia(cluster, dlq, args.messages))
                seen = count_ids(cluster, queue, args.messages)
            finally:
                left = cleanup(cluster, queue, dlq)
            measured["lost"] = sum(1 for i in ids if seen[i] == 0) + left
            measured["duplicated"] = sum(n - 1 for n in seen.values() if n > 1)
            measured["rate"] = args.messages / measured["seconds"]
            measured["load"] = os.getloadavg()[0]
            results[label].append(measured)
            print(f"{label}: {measured}", flush=True)
    report = render(results, args)
    print(report)
    if args.out:
        args.out.write_text(report)


def render(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> str:
    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rows = []
    for label, runs in results.items():
        each = ", ".join(f"{r['rate']:,.0f}" for r in runs)
        lost, duplicated = sum(r["lost"] for r in runs), sum(r["duplicated"] for r in runs)
        rows.append(f"| {label} | {median(runs, 'rate'):,.0f} | {each} | {lost:.0f} | {duplicated:.0f} |")
    runbook_runs, reference_runs = results.values()
    loads = ", ".join(f"{r['load']:.1f}" for runs in results.values() for r in runs)
    ratio = median(runbook_runs, "rate") / median(reference_runs, "rate")
    return "\n".join([
        f"Redelivering {args.messages:,} dead letters (AMQP, durable) from a DLQ of their own to their queue on a "
        f"private Artemis 2.40 primary (1 GB heap), {args.rounds} round(s), runbook and retryMessages() alternately; the "
        f"runbook with batch_size={args.batch_size}.", "",
        "| redelivery | median msg/s | each round | lost (incl. left in the DLQ) | duplicated |",
        "|---|---:|---|---:|---:|", *rows, "",
        f"Runbook / retryMessages() throughput ratio: {ratio:.2f} (load average after each measurement "
        f"{loads} on {os.cpu_count()} CPUs).",
        f"The runbook's time is its journal's approval -> outcome; medians: approval -> snapshot (re-plan, "
        f"snapshot CSV) {median(runbook_runs, 'snapshot_s'):.1f} s, {median(runbook_runs, 'batches'):.0f} batch "
        f"step(s) {median(runbook_runs, 'act_s'):.1f} s (of it Artemis' moveMessages {median(runbook_runs, 'move_s'):.1f} s), "
        f"verify {median(runbook_runs, 'verify_s'):.1f} s, outcome {median(runbook_runs, 'outcome_s'):.1f} s; "
        f"retryMessages() {median(reference_runs, 'seconds'):.1f} s. Its plan before the gate (the DLQ listed "
        f"through Jolokia's browse, not counted) took {median(runbook_runs, 'plan_s'):.1f} s.", ""])


if __name__ == "__main__":
    main()
