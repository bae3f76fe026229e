"""The one connection to the Prefect API the package opens (the only module that builds Prefect's
client). A `Session` offers typed reads and writes, grouped by concept (flow_runs.py, artifacts.py,
leases.py, deployments.py); it never hands out the client itself.

    with connect() as prefect:
        run = prefect.read_flow_run(run_id)
        prefect.set_flow_run_state(run_id, state, force=True)

One session for several calls saves a connection each (a TLS context, ~0.1 s); a long-lived one
(app/starts.py) is opened with `Session().open()` and closed with `close()`. The client is Prefect's
synchronous one, with its own retries and timeouts; its errors (ObjectNotFound, PrefectHTTPStatusError,
httpx errors) reach the caller unchanged."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client

from mq_runbooks.kit.gateway.artifacts import Artifacts
from mq_runbooks.kit.gateway.deployments import Deployments
from mq_runbooks.kit.gateway.flow_runs import FlowRuns
from mq_runbooks.kit.gateway.leases import Leases


class Session(FlowRuns, Artifacts, Leases, Deployments):
    def __init__(self) -> None:
        self._client = get_client(sync_client=True)

    def open(self) -> "Session":
        self._client.__enter__()
        return self

    def close(self) -> None:
        self._client.__exit__(None, None, None)

    def __enter__(self) -> "Session":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self._client.__exit__(*exc_info)


@contextmanager
def connect() -> Iterator[Session]:
    """A session for the block (see the module's docstring)."""
    with Session() as session:
        yield session
