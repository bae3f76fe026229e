"""`runbook serve`'s API for people, version 1: what a person does with the CLI, through serve, so
that people never hold the Prefect credential (it stays with serve and the workers).

    GET  /api/v1/whoami                  who the request proves you are
    POST /api/v1/runs                    {"runbook": ID, "parameters": {...}} -> 201 {"run_id", ...}
    GET  /api/v1/runs?runbook=&state=&mine=true&limit=   recent runs, newest first (as `runbook runs --json`)
    GET  /api/v1/runs/{run}              a run: state, who it waits for, its journal (?whole=true: uncut)
    POST /api/v1/runs/{run}/approve      {"comment": ...} -> the run's verdict on the answer
    POST /api/v1/runs/{run}/reject       {"reason": ...}  -> the run's verdict on the answer
    POST /api/v1/runs/{run}/cancel       {"reason": ...}  -> the run, cancelled (it has not acted yet)
    POST /api/v1/plan                    {"runbook": ID, "parameters": {...}} -> the plan (as `runbook plan --json`,
                                         plus its Markdown); nothing is changed
    GET  /api/v1/postmortems?runbook=&status=   postmortems, newest first (front matter and id)
    GET  /api/v1/postmortems/{id}        one postmortem: {"meta", "body"}
    POST /api/v1/postmortems/{id}/review {"note": ...} -> reviewed by whoever the request proves
    POST /api/v1/tokens/mine             -> 201 {"name", "token"}: a new personal token for the caller,
                                         replacing theirs; only for an identity the proxy asserts
                                         (a token never mints tokens)
    DELETE /api/v1/tokens/mine           revoke the caller's own token

Each request proves who makes it: a personal token (`Authorization: Bearer rbt_...`, as `runbook
tokens issue` made it) or the identity a trusted authenticating proxy asserts (RUNBOOK_TRUSTED_PROXIES,
RUNBOOK_IDENTITY_HEADERS), as the review pages take it. serve judges an answer as it judges a Slack
click (the runbook's policy, teams.yaml's people) and signs it; the run checks it again. A run
started here is requested by whoever the request proves, never by a name in the body. Answers:
401 (no proof), 400 (bad input, naming what and what is allowed), 403 (refused, with the reason),
404 (no such run or runbook), 503 (Prefect does not answer).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mq_runbooks.app.http import BodyTooLarge, Services, error, read_body
from mq_runbooks.app.run_documents import run_document
from mq_runbooks.app.web_identity import IdentityRefused, proxy_identity
from mq_runbooks.base.catalog import refuse_file_parameters
from mq_runbooks.base.errors import NotFoundError, RunbookError, UnreachableError, UsageError
from mq_runbooks.base.json_limits import TooDeep, loads_limited
from mq_runbooks.kit.identity import PROXY_PROOF, TOKEN_PREFIX, verify_answer
from mq_runbooks.kit.signing import signing_key
from mq_runbooks.kit.teams import teams_for

log = logging.getLogger("runbook.api")
MAX_API_BODY_BYTES = 64 * 1024


class Refused(Exception):
    """The person may not do this: 401 when they proved nothing, else 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _caller(services: Services, request: Request) -> tuple[str, str]:
    """(who, raw proof) the request proves: a personal token, else a trusted proxy's identity."""
    settings = services.settings
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        proof = TOKEN_PREFIX + value.strip()
        who, refused = verify_answer("", proof, teams_for(settings), settings.deployment, key=signing_key(settings))
        if refused:
            raise Refused(401, refused)
        return who, proof
    try:
        identity = proxy_identity(settings, request.headers, request.client.host if request.client else None)
    except IdentityRefused as exc:
        raise Refused(401, f"say who you are: a personal token (Authorization: Bearer ...), or come through the "
                           f"authenticating proxy ({exc})") from None
    return identity.name, PROXY_PROOF


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await read_body(request, MAX_API_BODY_BYTES)
    except BodyTooLarge:
        raise UsageError(f"the body is larger than {MAX_API_BODY_BYTES} bytes") from None
    if not body.strip():
        return {}
    try:
        document = loads_limited(body)
    except TooDeep as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UsageError("the body must be a JSON object")
    return document


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key, "")
    if not isinstance(value, str):
        raise UsageError(f"{key} must be text")
    return value


def run_json(view, whole: bool = False) -> dict[str, Any]:
    """A run as the API (and `runbook status --json`) gives it: app/run_documents.py."""
    return run_document(view, whole=whole)


def add_api_routes(app: FastAPI, services: Services) -> None:
    from mq_runbooks.app import runs

    async def answered(request: Request, work) -> Response:
        """Run `work(who, proof, body)` in a thread and map the engine's errors onto HTTP answers."""
        try:
            who, proof = await run_in_threadpool(_caller, services, request)
            body = await _json_body(request)
            status, document = await run_in_threadpool(work, who, proof, body)  # document: a dict or a list
            return JSONResponse(json.loads(json.dumps(document, default=str)), status_code=status)
        except Refused as exc:
            log.info("api request refused (%s): %s", exc.status, exc)
            return error(exc.status, str(exc))
        except NotFoundError as exc:
            return error(404, str(exc))
        except UsageError as exc:
            text = str(exc)
            return error(403, text.removeprefix("refused: ")) if text.startswith("refused: ") else error(400, text)
        except UnreachableError as exc:
            return error(503, str(exc))
        except RunbookError as exc:
            return error(409, str(exc))

    def whoami(who: str, proof: str, body: dict) -> tuple[int, dict]:
        from mq_runbooks.kit.identity import proof_kind

        return 200, {"name": who, "proof": proof_kind(proof)}

    def requested(body: dict):
        """(the runbook, its validated parameters) a request names."""
        runbook_id, parameters = _text(body, "runbook"), body.get("parameters", {})
        if not isinstance(parameters, dict) or not all(isinstance(v, (str, int, float, bool, list)) for v in
                                                       parameters.values()):
            raise UsageError('parameters must be an object of values, e.g. {"cluster": "primary", "group": "billing"}')
        runbook = services.catalog.get(runbook_id)
        refuse_file_parameters(runbook, parameters, "serve's API")  # files on serve's host are no person's input
        return runbook, runbook.validate_parameters(parameters)

    def start(who: str, proof: str, body: dict) -> tuple[int, dict]:
        runbook, params = requested(body)
        if runbook.planner is not None:  # bad input (unknown cluster, topic, group...) before a run exists
            runbook.planner(params, services.clusters())
        run_id, existed = services.start(runbook, params, who, {"source": "api", "by": who})
        return 201, {"run_id": run_id, "runbook": runbook.id, "requested_by": who}

    def restore(reference: str, preview: bool):
        def put_back(who: str, proof: str, body: dict) -> tuple[int, dict]:
            from mq_runbooks.app import restores

            request = restores.restore_request(services.catalog, reference)
            if preview:  # GET: what a restore would put back, changing nothing
                return 200, restores.restore_preview(request, services.clusters(), services.settings).to_json()
            run_id = restores.start_restore(services.settings, request, who, "api", start=services.start, by=who)
            return 201, {"run_id": run_id, "restore_of": request.run_id, "runbook": request.runbook.id,
                         "requested_by": who}
        return put_back

    def plan(who: str, proof: str, body: dict) -> tuple[int, dict]:
        from mq_runbooks.app.run_documents import plan_document, planned

        runbook, params = requested(body)
        computed, refused = planned(runbook, params, services.clusters())
        return 200, {**plan_document(computed, refused), "markdown": computed.markdown(rows=10_000)}

    def postmortem_list(request: Request):
        def read(who: str, proof: str, body: dict) -> tuple[int, list]:
            from mq_runbooks.kit.postmortem.store import list_postmortems

            query = request.query_params
            found = list_postmortems(services.settings.postmortem_dir, runbook=query.get("runbook") or None,
                                     status=query.get("status") or None)
            return 200, [{**p.meta, "id": p.id} for p in found]
        return read

    def postmortem_show(postmortem_id: str):
        def read(who: str, proof: str, body: dict) -> tuple[int, dict]:
            from mq_runbooks.kit.postmortem.store import read_postmortem

            found = read_postmortem(services.settings.postmortem_dir, postmortem_id)
            return 200, {"meta": {**found.meta, "id": found.id}, "body": found.body}
        return read

    def postmortem_review(postmortem_id: str):
        def review(who: str, proof: str, body: dict) -> tuple[int, dict]:
            from mq_runbooks.kit.identity import proof_kind
            from mq_runbooks.kit.postmortem.store import mark_reviewed

            reviewed = mark_reviewed(services.settings.postmortem_dir, postmortem_id, who, _text(body, "note")[:2000],
                                     proof={"kind": proof_kind(proof), "via": "api"})
            return 200, {"meta": {**reviewed.meta, "id": reviewed.id}}
        return review

    def token_issue(who: str, proof: str, body: dict) -> tuple[int, dict]:
        from mq_runbooks.kit.identity import issue_token

        if proof != PROXY_PROOF:
            raise UsageError("refused: a token does not mint tokens: come through the authenticating proxy to get "
                             "a new one, or ask an admin (`runbook tokens issue`)")
        settings = services.settings
        return 201, {"name": who, "token": issue_token(settings.deployment, who, signing_key(settings))}

    def token_revoke(who: str, proof: str, body: dict) -> tuple[int, dict]:
        from mq_runbooks.kit.identity import revoke_token

        revoke_token(services.settings.deployment, who)
        return 200, {"name": who, "revoked": True}

    def listing(request: Request):
        query = request.query_params

        def read(who: str, proof: str, body: dict) -> tuple[int, list]:
            from mq_runbooks.app.stuck import why_stuck_all

            runbook_id = query.get("runbook") or None
            if runbook_id is not None:
                services.catalog.get(runbook_id)  # "no runbook ...; did you mean"
            states = tuple(state.lower() for state in query.getlist("state"))
            unknown = sorted(set(states) - set(runs.STATES))
            if unknown:
                raise UsageError(f"unknown state {', '.join(unknown)} (allowed: {', '.join(runs.STATES)})")
            raw_limit = query.get("limit", "20")
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
                raise UsageError(f"limit must be a whole number from 1 to 1000, not {raw_limit!r}")
            accept = None
            if query.get("mine", "").lower() in ("1", "true", "yes"):
                def accept(view) -> bool:
                    return view.requested_by == who or runs.waits_for(services.settings, services.catalog, view, who)
            views = runs.list_runs(limit=int(raw_limit), runbook_id=runbook_id, states=states, mine=accept)
            stuck = why_stuck_all(services.settings, views)
            return 200, [{"id": v.id, "name": v.name, "runbook": v.runbook, "state": v.state, "target": v.target, "lock": v.lock,
                          "requested_by": v.requested_by, "started": v.started, "message": v.message,
                          "stuck": stuck.get(v.id)} for v in views]
        return read

    def cancel(reference: str):
        def stop(who: str, proof: str, body: dict) -> tuple[int, dict]:
            view = runs.cancel_run(services.settings, services.catalog, reference, who, _text(body, "reason"),
                                   proof=proof)
            return 200, run_json(view)
        return stop

    def status(reference: str, whole: bool):
        def read(who: str, proof: str, body: dict) -> tuple[int, dict]:
            return 200, run_json(runs.read_run(reference), whole)
        return read

    def answer(reference: str, approved: bool):
        def give(who: str, proof: str, body: dict) -> tuple[int, dict]:
            text = _text(body, "comment" if approved else "reason")
            view = runs.answer_gate(services.settings, services.catalog, reference, approved, who, text, via="api",
                                    proof=proof)
            verdict = runs.await_verdict(view.id, view.pause_key)
            if verdict is None:
                return 202, {"run_id": view.id, "verdict": None,
                             "message": f"sent; the run has not judged it within {runs.VERDICT_WAIT_S:.0f}s"}
            if verdict.kind == "approval_refused":
                raise UsageError(f"refused: {verdict.summary}")
            return 200, {"run_id": view.id, "name": view.name, "runbook": view.runbook, "approved": approved,
                         "by": verdict.data.get("by", who), "proof": verdict.data.get("proof"),
                         "verdict": verdict.summary}
        return give

    @app.get("/api/v1/whoami")
    async def api_whoami(request: Request) -> Response:
        return await answered(request, whoami)

    @app.post("/api/v1/runs")
    async def api_start(request: Request) -> Response:
        return await answered(request, start)

    @app.get("/api/v1/runs")
    async def api_runs(request: Request) -> Response:
        return await answered(request, listing(request))

    @app.post("/api/v1/runs/{reference}/cancel")
    async def api_cancel(request: Request, reference: str) -> Response:
        return await answered(request, cancel(reference))

    @app.get("/api/v1/runs/{reference}/restore")
    async def api_restore_plan(request: Request, reference: str) -> Response:
        return await answered(request, restore(reference, preview=True))

    @app.post("/api/v1/runs/{reference}/restore")
    async def api_restore(request: Request, reference: str) -> Response:
        return await answered(request, restore(reference, preview=False))

    @app.get("/api/v1/runs/{reference}")
    async def api_status(request: Request, reference: str) -> Response:
        whole = request.query_params.get("whole", "false").lower() in ("1", "true", "yes")
        return await answered(request, status(reference, whole))

    @app.post("/api/v1/runs/{reference}/approve")
    async def api_approve(request: Request, reference: str) -> Response:
        return await answered(request, answer(reference, True))

    @app.post("/api/v1/runs/{reference}/reject")
    async def api_reject(request: Request, reference: str) -> Response:
        return await answered(request, answer(reference, False))

    @app.post("/api/v1/plan")
    async def api_plan(request: Request) -> Response:
        return await answered(request, plan)

    @app.get("/api/v1/postmortems")
    async def api_postmortems(request: Request) -> Response:
        return await answered(request, postmortem_list(request))

    @app.get("/api/v1/postmortems/{postmortem_id}")
    async def api_postmortem(request: Request, postmortem_id: str) -> Response:
        return await answered(request, postmortem_show(postmortem_id))

    @app.post("/api/v1/postmortems/{postmortem_id}/review")
    async def api_postmortem_review(request: Request, postmortem_id: str) -> Response:
        return await answered(request, postmortem_review(postmortem_id))

    @app.post("/api/v1/tokens/mine")
    async def api_token_issue(request: Request) -> Response:
        return await answered(request, token_issue)

    @app.delete("/api/v1/tokens/mine")
    async def api_token_revoke(request: Request) -> Response:
        return await answered(request, token_revoke)
