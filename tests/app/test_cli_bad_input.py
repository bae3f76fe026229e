"""Odd arguments and settings on the CLI: each is a one-paragraph error naming what is wrong and
what to do, with exit 2 (bad input) or 1 (a service is down), never a traceback, never a broker call
read as a broker fault."""
from __future__ import annotations

import socket

import pytest

from tests.app.test_cli import runbook
from tests.serve_harness import free_port


def assert_clean(result, code: int, *expected: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def test_a_clusters_file_that_is_not_utf8_or_is_a_directory(tmp_path):
    latin = tmp_path / "clusters.yaml"
    latin.write_bytes("kafka:\n  primary: {bootstrap_servers: 'caf\xe9:9092'}\n".encode("latin-1"))
    plan = ("plan", "kafka-replay", "-p", "cluster=primary", "-p", "group=g", "-p", "to_latest=true")
    assert_clean(runbook(*plan, env={"RUNBOOK_CLUSTERS": str(latin)}), 2, f"{latin} is not UTF-8 text")
    assert_clean(runbook(*plan, env={"RUNBOOK_CLUSTERS": str(tmp_path)}), 2,
                 f"{tmp_path} is a directory: point RUNBOOK_CLUSTERS at the clusters.yaml file")


@pytest.mark.parametrize("limit", ["-1", "0", "100000"])
def test_runs_limit_out_of_range(limit):
    assert_clean(runbook("runs", "--limit", limit), 2, "--limit", "1<=x<=1000")


@pytest.mark.parametrize("parameter, expected", [
    ("to_datetime=0001-01-01T00:00:00.000", "before 1970-01-01T00:00:00.000Z"),
    ("group=" + "g" * 100_000, "group: String should have at most 249 characters"),
])
def test_out_of_range_replay_parameters_are_bad_input_not_broker_faults(parameter, expected):
    params = {"group": "no-such-group-xyz", "to_latest": "true"}
    key, _, value = parameter.partition("=")
    params.pop("to_latest" if key == "to_datetime" else key)
    params[key] = value
    args = [arg for name, value in params.items() for arg in ("-p", f"{name}={value}")]
    result = runbook("plan", "kafka-replay", "-p", "cluster=primary", *args)
    assert_clean(result, 2, expected)
    assert len(result.stderr) < 2000, "the error must not repeat a huge value"


def test_serve_while_prefect_is_down_says_so():
    down = f"http://127.0.0.1:{free_port()}/api"
    result = runbook("serve", "--port", str(free_port()), env={"RUNBOOK_PREFECT_API_URL": down}, timeout=120)
    assert_clean(result, 1, f"the Prefect API at {down} does not answer")


def test_serve_on_a_busy_port_names_the_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runbook("serve", "--no-runner", "--port", str(port), timeout=120)
    assert_clean(result, 2, f"cannot listen on 127.0.0.1:{port}: Address already in use")
