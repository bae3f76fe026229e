"""The guide's set-up of a team catalog outside the repository (issue 27, frictions), followed as
written: a directory of its own with its runbooks, clusters.yaml and teams.yaml, and the three
variables the guide names; the CLI started there validates and plans the team's runbook."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mq_runbooks.integrations.kafka import KafkaClient

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "writing-runbooks.md"
RUNBOOK = Path(sys.executable).parent / "runbook"


def section(title: str) -> str:
    return GUIDE.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def runbook_in(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k in (
        "RUNBOOK_POSTMORTEM_DIR", "RUNBOOK_SNAPSHOT_DIR")}
    return subprocess.run([str(RUNBOOK), *args], cwd=directory, capture_output=True, text=True, timeout=120,
                          env={**environ, "COLUMNS": "200", **env})


def test_the_guide_sets_up_a_team_catalog_outside_the_repository(tmp_path, clusters, unique):
    setup = section("A team catalog outside the repository")
    for variable in ("RUNBOOK_TEAM_CATALOG", "RUNBOOK_CLUSTERS", "RUNBOOK_TEAMS"):
        assert f"`{variable}`" in setup, f"the guide's set-up names {variable}"

    team = tmp_path / "platform-runbooks"
    shutil.copytree(REPO / "tests" / "flows" / "retention_catalog", team / "runbooks")
    shutil.copy(REPO / "clusters.yaml", team / "clusters.yaml")
    (team / "teams.yaml").write_text("kafka-oncall: [carol, dave]\n")
    topic = unique("outside")
    with KafkaClient.from_cluster(clusters.kafka_cluster("primary")) as kafka:
        kafka.create_topic(topic, 1)
    variables = {"RUNBOOK_TEAM_CATALOG": str(team / "runbooks"), "RUNBOOK_CLUSTERS": str(team / "clusters.yaml"),
                 "RUNBOOK_TEAMS": str(team / "teams.yaml")}

    # What the guide says happens without RUNBOOK_TEAMS, started where there is no teams.yaml...
    bare = runbook_in(tmp_path, "validate", str(team / "runbooks"), RUNBOOK_TEAM_CATALOG=str(team / "runbooks"))
    assert bare.returncode == 1 and "kafka-oncall" in bare.stdout, bare.stdout + bare.stderr
    # ... and with all three, as its sketch sets them.
    checked = runbook_in(team, "validate", str(team / "runbooks"), **variables)
    assert checked.returncode == 0 and "1 valid, 0 invalid" in checked.stdout, checked.stdout + checked.stderr
    planned = runbook_in(team, "plan", "kafka-retention-extend", "-p", "cluster=primary", "-p", f"topic={topic}",
                         "-p", "retention_ms=1209600000", **variables)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert f"{topic}: retention.ms 604800000 -> 1209600000" in planned.stdout
