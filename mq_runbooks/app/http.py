"""The HTTP app of `runbook serve`: a thin edge. Each handler checks the request (size, token or
Slack signature), hands it to the engine, and answers at once; bad input gets a 4xx with a reason.

    POST /alerts/alertmanager   Alertmanager webhook (v4), bearer token
    POST /alerts/grafana        Grafana alerting webhook, bearer token
    POST /slack/commands        the /runbook slash command, Slack signature
    POST /slack/interactions    Approve / Reject buttons and the reject modal, Slack signature
    GET  /healthz, GET /metrics
"""
from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from mq_runbooks.app.alert_routing import answer_from_memory, route
from mq_runbooks.base.catalog import Catalog
from mq_runbooks.base.errors import UnreachableError
from mq_runbooks.app.metrics import CONTENT_TYPE, Metrics
from mq_runbooks.base.settings import Settings
from mq_runbooks.integrations.alerts import Alert, PayloadError, parse_alertmanager, parse_grafana

log = logging.getLogger("runbook.http")
MAX_BODY_BYTES = 1024 * 1024


@dataclass
class Services:
    """What the handlers call; tests and `runbook serve` build it."""

    settings: Settings
    catalog: Catalog
    start: Callable[..., tuple[str, bool]]
    find_runs: Callable[[str], list[str]]
    record: Callable[..., Any]
    occurrence_tag: Callable[[str], str]
    known: Callable[[str], str | None] = lambda key: None  # occurrence key -> the run this process started
    clusters: Callable[[], Any] = lambda: None  # clusters.yaml, loaded when first needed
    on_resolved: Callable[[str], Any] = lambda run_id: None  # e.g. refresh the run's postmortem draft
    metrics: Metrics = field(default_factory=Metrics)
    extra_routes: list[Callable[[FastAPI, "Services"], None]] = field(default_factory=list)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def bearer_ok(request: Request, token: str | None) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    # Bytes, not str: compare_digest refuses non-ASCII text, and a header may hold any byte.
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode("utf-8"), token.encode("utf-8"))


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="mq-runbooks", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = services.metrics
    token = services.settings.alert_token.get_secret_value() if services.settings.alert_token else None
    if token is None:
        log.warning("RUNBOOK_ALERT_TOKEN is not set: every alert webhook request will be refused with 401")

    async def receive_alerts(request: Request, source: str, parse: Callable[[bytes], list[Alert]]) -> Response:
        if not bearer_ok(request, token):
            metrics.alerts_rejected.labels("unauthorized").inc()
            log.warning("alert webhook from %s refused: missing or wrong bearer token", request.client)
            return Response(status_code=401)
        try:
            body = await read_body(request)
        except BodyTooLarge:
            metrics.alerts_rejected.labels("too_large").inc()
            return error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            alerts = parse(body)
        except PayloadError as exc:
            metrics.alerts_rejected.labels("bad_payload").inc()
            return error(400, str(exc))
        for alert in alerts:
            metrics.alerts_received.labels(source, alert.status).inc()
        try:
            result = answer_from_memory(alerts, services.catalog, services.known) or await run_in_threadpool(
                route, alerts, services.catalog, services.start, services.find_runs, services.record,
                services.occurrence_tag, services.on_resolved, services.known,
            )
        except UnreachableError as exc:  # not acknowledged: the sender retries, and keys keep it one run
            metrics.alerts_rejected.labels("prefect_unavailable").inc()
            log.warning("alert notification from %s not acknowledged: %s", source, exc)
            return error(503, str(exc))
        for item in result.started:
            metrics.alerts_matched.labels(item["runbook"]).inc()
            metrics.runs_started.labels(item["runbook"], source).inc()
        for item in result.deduplicated:
            metrics.alerts_matched.labels(item["runbook"]).inc()
            metrics.alerts_deduplicated.labels(item["runbook"]).inc()
        for item in result.not_started:
            metrics.alerts_rejected.labels("bad_parameters").inc()
        for item in result.unmatched:
            metrics.alerts_unmatched.inc()  # no alertname label: senders must not grow our series
        return JSONResponse(result.to_json(), status_code=202)

    @app.post("/alerts/alertmanager")
    async def alertmanager(request: Request) -> Response:
        return await receive_alerts(request, "alertmanager", parse_alertmanager)

    @app.post("/alerts/grafana")
    async def grafana(request: Request) -> Response:
        return await receive_alerts(request, "grafana", parse_grafana)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "runbooks": [runbook.id for runbook in services.catalog]}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    for add_routes in services.extra_routes:
        add_routes(app, services)
    return app
