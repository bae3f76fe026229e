"""Runs started through the deployments `runbook serve` registers (one per catalog runbook, named
`<id>/<id>`), with Prefect's flow-run idempotency keys so one alert occurrence is one run, across
repeats and across `serve` replicas."""
from __future__ import annotations

import uuid
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from engine.catalog import Runbook
from engine.errors import NotFoundError
from engine.runs import RUNBOOK_TAG
from flows.lock import lock_tag


def deployment_name(runbook_id: str) -> str:
    return f"{runbook_id}/{runbook_id}"


def alert_tag(occurrence_key: str) -> str:
    return f"alert:{occurrence_key[:32]}"


def start_from_deployment(runbook: Runbook, params: BaseModel, requested_by: str, trigger: dict[str, Any],
                          idempotency_key: str | None = None, tags: list[str] | None = None) -> tuple[str, bool]:
    """Create a flow run of the runbook's deployment; returns (run id, whether it already existed)."""
    request_id = uuid.uuid4().hex
    parameters = {"params": params.model_dump(mode="json"), "requested_by": requested_by,
                  "trigger": {**trigger, "request_id": request_id}}
    all_tags = [RUNBOOK_TAG, f"runbook:{runbook.id}", lock_tag(runbook.lock_key(params)), *(tags or [])]
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name(runbook.id))
        except ObjectNotFound:
            raise NotFoundError(
                f"no deployment {deployment_name(runbook.id)!r} on the Prefect server: is `runbook serve` running?"
            ) from None
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, idempotency_key=idempotency_key, tags=all_tags,
        )
    existed = (flow_run.parameters.get("trigger") or {}).get("request_id") != request_id
    return str(flow_run.id), existed
