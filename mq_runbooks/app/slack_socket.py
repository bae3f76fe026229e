"""Slack over Socket Mode, for teams with no public URL: `runbook serve` opens a WebSocket to Slack
(`apps.connections.open` with the app-level `xapp-` token RUNBOOK_SLACK_APP_TOKEN) and receives the
`/runbook` slash command and the approval buttons there instead of on its HTTP endpoints.

Each envelope is acknowledged at once (Slack redelivers an envelope it has not seen acknowledged
within 3 seconds), then handled by the same core as the HTTP endpoints (mq_runbooks.app.slack_routes):
commands are answered through their response_url, clicks resume the gate. The connection itself
is already authenticated by the token, so there is no request signature to check. A malformed
envelope is acknowledged, logged and ignored.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.response import SocketModeResponse

from mq_runbooks.base.errors import ConfigError, RunbookError
from mq_runbooks.app.http import Services
from mq_runbooks.base.settings import Settings
from mq_runbooks.app.slack_routes import _respond, answer_click, command_reply
from mq_runbooks.integrations.slack_requests import ViewSubmission, parse_interaction, parse_slash_command

log = logging.getLogger("runbook.slack.socket")
CONNECT_RETRY_MAX_S = 60.0


def app_token(settings: Settings) -> str:
    """The app-level token, refusing what cannot be one (a bot token is the usual mix-up)."""
    token = settings.slack_app_token
    if token is None:
        raise ConfigError("Slack Socket Mode needs RUNBOOK_SLACK_APP_TOKEN (an app-level token, xapp-...)")
    value = token.get_secret_value()
    if not value.startswith("xapp-"):
        raise ConfigError("RUNBOOK_SLACK_APP_TOKEN must be an app-level token (xapp-...), with the "
                          "connections:write scope; a bot token (xoxb-...) goes in RUNBOOK_SLACK_BOT_TOKEN")
    return value


class SocketModeListener:
    """Receives Slack's commands and interactions over Socket Mode until `stop()`."""

    def __init__(self, services: Services):
        self.services = services
        api_url = services.settings.slack_api_url
        self._client = SocketModeClient(
            app_token=app_token(services.settings), logger=log,
            web_client=WebClient(base_url=api_url if api_url.endswith("/") else api_url + "/"),
        )
        self._client.message_listeners.append(self._on_message)
        self._stopped = threading.Event()

    def run(self) -> None:
        """Connect, retrying with backoff while Slack cannot be reached; the client then
        reconnects by itself when a connection drops. Returns once connected (or stopped)."""
        delay = 1.0
        while not self._stopped.is_set():
            try:
                self._client.connect()
                log.info("Slack Socket Mode connected")
                return
            except SlackApiError as exc:
                log.error("Slack refused the Socket Mode connection: %s", exc.response.get("error"))
            except Exception as exc:  # noqa: BLE001 (network errors of every kind: keep trying)
                log.warning("could not connect to Slack Socket Mode (retrying in %.0f s): %s", delay, exc)
            self._stopped.wait(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX_S)

    def start(self) -> threading.Thread:
        """`run()` in a daemon thread, so `runbook serve` starts while Slack is unreachable."""
        thread = threading.Thread(target=self.run, name="slack-socket-mode", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stopped.set()
        self._client.close()

    # Called by the client's worker threads with every message but `disconnect` (which it handles).
    def _on_message(self, client: SocketModeClient, message: dict, raw: str) -> None:
        envelope_id = message.get("envelope_id")
        if not isinstance(envelope_id, str) or not envelope_id:
            return  # hello and other control messages
        kind, payload = message.get("type"), message.get("payload")
        try:
            if kind == "slash_commands":
                self._command(envelope_id, payload, bool(message.get("accepts_response_payload")))
            elif kind == "interactive":
                self._interaction(envelope_id, payload)
            else:
                self._ack(envelope_id)
                log.info("ignored a Socket Mode envelope of type %r", kind)
        except ValueError as exc:
            self.services.metrics.slack_requests.labels("any", "malformed").inc()
            log.warning("ignored a malformed Socket Mode %s envelope: %s", kind, exc)

    def _ack(self, envelope_id: str, payload: dict | None = None) -> None:
        self._client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope_id, payload=payload))

    def _command(self, envelope_id: str, payload: object, accepts_response_payload: bool) -> None:
        try:
            if not isinstance(payload, dict):
                raise ValueError("the slash command payload is not an object")
            command = parse_slash_command(payload)
        except ValueError:
            self._ack(envelope_id)
            raise
        # Like the HTTP endpoint's answer: the person sees at once that the command arrived.
        working = {"response_type": "ephemeral", "text": f"Working on `/runbook {command.text}` ..."}
        self._ack(envelope_id, working if accepts_response_payload else None)
        self.services.metrics.slack_requests.labels("command", "accepted").inc()
        threading.Thread(target=lambda: _respond(self.services, command,
                                                 command_reply(self.services, command, self.services.start)),
                         name="slack-command", daemon=True).start()

    def _interaction(self, envelope_id: str, payload: object) -> None:
        try:
            action = parse_interaction(json.dumps(payload))
        except ValueError:
            self._ack(envelope_id)
            raise
        if not isinstance(action, ViewSubmission):
            self._ack(envelope_id)  # the click's effects show in the message the run updates
            self._click(action)
            return
        # A refused reject reason must travel in the ack, which Slack shows on the modal.
        started = time.monotonic()
        answer = self._click(action)
        if time.monotonic() - started > 3:
            log.warning("the reject reason took %.1f s to handle: Slack may have given up on it",
                        time.monotonic() - started)
        self._ack(envelope_id, answer)

    def _click(self, action) -> dict | None:
        try:
            return answer_click(self.services, action)
        except RunbookError as exc:
            log.warning("Slack interaction failed: %s", exc)
            return None
