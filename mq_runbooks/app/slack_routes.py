"""Slack's requests to `runbook serve`: the `/runbook` slash command and the approval buttons.

Every request is verified first (signing secret, v0 signature, 5-minute window): a bad one gets a
bare 401. Slack wants an answer within 3 seconds: commands are acknowledged at once and answered
through their response_url; a click resumes the gate (a fraction of a second) and the run itself
updates its approval message.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qs

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mq_runbooks.app import runs
from mq_runbooks.base.errors import RunbookError, UsageError
from mq_runbooks.app.http import BodyTooLarge, Services, read_body
from mq_runbooks.base.catalog import refuse_file_parameters
from mq_runbooks.kit.teams import people_for, person_of, teams_for
from mq_runbooks.kit import journal
from mq_runbooks.kit.gate import expand_approvers
from mq_runbooks.kit.identity import SLACK_PROOF
from mq_runbooks.kit.notify import slack_notifier
from mq_runbooks.integrations.slack import SlackUnavailable
from mq_runbooks.integrations.slack_requests import (
    BlockAction, SeenSignatures, SlashCommand, ViewSubmission, parse_command_text, parse_interaction,
    parse_slash_command, request_key, verify_request,
)

log = logging.getLogger("runbook.slack")
APPROVE, REJECT = "runbook_approve", "runbook_reject"
HELP = ("`/runbook list` · `/runbook show ID` · `/runbook plan ID key=value ...` · "
        "`/runbook run ID key=value ...` · `/runbook status RUN` · `/runbook restore RUN` · `/runbook help`")


def may_start(services: Services, runbook, verb: str, user_id: str) -> bool:
    allowed = runbook.starters.plan if verb == "plan" else (runbook.starters.run or runbook.approval.approvers)
    if "*" in allowed:
        return True
    people = people_for(services.settings)
    return person_of(user_id, people) in {person_of(name, people)
                                          for name in expand_approvers(allowed, teams_for(services.settings))}


def command_reply(services: Services, command: SlashCommand, start: Callable[..., tuple[str, bool]]) -> str:
    """The answer to a slash command (Markdown for Slack); bad input gives a helpful message."""
    try:
        verb, args, raw = parse_command_text(command.text)
    except ValueError as exc:
        return str(exc)
    catalog = services.catalog
    try:
        if verb == "help":
            return HELP
        if verb == "list":
            return "\n".join(f"• `{r.id}`: {r.title} (risk {r.risk})" for r in catalog) or "no runbooks"
        if verb == "status":
            view = runs.read_run(args[0])
            lines = [f"run `{view.id}` ({view.runbook}): *{view.state}* {view.message}"]
            waiting = view.waiting_for()
            if waiting:
                lines.append(f"waiting for {waiting}")
            lines += [f"• {e.at:%H:%M:%S} {e.kind}: {e.summary}" for e in view.entries[-8:]]
            return "\n".join(lines)
        if verb == "restore":
            return _restore_reply(services, command, args[0], start)
        runbook = catalog.get(args[0])
        if verb == "show":
            fields = runbook.parameters_model.model_fields
            params = "\n".join(f"• `{name}`: {info.description or ''}" for name, info in fields.items())
            return f"*{runbook.id}*: {runbook.title}\n{runbook.description.strip()}\nParameters:\n{params}"
        if not may_start(services, runbook, verb, command.user_id):
            reason = f"<@{command.user_id}> may not {verb} {runbook.id} from Slack"
            log.warning("refused: %s", reason)
            return f"Refused: {reason}."
        refuse_file_parameters(runbook, raw, "Slack")
        params = runbook.validate_parameters(raw)
        if verb == "plan":
            if runbook.planner is None:
                return f"{runbook.id} shows its plan when it runs: `/runbook run {runbook.id} ...`"
            return runbook.planner(params, services.clusters()).markdown(rows=20)
        trigger = {"source": "slack", "user": command.user_id, "user_name": command.user_name,
                   "channel": command.channel_id}
        # A replay of the signed request (to this replica or another) names the same run: no second one.
        run_id, existed = start(runbook, params, requested_by=command.user_id, trigger=trigger,
                                idempotency_key=command.request_key or None)
        if existed:
            return f"This request already started {runbook.id}: run `{run_id}`."
        services.metrics.runs_started.labels(runbook.id, "slack").inc()
        return (f"Started {runbook.id}: run `{run_id}`. Its plan and the Approve / Reject buttons follow "
                f"in this channel when it reaches its gate.")
    except UsageError as exc:
        return f"{exc}\n{HELP}"
    except RunbookError as exc:
        return f"Failed: {exc}"


def _restore_reply(services: Services, command: SlashCommand, reference: str,
                   start: Callable[..., tuple[str, bool]]) -> str:
    """`/runbook restore RUN`: a restore run (app/restores.py), asked by whoever may run the runbook
    from Slack; its plan and buttons follow in the channel like a run's."""
    from mq_runbooks.app import restores

    request = restores.restore_request(services.catalog, reference)
    if not may_start(services, request.runbook, "run", command.user_id):
        reason = f"<@{command.user_id}> may not restore runs of {request.runbook.id} from Slack"
        log.warning("refused: %s", reason)
        return f"Refused: {reason}."
    run_id = restores.start_restore(
        services.settings, request, command.user_id, "slack", user=command.user_id, user_name=command.user_name,
        channel=command.channel_id,
        start=lambda runbook, params, who, trigger: start(runbook, params, requested_by=who, trigger=trigger,
                                                          idempotency_key=command.request_key or None))
    services.metrics.runs_started.labels(request.runbook.id, "slack").inc()
    return (f"Started a restore of run `{request.run_id}` ({request.runbook.id}): run `{run_id}`. Its plan (what it "
            f"puts back against what is there now) and the Approve / Reject buttons follow in this channel.")


def _respond(services: Services, command: SlashCommand, text: str) -> None:
    slack = slack_notifier(services.settings)
    if slack is None or not command.response_url:
        log.warning("cannot answer /runbook (Slack not configured or no response_url): %s", text[:200])
        return
    try:
        slack.respond(command.response_url, text)
    except SlackUnavailable as exc:
        log.warning("could not answer /runbook through its response_url: %s", exc)


def answer_click(services: Services, action: BlockAction | ViewSubmission) -> dict | None:
    """Resume the gate for a click or a submitted reject reason; refusals go back to the person."""
    slack = slack_notifier(services.settings)
    if isinstance(action, BlockAction) and action.action_id == REJECT:
        if slack is not None:
            slack.open_reject_modal(action.trigger_id, action.run_id)
        return None
    approved = isinstance(action, BlockAction)
    comment = "" if approved else action.reason
    try:
        view = runs.answer_gate(services.settings, services.catalog, action.run_id, approved, action.user_id,
                                comment, via="slack", proof=SLACK_PROOF)
        services.metrics.slack_requests.labels("decision", "accepted").inc()
        requested = journal.last(view.entries, "approval_requested")
        if requested is not None:
            waited = (journal.now_utc() - requested.at).total_seconds()
            services.metrics.approval_wait.labels(view.runbook, "approved" if approved else "rejected").observe(waited)
    except UsageError as exc:
        services.metrics.slack_requests.labels("decision", "refused").inc()
        if isinstance(action, ViewSubmission):
            return {"response_action": "errors", "errors": {"reason": str(exc)[:150]}}
        if slack is not None:
            try:
                slack.post_ephemeral(action.channel, action.user_id, str(exc))
            except SlackUnavailable as slack_exc:
                log.warning("could not tell %s why their click was refused: %s", action.user_id, slack_exc)
    return None


def add_slack_routes(app: FastAPI, services: Services) -> None:
    secret = services.settings.slack_signing_secret
    if secret is None:
        log.warning("RUNBOOK_SLACK_SIGNING_SECRET is not set: every Slack request will be refused with 401")
    seen = SeenSignatures()  # a signed request is taken once: its replays get the 401 of a bad signature

    async def verified_body(request: Request) -> bytes | Response:
        try:
            body = await read_body(request, limit=256 * 1024)
        except BodyTooLarge:
            return JSONResponse({"error": "the body is too large"}, status_code=413)
        if secret is None or not verify_request(secret.get_secret_value(), request.headers, body, seen=seen):
            services.metrics.slack_requests.labels("any", "unauthorized").inc()
            log.warning("Slack request from %s refused: bad, stale or replayed signature", request.client)
            return Response(status_code=401)
        return body

    @app.post("/slack/commands")
    async def slash_command(request: Request, background: BackgroundTasks) -> Response:
        body = await verified_body(request)
        if isinstance(body, Response):
            return body
        try:
            command = parse_slash_command(body, request_key(request.headers))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        services.metrics.slack_requests.labels("command", "accepted").inc()

        def work() -> None:
            _respond(services, command, command_reply(services, command, services.start))

        background.add_task(run_in_threadpool, work)
        return JSONResponse({"response_type": "ephemeral", "text": f"Working on `/runbook {command.text}` ..."})

    @app.post("/slack/interactions")
    async def interaction(request: Request) -> Response:
        body = await verified_body(request)
        if isinstance(body, Response):
            return body
        try:
            payload = parse_qs(body.decode("utf-8", errors="replace")).get("payload", [""])[0]
            action = parse_interaction(payload)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            answer = await run_in_threadpool(answer_click, services, action)
        except RunbookError as exc:
            log.warning("Slack interaction failed: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse(answer) if answer else Response(status_code=200)
