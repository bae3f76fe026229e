"""What Artemis does not count for the runbooks, counted by them: how often a message was sent back
from a dead-letter queue (artemis-dlq-redeliver) or held by a stuck consumer that was closed
(artemis-drain-stuck). One JSON line per message and event, in RUNBOOK_SNAPSHOT_DIR/<kind>/, so every
worker that shares that directory reads the same counts:

    path = ledger_path(settings.snapshot_dir, "artemis-dlq-ledger", "primary", "DLQ")
    counts = read_ledger(path)                       # identity -> times recorded
    append_ledger(path, run_id, "orders", ["m-1", "m-2"])
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

__all__ = ["append_ledger", "ledger_path", "read_ledger"]


def ledger_path(snapshot_dir: Path, kind: str, cluster: str, name: str) -> Path:
    return snapshot_dir / kind / f"{cluster}-{name}.jsonl"


def read_ledger(path: Path) -> dict[str, int]:
    """identity -> times recorded, from the ledger file (none yet: {})."""
    counts: Counter[str] = Counter()
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    counts[json.loads(line)["identity"]] += 1
    except FileNotFoundError:
        pass
    return dict(counts)


def append_ledger(path: Path, run_id: str, queue: str, identities: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps({"identity": i, "queue": queue, "run": run_id, "at": at}) + "\n" for i in identities)
