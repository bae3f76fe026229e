"""`runbook demo` as a user runs it (the installed console script, on the local stack): the whole
incident plays, the draft is written, and the demo's topic and group are gone from the primary.
Takes about 40-50 s (it starts its own `runbook serve` and waits for a real run)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from confluent_kafka.admin import AdminClient

from mq_runbooks.integrations.kafka import KafkaClient

import pytest

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]


def test_demo_plays_the_incident_writes_the_draft_and_leaves_the_primary_clean(tmp_path, clusters):
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUNBOOK_")}
    # Run from another directory (nothing lands in the repository), so its configuration is named.
    env.update({"RUNBOOK_POSTMORTEM_DIR": str(tmp_path / "postmortems"),
                "RUNBOOK_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
                "RUNBOOK_CLUSTERS": str(REPO / "clusters.yaml"), "RUNBOOK_TEAMS": str(REPO / "teams.yaml")})
    done = subprocess.run([str(Path(sys.executable).parent / "runbook"), "demo"], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    out = done.stdout
    topic = next(iter(re.findall(r"topic (demo-orders-[0-9a-f]{6}) \(3 partitions\); producing 300 orders", out)), None)
    group = next(iter(re.findall(r"group (demo-billing-[0-9a-f]{6}) deleted", out)), None)
    try:
        assert done.returncode == 0, out[-4000:]
        assert topic and group, out[-4000:]
        # Quiet: no librdkafka lines (%6|...|BGQUEUE|...), no Prefect warnings on the console.
        assert not re.search(r"^%\d\|", out, re.MULTILINE), out[-4000:]
        assert "EventsWorker" not in out and "Traceback" not in out, out[-4000:]
        run_id = re.search(r"KafkaConsumerGroupStuck started kafka-replay run ([0-9a-f-]{36})", out).group(1)
        for step in ("billing v2 committed 300 orders and billed none of them",
                     f"carol (on call) approved: runbook approve {run_id} --as carol",
                     f"action: altered 3 partition offset(s) of {group}",
                     f"billing v3 billed 300 orders again; lag is back to 0 (from 300 replayed)",
                     f"Alertmanager -> resolved: recorded in run ['{run_id}']"):
            assert step in out, f"missing {step!r} in:\n{out[-4000:]}"

        path = Path(re.search(r"postmortem draft: (\S+\.md)$", out, re.MULTILINE).group(1))
        assert path.parent == tmp_path / "postmortems" and path.is_file()
        text = path.read_text(encoding="utf-8")
        meta = yaml.safe_load(text[4:text.index("\n---\n", 4)])
        assert meta["status"] == "draft" and meta["reviewers"] == []
        assert (meta["runbook"], meta["run_id"], meta["outcome"]) == ("kafka-replay", run_id, "succeeded")
        assert f"/postmortems/{meta['id']}" in out
        assert "| carol | approved | v2 rolled back; replaying the last 15 minutes |" in text
        assert "| messages replayed | 300 | plan, outcome |" in text
        assert "alert KafkaConsumerGroupStuck resolved" in text

        with KafkaClient(clusters.kafka_cluster("primary").client_config()) as kafka:
            deadline = time.monotonic() + 15
            while topic in kafka.list_topics() and time.monotonic() < deadline:
                time.sleep(0.5)  # topic deletion reaches every broker's metadata asynchronously
            assert topic not in kafka.list_topics()
            assert group not in {name for name, _ in kafka.list_groups()}
    finally:
        _delete_standby_copy(clusters, topic)


def _delete_standby_copy(clusters, topic: str | None) -> None:
    """MirrorMaker copies the demo topic to the standby as primary.<topic> and never deletes it there;
    the demo leaves it, so the test removes it to keep the shared stack clean."""
    if not topic:
        return
    admin = AdminClient(clusters.kafka_cluster("standby").client_config())
    try:
        admin.delete_topics([f"primary.{topic}"])[f"primary.{topic}"].result(timeout=10)
    except Exception:  # noqa: BLE001  (not replicated yet, or already gone)
        pass
