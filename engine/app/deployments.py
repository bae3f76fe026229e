"""Runs started through the deployments `runbook serve` registers (one per catalog runbook, named
`<id>/<RUNBOOK_DEPLOYMENT>`), with Prefect's flow-run idempotency keys so one alert occurrence is one run, across
repeats and across `serve` replicas."""
from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from mq_runbooks.base.catalog import Runbook
from mq_runbooks.base.errors import NotFoundError
from mq_runbooks.app.runs import RUNBOOK_TAG
from mq_runbooks.kit.lock import lock_tag


def deployment_name(runbook_id: str, name: str) -> str:
    return f"{runbook_id}/{name}"


def alert_tag(occurrence_key: str) -> str:
    return f"alert:{occurrence_key[:32]}"


class DeploymentStarter:
    """Starts runs from the catalog's deployments over one long-lived Prefect client (a client per
    request costs a connection and a version check each time); deployment ids are cached."""

    # Occurrences this process has already started: Alertmanager repeats a notification every
    # group_interval, and a burst of repeats should not each cost a write on the Prefect server.
    # Only a shortcut: Prefect's idempotency key still decides, for this replica and the others.
    SEEN_MAX, SEEN_TTL_S = 10_000, 3600.0

    def __init__(self, deployment: str, max_concurrent_writes: int = 4) -> None:
        self._deployment = deployment
        self._client = get_client(sync_client=True)
        self._client.__enter__()
        self._deployment_ids: dict[str, uuid.UUID] = {}
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._seen_lock = threading.Lock()
        # SQLite behind the Prefect server slows down under concurrent writes: queue them here.
        self._writes = threading.BoundedSemaphore(max_concurrent_writes)

    def close(self) -> None:
        self._client.__exit__(None, None, None)

    def _deployment_id(self, runbook_id: str) -> uuid.UUID:
        if runbook_id not in self._deployment_ids:
            try:
                deployment = self._client.read_deployment_by_name(deployment_name(runbook_id, self._deployment))
            except ObjectNotFound:
                raise NotFoundError(
                    f"no deployment {deployment_name(runbook_id, self._deployment)!r} on the Prefect server: "
                    f"is `runbook serve` running (with RUNBOOK_DEPLOYMENT={self._deployment})?"
                ) from None
            self._deployment_ids[runbook_id] = deployment.id
        return self._deployment_ids[runbook_id]

    def __call__(self, runbook: Runbook, params: BaseModel, requested_by: str, trigger: dict[str, Any],
                 idempotency_key: str | None = None, tags: list[str] | None = None) -> tuple[str, bool]:
        """Create a flow run of the runbook's deployment; returns (run id, whether it already existed)."""
        if idempotency_key is not None:
            with self._seen_lock:
                seen = self._seen.get(idempotency_key)
                if seen is not None and time.monotonic() - seen[1] < self.SEEN_TTL_S:
                    return seen[0], True
        run_id, existed = self._create(runbook, params, requested_by, trigger, idempotency_key, tags)
        if idempotency_key is not None:
            with self._seen_lock:
                self._seen[idempotency_key] = (run_id, time.monotonic())
                while len(self._seen) > self.SEEN_MAX:
                    self._seen.popitem(last=False)
        return run_id, existed

    def forget(self, run_ids: set[str]) -> None:
        """Drop occurrences whose run crashed from the shortcut, so a repeat of the alert starts a new run."""
        with self._seen_lock:
            for key in [key for key, (run_id, _) in self._seen.items() if run_id in run_ids]:
                del self._seen[key]

    def _create(self, runbook: Runbook, params: BaseModel, requested_by: str, trigger: dict[str, Any],
                idempotency_key: str | None, tags: list[str] | None) -> tuple[str, bool]:
        request_id = uuid.uuid4().hex
        parameters = {"params": params.model_dump(mode="json"), "requested_by": requested_by,
                      "trigger": {**trigger, "request_id": request_id}}
        all_tags = [RUNBOOK_TAG, f"runbook:{runbook.id}", lock_tag(runbook.lock_key(params)), *(tags or [])]
        with self._writes:
            return self._create_locked(runbook, parameters, idempotency_key, all_tags, request_id)

    def _create_locked(self, runbook: Runbook, parameters: dict[str, Any],
                       idempotency_key: str | None, all_tags: list[str], request_id: str) -> tuple[str, bool]:
        try:
            flow_run = self._client.create_flow_run_from_deployment(
                self._deployment_id(runbook.id), parameters=parameters, idempotency_key=idempotency_key,
                tags=all_tags,
            )
        except ObjectNotFound:  # the deployment was deleted and registered again: look it up afresh
            self._deployment_ids.pop(runbook.id, None)
            flow_run = self._client.create_flow_run_from_deployment(
                self._deployment_id(runbook.id), parameters=parameters, idempotency_key=idempotency_key,
                tags=all_tags,
            )
        existed = (flow_run.parameters.get("trigger") or {}).get("request_id") != request_id
        if existed and idempotency_key is not None and flow_run.state and flow_run.state.is_crashed():
            # The run of this occurrence died with its process: a repeat notification starts a new one
            # (the same key on every replica, so they still agree on one run).
            return self._create_locked(runbook, parameters, f"{idempotency_key}:after:{flow_run.id}", all_tags,
                                       request_id)
        return str(flow_run.id), existed
