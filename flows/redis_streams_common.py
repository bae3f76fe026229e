"""What the Redis Streams runbooks (redis-streams-drain-stuck, redis-streams-replay) share: where a run
keeps its snapshot files. Their clients come from the driver's `env.redis(cluster)`."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mq_runbooks.base.files import make_directory, write_file


def snapshot_path(directory: Path, runbook_id: str, stream: str, group: str, run_id: str, suffix: str) -> Path:
    """`<snapshot_dir>/<runbook>-<stream>-<group>-<run>.<suffix>`, the names made safe for a file name."""
    safe = "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", part)[:80] for part in (stream, group))
    return make_directory(directory) / f"{runbook_id}-{safe}-{run_id}.{suffix}"


def write_json(path: Path, document: dict[str, Any]) -> Path:
    return write_file(path, json.dumps(document, indent=2) + "\n")  # 0600: what the run saw
