"""The `runbook` command as a person runs it: the real console script, against the real stack."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = Path(sys.executable).parent / "runbook"
COMMANDS = ["list", "show", "doctor", "plan", "run", "approve", "reject", "runs", "status", "serve", "demo", "postmortems"]


def runbook(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUNBOOK), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command):
    result = runbook(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: runbook" in result.stdout


def test_list_and_show_read_the_catalog():
    listed = runbook("list", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [item["id"] for item in json.loads(listed.stdout)]
    assert "kafka-replay" in ids
    shown = runbook("show", "kafka-replay")
    assert shown.returncode == 0, shown.stderr
    for expected in ("to_datetime", "wait_for_inactive", "approval: 1 of @kafka-oncall", "lock: kafka:{{ cluster }}"):
        assert expected in shown.stdout


def test_unknown_runbook_is_bad_input_with_the_known_ids():
    result = runbook("show", "kafka-replya")
    assert result.returncode == 2
    assert "no runbook 'kafka-replya'" in result.stderr and "kafka-replay" in result.stderr


def test_doctor_reports_every_service_of_the_stack_reachable(clusters):
    result = runbook("doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {check["component"]: check for check in json.loads(result.stdout)}
    assert set(checks) == {"prefect", "kafka primary", "kafka standby", "rabbitmq primary", "rabbitmq standby",
                           "redis primary", "redis replica"}
    assert all(check["ok"] for check in checks.values())
    assert "RabbitMQ 3." in checks["rabbitmq primary"]["detail"]


def test_doctor_shows_unreachable_clusters_with_the_reason_and_exits_1(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text("""
kafka:
  gone: {bootstrap_servers: "127.0.0.1:1"}
rabbitmq:
  gone: {amqp_url: "amqp://guest:topsecret@127.0.0.1:2/", management_url: "http://127.0.0.1:3"}
""")
    result = runbook("doctor", "--timeout", "2", env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.count("UNREACHABLE") == 2
    assert "kafka gone" in result.stdout and "rabbitmq gone" in result.stdout
    assert "topsecret" not in result.stdout + result.stderr


def test_malformed_clusters_file_is_bad_input_naming_file_and_field(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text("kafka:\n  primary: {bootstrap: '127.0.0.1:19092'}\n")
    result = runbook("doctor", env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "kafka.primary.bootstrap: unknown key" in result.stderr
    assert "kafka.primary.bootstrap_servers: required, but missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_runbook_file_is_bad_input_naming_file_and_field(tmp_path):
    (tmp_path / "broken.yaml").write_text("id: broken\ntitle: x\n")
    result = runbook("list", env={"RUNBOOK_CATALOG": str(tmp_path)})
    assert result.returncode == 2
    assert str(tmp_path / "broken.yaml") in result.stderr and "description: required, but missing" in result.stderr
