"""Requests as Slack sends them to our endpoints, for tests: the v0 signature, the slash command
form, and the interaction payloads (a button click, the reject modal's submission), in the shapes
Slack documents (https://docs.slack.dev/interactivity/handling-user-interaction).

The signature is computed here from its definition, independently of slack_sdk's verifier, so a
test of the verifier is not a test of itself.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def signed_request_headers(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds: `X-Slack-Request-Timestamp` and `X-Slack-Signature` =
    `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` keyed with the signing secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def slash_command_body(text: str, *, user_id: str, user_name: str = "", channel_id: str = "C0RUNBOOK",
                       response_url: str = "https://hooks.slack.com/commands/T0FAKE/1/x",
                       trigger_id: str = "1.2.trigger") -> bytes:
    """The urlencoded form Slack POSTs for `/runbook {text}`."""
    return urlencode({
        "token": "deprecated-verification-token", "team_id": "T0FAKE", "team_domain": "fake",
        "channel_id": channel_id, "channel_name": "incidents", "user_id": user_id,
        "user_name": user_name or user_id.lower(), "command": "/runbook", "text": text, "api_app_id": "A0FAKE",
        "is_enterprise_install": "false", "response_url": response_url, "trigger_id": trigger_id,
    }).encode()


def block_action_payload(action_id: str, run_id: str, *, user_id: str, channel: str, message_ts: str,
                         user_name: str = "", response_url: str = "https://hooks.slack.com/actions/T0FAKE/1/x",
                         trigger_id: str = "1.2.trigger") -> dict:
    """A click on a button (value `run_id`) in the message `message_ts` of `channel`."""
    user = {"id": user_id, "username": user_name or user_id.lower(), "name": user_name or user_id.lower(),
            "team_id": "T0FAKE"}
    return {
        "type": "block_actions", "user": user, "api_app_id": "A0FAKE", "token": "deprecated",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id, "team": {"id": "T0FAKE", "domain": "fake"}, "enterprise": None,
        "is_enterprise_install": False, "channel": {"id": channel, "name": "incidents"},
        "message": {"type": "message", "subtype": "bot_message", "ts": message_ts, "bot_id": "B0BOT", "text": ""},
        "state": {"values": {}}, "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "runbook_decision", "type": "button", "value": run_id,
                     "text": {"type": "plain_text", "text": "Approve", "emoji": True}, "action_ts": f"{time.time():.6f}"}],
    }


def view_submission_payload(run_id: str, reason: str, *, user_id: str, user_name: str = "",
                            callback_id: str = "runbook_reject_reason") -> dict:
    """The reject modal submitted with `reason` (its private_metadata is the run id)."""
    user = {"id": user_id, "username": user_name or user_id.lower(), "name": user_name or user_id.lower(),
            "team_id": "T0FAKE"}
    return {
        "type": "view_submission", "team": {"id": "T0FAKE", "domain": "fake"}, "user": user,
        "api_app_id": "A0FAKE", "token": "deprecated", "trigger_id": "1.2.trigger",
        "view": {"id": "V0FAKE", "team_id": "T0FAKE", "type": "modal", "callback_id": callback_id,
                 "private_metadata": run_id, "title": {"type": "plain_text", "text": "Reject run"},
                 "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
                 "hash": "1.abc", "root_view_id": "V0FAKE", "app_id": "A0FAKE", "bot_id": "B0BOT"},
        "response_urls": [], "is_enterprise_install": False, "enterprise": None,
    }


def interaction_body(payload: dict) -> bytes:
    """Interactions come as a urlencoded form with one field, `payload`, holding the JSON."""
    return urlencode({"payload": json.dumps(payload)}).encode()
