"""Shared fixtures. The suite runs against the real local stack (dev/stack): `dev/test` brings it
up once before pytest starts; the `clusters` fixture makes a bare `pytest` work too."""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{os.environ.get('STACK_PREFECT_PORT', '4200')}/api")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# What runs write (postmortem drafts, snapshots) goes to a scratch directory, not the repository.
_SCRATCH = tempfile.mkdtemp(prefix="mq-runbooks-tests-")
os.environ.setdefault("RUNBOOK_POSTMORTEM_DIR", os.path.join(_SCRATCH, "postmortems"))
os.environ.setdefault("RUNBOOK_SNAPSHOT_DIR", os.path.join(_SCRATCH, "snapshots"))

from mq_runbooks.base.clusters import Clusters, load_clusters  # noqa: E402


@pytest.fixture(scope="session")
def clusters() -> Clusters:
    """The clusters of the local stack, started if they are not running."""
    subprocess.run([str(REPO / "dev" / "stack"), "up"], check=True, stdout=subprocess.DEVNULL)
    return load_clusters(REPO / "clusters.yaml")


@pytest.fixture
def unique():
    """unique('orders') -> 'orders-1a2b3c4d': names that no other test (or earlier run) uses."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


# The end-to-end modules: real runs through Prefect, a `runbook serve`, a browser, a private stack, or
# the Java tools. `dev/test --fast` leaves them out (pytest -m "not slow"); the whole suite runs them.
SLOW_MODULES = {
    "tests/engine/test_cli_replay.py", "tests/engine/test_crashed_run.py", "tests/engine/test_demo.py",
    "tests/engine/test_demo_cold.py", "tests/engine/test_durable_runs.py", "tests/engine/test_run_starter.py",
    "tests/engine/test_workers_postgres.py", "tests/engine/test_server_restart.py", "tests/engine/test_prefect_auth.py",
    "tests/engine/test_serve_alert_burst.py", "tests/engine/test_stuck_runs.py",
    "tests/engine/test_packaging.py", "tests/engine/test_review_pages.py", "tests/engine/test_serve_alerts.py",
    "tests/engine/test_serve_slack.py", "tests/engine/test_slack_socket_mode.py",
    "tests/flows/test_kafka_drain_stuck.py", "tests/flows/test_kafka_failover.py", "tests/flows/test_kafka_replay.py",
    "tests/flows/test_postmortem_runs.py", "tests/flows/test_rabbitmq_drain_stuck.py",
    "tests/flows/test_rabbitmq_failover.py", "tests/flows/test_replay_plan.py", "tests/flows/test_runbook_example.py",
    "tests/flows/test_redis_streams_drain_stuck.py", "tests/flows/test_redis_streams_replay.py",
    "tests/integrations/test_mirrormaker.py", "tests/integrations/test_rabbitmq_node_restart.py",
    "tests/kit/test_driver.py", "tests/flows/test_one_door.py",
    "tests/engine/test_serve_api.py", "tests/flows/test_artemis_dlq_redeliver.py",
    "tests/flows/test_artemis_address_full.py", "tests/flows/test_artemis_drain_stuck.py",
    "tests/flows/test_artemis_failover.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().relative_to(REPO).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
