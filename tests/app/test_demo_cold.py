"""`runbook demo` right after a cold start: Kafka brokers and MirrorMaker 2 started moments ago on fresh
data (a private stack on its own ports), as on a fresh machine's first `dev/demo`. The demo must wait for
what it needs (the group's join, its first commits), not for a fixed time."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
PRIMARY, STANDBY = "127.0.0.1:19292", "127.0.0.1:29292"
KAFKA_SERVICES = ("kafka-primary", "kafka-standby", "mirrormaker2")


def test_the_demo_passes_right_after_a_cold_start(tmp_path):
    stack_env = {**os.environ, "STACK_DIR": str(tmp_path / "stack"), "STACK_KAFKA_PRIMARY_PORT": "19292",
                 "STACK_KAFKA_STANDBY_PORT": "29292"}
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(f"""\
kafka:
  primary: {{bootstrap_servers: "{PRIMARY}"}}
  standby: {{bootstrap_servers: "{STANDBY}", standby_of: primary, replication: {{kind: mirrormaker2, source_alias: primary}}}}
""")
    started = subprocess.run([str(REPO / "dev" / "stack"), "up", *KAFKA_SERVICES], env=stack_env,
                             capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        env = {key: value for key, value in os.environ.items() if not key.startswith("RUNBOOK_")}
        env.update({"RUNBOOK_CLUSTERS": str(clusters), "RUNBOOK_TEAMS": str(REPO / "teams.yaml"),
                    "RUNBOOK_POSTMORTEM_DIR": str(tmp_path / "postmortems"),
                    "RUNBOOK_SNAPSHOT_DIR": str(tmp_path / "snapshots")})
        done = subprocess.run([str(Path(sys.executable).parent / "runbook"), "demo"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-4000:]
        assert "consumed 0 order(s)" not in done.stdout
    finally:
        subprocess.run([str(REPO / "dev" / "stack"), "down", *KAFKA_SERVICES], env=stack_env,
                       capture_output=True, timeout=120)
