"""Benchmark (issue "big incidents", step 1: where a big run's time goes): a whole
`redis-streams-drain-stuck` run that drains N entries pending on a dead consumer to a healthy one, against
a hand-written XAUTOCLAIM loop (COUNT 1000, JUSTID) doing the same claim on a copy of the setup, in the
same run, at two sizes (default 10,000 and 100,000) so the growth of the run's overhead shows.

For each size and round it records, from the run's own journal (the entries' timestamps):
  approval -> outcome     the clock the issue sets its target on (answer recorded -> outcome recorded)
  plan                    start -> approval_requested (the first plan, the gate opened)
  each span between consecutive journal entries after the approval (re-plan, snapshot, each action, verify)
and beside them: the size of `runbook status RUN --json`, the plan entry's size in the journal, and the
loop's time on its own copy. Lost/duplicated: after the run every entry must be pending on the healthy
consumer exactly once (none acknowledged, none elsewhere).

    .venv/bin/python bench/big_redis_drain.py [--sizes 10000,100000] [--rounds 1] [--out bench/results/big_redis_drain.md]

Uses the local stack's Redis primary and Prefect (dev/stack up), a catalog of this runbook alone with a
short gate timeout, and a snapshot directory in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUNBOOK, GROUP, DEAD, HEALTHY = "redis-streams-drain-stuck", "billing", "billing-dead", "billing-healthy"
IDLE_MS = 2000
os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")  # the stack's Prefect server


def prepare(client, stream: str, entries: int) -> None:
    """`entries` entries read by DEAD and never acknowledged (as bench/redis_claim.py sets them up), and
    HEALTHY present in the group."""
    from redis_claim import prepare as read_by_dead  # bench/, beside this script

    read_by_dead(client, stream, entries)
    client.xgroup_createconsumer(stream, GROUP, HEALTHY)


def loop_claim(client, stream: str) -> float:
    connection = client.connection_pool.get_connection()  # the raw reply: cursor, ids, deleted
    try:
        started = time.perf_counter()
        cursor = "0-0"
        while True:
            connection.send_command("XAUTOCLAIM", stream, GROUP, HEALTHY, IDLE_MS, cursor, "COUNT", 1000, "JUSTID")
            cursor = connection.read_response()[0]
            if cursor in (b"0-0", "0-0"):
                return time.perf_counter() - started
    finally:
        client.connection_pool.release(connection)


def misplaced(client, stream: str, entries: int) -> int:
    """Entries not pending on HEALTHY (lost), plus any pending elsewhere."""
    summary = client.xpending(stream, GROUP)
    owners = {(c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"])
              for c in summary["consumers"]}
    return abs(entries - owners.get(HEALTHY, 0)) + sum(n for name, n in owners.items() if name != HEALTHY)


def wait_idle(client, stream: str) -> None:
    while True:
        info = {(c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): c
                for c in client.xinfo_consumers(stream, GROUP)}
        if info[DEAD]["idle"] > IDLE_MS + 200:
            return
        time.sleep(0.2)


def by_runbook(settings, catalog, client, stream: str, entries: int) -> dict:
    from mq_runbooks.app import runs, starts
    from mq_runbooks.kit import journal

    runbook = catalog.get(RUNBOOK)
    params = runbook.validate_parameters({"cluster": "primary", "stream": stream, "group": GROUP,
                                          "idle_ms": str(IDLE_MS), "claim_to": HEALTHY})
    started = time.perf_counter()
    run_id = starts.start_run(settings, runbook, params, requested_by="bench")
    while True:
        view = runs.read_run(run_id)
        if view.state_type == "PAUSED" and journal.last(view.entries, "approval_requested"):
            break
        if view.finished:
            raise SystemExit(f"run {run_id} ended before its gate: {view.state} {view.message}")
        time.sleep(0.2)
    to_gate = time.perf_counter() - started
    answered = time.perf_counter()
    runs.answer_gate(settings, catalog, run_id, True, "alice", "bench")
    while not (view := runs.read_run(run_id)).finished:
        time.sleep(0.2)
    wall = time.perf_counter() - answered
    if not view.succeeded:
        raise SystemExit(f"run {run_id} did not succeed: {view.state} {view.message}")
    entries_ = view.entries
    approval = journal.last(entries_, "approval")
    outcome = journal.last(entries_, "outcome")
    after = [e for e in entries_ if e.at >= approval.at]
    spans = [(f"{a.kind}{':' + a.data['step'] if a.kind == 'action' and 'step' in a.data else ''} -> "
              f"{b.kind}{':' + b.data['step'] if b.kind == 'action' and 'step' in b.data else ''}",
              (b.at - a.at).total_seconds()) for a, b in zip(after, after[1:])]
    plan = journal.last(entries_, "plan")
    written = [(e.at.strftime("%H:%M:%S.%f")[:-3], e.kind, len(json.dumps(e.to_json())), e.summary[:90])
               for e in entries_]
    status = subprocess.run([str(REPO / ".venv" / "bin" / "runbook"), "status", run_id, "--json"],
                            capture_output=True, env=os.environ.copy())
    return {"run": run_id, "start_to_gate_s": to_gate, "approval_to_outcome_s": (outcome.at - approval.at).total_seconds(),
            "answer_to_finished_wall_s": wall, "spans": spans, "entries": written, "plan_entry_bytes": len(json.dumps(plan.to_json())),
            "journal_bytes": sum(len(json.dumps(e.to_json())) for e in entries_),
            "status_json_bytes": len(status.stdout), "status_exit": status.returncode,
            "lost": misplaced(client, stream, entries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "big_redis_drain.md"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="big-redis-"))
    catalog_dir = tmp / "runbooks"
    catalog_dir.mkdir()
    text = (REPO / "mq_runbooks" / "runbooks" / f"{RUNBOOK}.yaml").read_text()
    (catalog_dir / f"{RUNBOOK}.yaml").write_text(text.replace("timeout: 30m", "timeout: 10m"))
    os.environ["RUNBOOK_CATALOG"] = str(catalog_dir)
    os.environ["RUNBOOK_SNAPSHOT_DIR"] = str(tmp / "snapshots")

    from mq_runbooks.base.catalog import load_catalog
    from mq_runbooks.base.clusters import load_clusters
    from mq_runbooks.base.settings import Settings

    settings = Settings.from_environ()
    catalog = load_catalog(settings.catalog, settings.team_catalog)
    client = load_clusters(REPO / "clusters.yaml").redis_cluster("primary").client()
    load_before = os.getloadavg()[0]
    results: dict[int, list[dict]] = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        for _ in range(args.rounds):
            run_stream, loop_stream = f"bench-big-{uuid.uuid4().hex[:8]}", f"bench-big-{uuid.uuid4().hex[:8]}"
            try:
                prepare(client, run_stream, size)
                prepare(client, loop_stream, size)
                wait_idle(client, loop_stream)
                loop_s = loop_claim(client, loop_stream)
                loop_lost = misplaced(client, loop_stream, size)
                wait_idle(client, run_stream)
                result = by_runbook(settings, catalog, client, run_stream, size)
                result.update(loop_s=loop_s, loop_lost=loop_lost)
                results.setdefault(size, []).append(result)
                print(size, json.dumps({k: v for k, v in result.items() if k not in ("spans", "entries")}), flush=True)
                for name, seconds in result["spans"]:
                    print(f"   {seconds:8.3f} s  {name}", flush=True)
            finally:
                client.delete(run_stream, loop_stream, f"{run_stream}:dlq")
    load_after = os.getloadavg()[0]
    write(Path(args.out), results, load_before, load_after)


def write(out: Path, results: dict[int, list[dict]], load_before: float, load_after: float) -> None:
    lines = [f"# A whole redis-streams-drain-stuck run against a hand-written XAUTOCLAIM loop", "",
             "Entries pending on a dead consumer, drained to a healthy one by a real run (started, planned, "
             "answered at its gate, acted, verified) on the local stack, and the same claim by a loop "
             "(XAUTOCLAIM COUNT 1000 JUSTID) on a copy, in the same run. Times from the run's journal.", "",
             "| entries | approval → outcome s (median) | loop s | run / loop | target (2× loop + 1 s) | "
             "start → gate s | status --json bytes | plan entry bytes | journal bytes | lost (run, loop) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for size, rounds in results.items():
        run_s = statistics.median(r["approval_to_outcome_s"] for r in rounds)
        loop_s = statistics.median(r["loop_s"] for r in rounds)
        lines.append(f"| {size:,} | {run_s:.2f} | {loop_s:.2f} | {run_s / loop_s:.0f}× | {2 * loop_s + 1:.2f} | "
                     f"{statistics.median(r['start_to_gate_s'] for r in rounds):.2f} | "
                     f"{max(r['status_json_bytes'] for r in rounds):,} | {max(r['plan_entry_bytes'] for r in rounds):,} | "
                     f"{max(r['journal_bytes'] for r in rounds):,} | "
                     f"{sum(r['lost'] for r in rounds)}, {sum(r['loop_lost'] for r in rounds)} |")
    lines += ["", "Where the time after approval goes (the last round of each size: the span between consecutive "
              "journal entries):", ""]
    for size, rounds in results.items():
        lines += [f"**{size:,} entries** (run {rounds[-1]['run']}):", ""]
        lines += [f"- {seconds:.3f} s  {name}" for name, seconds in rounds[-1]["spans"]]
        lines += ["", "| written at | journal entry | bytes | summary |", "|---|---|---:|---|"]
        lines += [f"| {at} | {kind} | {size_:,} | {summary.replace('|', '/')} |"
                  for at, kind, size_, summary in rounds[-1]["entries"]]
        lines.append("")
    lines.append(f"Machine: 2 shared cores, load average {load_before:.1f} before, {load_after:.1f} after.")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
