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
