"""Which runs mq-runbooks started: the engine executes no run that it did not start itself.

Whoever holds the Prefect credential (an admin) can create flow runs of the catalog's deployments
through Prefect's API or UI, with any parameters. Those are not runs a person asked for through
`runbook run`, serve's API, Slack or an alert, so the executor refuses them before the runbook's
first step (no plan, no lock, no notice): each start this package makes carries, in the run's
`trigger` parameter, an HMAC by the engine's signing key (kit/signing.py) over the runbook, the
parameters and the run's idempotency key. The idempotency key is a fresh nonce for every start (or
the alert occurrence's key), and Prefect keeps one run per deployment and key, so a signature
copied onto a second run is the same run again, not a new one.

    parameters = signed_start(key, "kafka-replay", {"params": {...}, "requested_by": "alice",
                                                      "trigger": {}}, idempotency_key)
    started_by_engine(key, "kafka-replay", flow_run.parameters, flow_run.idempotency_key)  # True
"""
from __future__ import annotations

import uuid
from typing import Any

from mq_runbooks.kit.signing import sign, verify

SIGNATURE = "start_signature"  # the key under the `trigger` parameter
PURPOSE = "start"


def new_idempotency_key() -> str:
    """A key no other start uses: what makes a copied signature name the same run again."""
    return f"start:{uuid.uuid4().hex}"


def _fields(runbook_id: str, parameters: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    trigger = {key: value for key, value in (parameters.get("trigger") or {}).items() if key != SIGNATURE}
    return {"runbook": runbook_id, "params": parameters.get("params"), "requested_by": parameters.get("requested_by"),
            "trigger": trigger, "idempotency_key": idempotency_key or ""}


def signed_start(key: bytes, runbook_id: str, parameters: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    """The run's parameters with the engine's signature of this start in `trigger`."""
    signature = sign(key, PURPOSE, _fields(runbook_id, parameters, idempotency_key))
    return {**parameters, "trigger": {**(parameters.get("trigger") or {}), SIGNATURE: signature}}


def started_by_engine(key: bytes, runbook_id: str, parameters: dict[str, Any], idempotency_key: str | None) -> bool:
    """Whether these parameters carry the engine's signature of a start of this runbook under this key."""
    trigger = parameters.get("trigger")
    signature = trigger.get(SIGNATURE) if isinstance(trigger, dict) else None
    return verify(key, PURPOSE, _fields(runbook_id, parameters, idempotency_key), signature)


def without_signature(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters the runbook's flow is called with (the signature is the executor's business)."""
    trigger = parameters.get("trigger")
    if not isinstance(trigger, dict) or SIGNATURE not in trigger:
        return parameters
    return {**parameters, "trigger": {key: value for key, value in trigger.items() if key != SIGNATURE}}


NOT_STARTED_BY_ENGINE = (
    "refused: this run was not started by mq-runbooks (it carries no start signed with the engine's key: "
    "created through Prefect's API or UI?); nothing was planned or changed. Start runs with `runbook run`, "
    "serve's API, Slack or an alert")

__all__ = ["NOT_STARTED_BY_ENGINE", "SIGNATURE", "new_idempotency_key", "signed_start", "started_by_engine",
           "without_signature"]
