"""Benchmark: drafting the postmortem of a run with 5,000 log lines: wall time and peak memory.

    .venv/bin/python bench/postmortem.py [--runs N] [--lines N]    (default 9 runs, 5,000 lines;
                                                                    needs the Prefect server: dev/stack up)

Setup (untimed, once per invocation): a real flow run on the Prefect server, a journal shaped like a
kafka-replay run that failed and was restored (parameters from an alert, plan of 30 partitions,
approval, snapshot, action, error, rollback, outcome; 12 entries) and N log lines on the run
(every 100th a WARNING), written through the Prefect API in batches.

The same is set up for a run with a tenth of the lines, to show what grows with the log.
Variants, each timed N times per run in rotating order (median reported):
  draft               mq_runbooks.kit.postmortem.draft.draft_postmortem: read the journal, the flow and task run
                      states, the first warnings (filtered by level on the server), one page of the
                      newest lines and the number of lines (offset probes of one line each, then one
                      read of at most 50), build and scrub the facts, render the templates, write the
                      file. Target: <= 1 s.
  reference: read     what drafting cost before (issue 12): reading every log line of the run, page
                      by page (the 200-line pages the Prefect API allows), into one list, nothing else.
Peak memory: tracemalloc's peak of Python allocations during one extra, untimed call of each
variant (tracemalloc slows the call, so it is not used for the times), plus the process's max RSS.

Writes bench/results/postmortem.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from uuid import UUID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{os.environ.get('STACK_PREFECT_PORT', '4200')}/api")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.actions import LogCreate  # noqa: E402
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId  # noqa: E402
from prefect.states import Failed  # noqa: E402

from mq_runbooks.kit.postmortem.draft import draft_postmortem  # noqa: E402
from mq_runbooks.base.settings import Settings  # noqa: E402
from mq_runbooks.kit import journal, records  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "postmortem.md"


def make_run(lines: int) -> str:
    """A failed kafka-replay-shaped run with its journal and `lines` log lines; its id."""
    from mq_runbooks.flows.kafka_replay import kafka_replay

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(kafka_replay, parameters={}, tags=["runbook:kafka-replay",
                                                                          "bench"])
        client.set_flow_run_state(run.id, Failed(message="injected fault"), force=True)
    run_id = str(run.id)
    partitions = [{"topic": "orders", "partition": p, "current": 1000, "target": 0, "log_start": 0,
                   "log_end": 1200, "replayed": 1000} for p in range(30)]
    fired = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).isoformat()
    trigger = {"alertname": "KafkaConsumerGroupStuck", "source": "alertmanager", "status": "firing",
               "startsAt": fired, "labels": {"consumergroup": "billing", "cluster": "primary"}, "annotations": {}}
    lock = "kafka:primary:group:billing"
    csv = "".join(f"orders,{p},0\n" for p in range(30))
    for entry in (
        records.Start(summary="kafka-replay on primary/billing", runbook="kafka-replay", target="primary/billing",
                      requested_by="alert:KafkaConsumerGroupStuck", trigger=trigger,
                      parameters={"cluster": "primary", "group": "billing", "to_earliest": True}),
        records.Lock(summary=f"holding lock {lock}", key=lock, lease_id="bench"),
        records.PlanRecord(summary="30 partition(s): 30000 to replay, 0 to skip", csv=csv, markdown="(plan table)",
                           digest="d" * 64, columns=[], rows=[], changes_anything=True,
                           data={"messages_replayed": 30000, "messages_skipped": 0, "partitions": partitions}),
        records.ApprovalRequested(summary="waiting for 1 approval(s) from @kafka-oncall", runbook="kafka-replay",
                                  approvers=["@kafka-oncall"], required=1, self_approval=False, timeout_s=1800,
                                  requester="alert:KafkaConsumerGroupStuck", plan_digest="d" * 64, gate=1),
        records.ApprovalRecord(summary="approved by carol: go", by="carol", comment="go", plan_digest="d" * 64,
                               approvals=1, required=1, proof="typed", gate=1, answer="gate-1-1"),
        records.Snapshot(summary="committed offsets saved", path="/tmp/s.csv", csv=csv.replace(",0\n", ",1000\n"),
                         restore_command="runbook run kafka-replay -p cluster=primary -p group=billing "
                                         "-p from_file=/tmp/s.csv"),
        records.Error(summary="BrokerError: injected fault: step alter-offsets failed part-way, after its change "
                              "reached the broker"),
        records.Restore(summary="restored 30 offset(s) from the snapshot", restored=True,
                        data={"offsets_restored": 30, "had_no_offset_before": []}),
        records.Outcome(summary="failed and rolled back: injected fault", outcome="failed"),
    ):
        journal.write(run_id, entry)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=4)
    logs = [LogCreate(name="prefect.flow_runs", level=30 if i % 100 == 0 else 20, flow_run_id=run.id,
                      message=f"line {i}: consumer billing-worker-{i % 7} polled partition {i % 30} at offset {i}",
                      timestamp=start + dt.timedelta(milliseconds=40 * i)) for i in range(lines)]
    with get_client(sync_client=True) as client:
        for begin in range(0, lines, 1000):
            client.create_logs(logs[begin:begin + 1000])
    return run_id


def read_all_logs(run_id: str) -> list:
    """The reference: every log line of the run, read page by page into one list."""
    found: list = []
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)]))
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(log_filter=log_filter, limit=200, offset=len(found))
            found += page
            if len(page) < 200:
                return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--lines", type=int, default=5000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-postmortem-"))
    settings = Settings.from_environ({**os.environ, "RUNBOOK_POSTMORTEM_DIR": str(directory)})
    variants, sizes = {}, {}
    for lines in (args.lines // 10, args.lines):  # a tenth of the log, to show what grows with it
        run_id = make_run(lines)
        assert len(read_all_logs(run_id)) == lines, "the run does not hold the expected log lines"
        postmortem, _ = draft_postmortem(settings, run_id)
        assert f"The last 50 of {lines} log line(s)" in postmortem.body
        sizes[lines] = (run_id, postmortem.path.stat().st_size)
        variants[f"draft, {lines:,} lines"] = lambda run_id=run_id: draft_postmortem(settings, run_id)
        variants[f"reference: read, {lines:,} lines"] = lambda run_id=run_id: read_all_logs(run_id)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(args.runs):
        names = list(variants)
        names = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in names:
            began = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - began)
    peaks: dict[str, int] = {}
    for name, call in variants.items():
        tracemalloc.start()
        call()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_results(args, sizes, times, peaks, max_rss_mb)
    print(RESULTS.read_text())


def write_results(args, sizes: dict[int, tuple[str, int]], times: dict[str, list[float]], peaks: dict[str, int],
                  max_rss_mb: float) -> None:
    median = {name: statistics.median(values) for name, values in times.items()}
    small, large = sorted(sizes)
    ratio = median[f"draft, {large:,} lines"] / median[f"reference: read, {large:,} lines"]
    growth = peaks[f"draft, {large:,} lines"] / peaks[f"draft, {small:,} lines"]
    reference_growth = peaks[f"reference: read, {large:,} lines"] / peaks[f"reference: read, {small:,} lines"]
    rows = "\n".join(
        f"| {name} | {median[name] * 1000:.0f} | {min(values) * 1000:.0f} | {max(values) * 1000:.0f} "
        f"| {peaks[name] / 2**20:.1f} |" for name, values in times.items())
    RESULTS.write_text(f"""# Postmortem drafting: a run with {large:,} log lines

Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} (Python {platform.python_version()},
{os.cpu_count()} CPUs, shared with other work), against the local stack's Prefect server (SQLite), by
`bench/postmortem.py --runs {args.runs} --lines {large}` (runs {", ".join(f"`{r}`" for r, _ in sizes.values())};
{args.runs} timed rounds, order rotated per round; load average at the end {os.getloadavg()[0]:.1f}).

| variant | median ms | min ms | max ms | peak Python memory (tracemalloc), MiB |
|---|---:|---:|---:|---:|
{rows}

- **Drafting the {large:,}-line run: {median[f"draft, {large:,} lines"]:.2f} s (target <= 1 s), {ratio:.2f}x the time
  of reading its logs alone** ({-(-large // 200)} requests of 200 lines, which the draft did before issue 12).
  The draft reads the first warnings (one request filtered by level on the server), one page of the
  newest lines and counts the lines by probing offsets one line at a time (Prefect has no count of
  logs: about 2 log2(lines / 200) + 2 small requests), so its cost barely grows with the log; it reads
  the journal, states and logs over one Prefect client (each client costs a TLS context, ~0.1 s), and
  its Jinja2 templates are compiled once per process.
- Peak memory from {small:,} to {large:,} lines: the draft's grows {growth:.2f}x, reading every line into a
  list grows {reference_growth:.2f}x.
- Process max RSS after all rounds: {max_rss_mb:.0f} MiB (Prefect's imports included).
""")


if __name__ == "__main__":
    main()
