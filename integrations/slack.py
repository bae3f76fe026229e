"""Slack: the Web API calls the engine makes (approval messages, thread updates, ephemeral
replies, the reject modal, who is who), and, re-exported from the modules beside this one, the
Block Kit builders (`slack_blocks`) and the parsers of what Slack sends us (`slack_requests`).

Every Web API call is retried on 429 (after Slack's Retry-After), on 5xx and on connection errors,
a bounded number of times. A call that still fails, or an answer that lacks what Slack documents
for it, raises `SlackUnavailable`, the one error this module raises, so a caller can record "Slack could not be reached" and go on: the gate works from
the CLI and the Prefect UI without Slack.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from mq_runbooks.base.errors import BrokerError
from mq_runbooks.integrations.slack_blocks import (
    APPROVE_ACTION,
    REJECT_ACTION,
    REJECT_CALLBACK,
    ApprovalRequest,
    approval_blocks,
    approval_text,
    decided_blocks,
    reject_modal,
    timed_out_blocks,
)
from mq_runbooks.integrations.slack_requests import (
    BlockAction,
    SlashCommand,
    ViewSubmission,
    parse_command_text,
    parse_interaction,
    parse_slash_command,
    verify_request,
)

__all__ = [
    "APPROVE_ACTION", "REJECT_ACTION", "REJECT_CALLBACK",
    "ApprovalRequest", "approval_blocks", "approval_text", "decided_blocks", "reject_modal", "timed_out_blocks",
    "BlockAction", "SlashCommand", "ViewSubmission",
    "parse_command_text", "parse_interaction", "parse_slash_command", "verify_request",
    "SlackNotifier", "SlackUnavailable", "retry_handlers",
]

# Slack shows at most 40,000 characters of a message's text; a thread reply is kept far shorter.
THREAD_TEXT_MAX_CHARS = 3000


class SlackUnavailable(BrokerError):
    """A Slack call failed after its retries: Slack did not answer, kept answering 5xx or 429
    (`refused` False), refused the call (`refused` True), or answered ok without what it documents,
    e.g. a chat.getPermalink answer with no `permalink` (`odd`, also `refused`). `method` is the Web
    API method, `error` Slack's error code (`invalid_auth`, `channel_not_found`, ...) or what went
    wrong on the way (`HTTP 503`, `URLError`, `an answer without 'permalink'`)."""

    def __init__(self, method: str, error: str, detail: str = "", *, refused: bool = False, odd: bool = False):
        self.method = method
        self.error = error
        self.refused = refused
        what = (f"Slack answered {method} oddly ({error})" if odd else f"Slack refused {method}: {error}" if refused
                else f"Slack could not be reached ({method}: {error})")
        super().__init__(what + (f": {detail}" if detail else ""))


class _ServerErrors(ServerErrorRetryHandler):
    """slack_sdk retries 500 and 503 only; a gateway in front of Slack also answers 502 and 504."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:  # noqa: ANN001
        return response is not None and response.status_code >= 500


def retry_handlers(max_retries: int, backoff_s: float) -> list[RetryHandler]:
    """429 (after Retry-After), 5xx and connection errors, each retried up to `max_retries` times
    with exponential backoff from `backoff_s` seconds (plus up to 1 s of jitter). A read timeout
    is not retried: Slack may have posted the message already, and a retry would post it twice."""
    backoff = BackoffRetryIntervalCalculator(backoff_factor=backoff_s)
    return [
        RateLimitErrorRetryHandler(max_retry_count=max_retries),
        _ServerErrors(max_retry_count=max_retries, interval_calculator=backoff),
        ConnectionErrorRetryHandler(max_retry_count=max_retries, interval_calculator=backoff),
    ]


class SlackNotifier:
    """The bot's Web API calls, on one channel by default; every method returns plain data.

    >>> slack = SlackNotifier("xoxb-...", "https://slack.com/api/", "C0123456")
    >>> channel, ts = slack.post_approval_request(request)
    """

    def __init__(self, token: str, api_url: str, channel: str, *, timeout_s: float = 10,
                 max_retries: int = 3, backoff_s: float = 0.5):
        self.channel = channel
        self._timeout_s = timeout_s
        self._retry_handlers = retry_handlers(max_retries, backoff_s)
        self._client = WebClient(token=token, base_url=api_url if api_url.endswith("/") else api_url + "/",
                                 timeout=int(max(1, timeout_s)), retry_handlers=self._retry_handlers)

    # -- approval messages ---------------------------------------------------------------------

    def post_approval_request(self, request: ApprovalRequest, approved_so_far: Sequence[str] = (), *,
                              channel: str | None = None) -> tuple[str, str]:
        """Post the approval request with its buttons in `channel` (default: the notifier's);
        (channel id, message ts) to update it later and to thread the run's progress under it."""
        answer = self._call("chat.postMessage", channel=channel or self.channel, text=approval_text(request),
                            blocks=approval_blocks(request, approved_so_far), unfurl_links=False)
        return _text(answer, "chat.postMessage", "channel"), _text(answer, "chat.postMessage", "ts")

    def update_approval_request(self, channel: str, ts: str, request: ApprovalRequest,
                                approved_so_far: Sequence[str]) -> None:
        """Show who has approved so far, buttons kept (when more approvals are needed)."""
        self._call("chat.update", channel=channel, ts=ts, text=approval_text(request),
                   blocks=approval_blocks(request, approved_so_far))

    def update_decision(self, channel: str, ts: str, request: ApprovalRequest, *, approved: bool,
                        by: Sequence[str], at: datetime | None = None, comment: str = "") -> None:
        """Replace the buttons with who approved or rejected the run and when."""
        verdict = "approved" if approved else "rejected"
        self._call("chat.update", channel=channel, ts=ts, text=f"{request.runbook_id} run {request.run_id} {verdict}",
                   blocks=decided_blocks(request, approved=approved, by=by, at=at, comment=comment))

    def update_timeout(self, channel: str, ts: str, request: ApprovalRequest, *, waited: str,
                       at: datetime | None = None) -> None:
        """Replace the buttons with: nobody approved within `waited` (e.g. "30m"), rejected."""
        self._call("chat.update", channel=channel, ts=ts,
                   text=f"{request.runbook_id} run {request.run_id} timed out waiting for approval",
                   blocks=timed_out_blocks(request, waited=waited, at=at))

    # -- plain messages ------------------------------------------------------------------------

    def post_message(self, text: str, channel: str | None = None) -> tuple[str, str]:
        """A message (mrkdwn) in `channel` (default: the notifier's); (channel id, ts)."""
        answer = self._call("chat.postMessage", channel=channel or self.channel, text=_clip(text), unfurl_links=False)
        return _text(answer, "chat.postMessage", "channel"), _text(answer, "chat.postMessage", "ts")

    def post_in_thread(self, channel: str, ts: str, text: str) -> str:
        """A reply (mrkdwn) in the thread of message `ts`; the reply's ts."""
        answer = self._call("chat.postMessage", channel=channel, thread_ts=ts, text=_clip(text), unfurl_links=False)
        return _text(answer, "chat.postMessage", "ts")

    def permalink(self, channel: str, ts: str) -> str:
        """The link to message `ts` in `channel` (and so to its thread), in the workspace's own domain."""
        return _text(self._call("chat.getPermalink", channel=channel, message_ts=ts), "chat.getPermalink", "permalink")

    def post_ephemeral(self, channel: str, user: str, text: str) -> str:
        """A message only `user` sees in `channel` (e.g. why a click was refused); its message_ts."""
        answer = self._call("chat.postEphemeral", channel=channel, user=user, text=_clip(text))
        return _text(answer, "chat.postEphemeral", "message_ts")

    def respond(self, response_url: str, text: str, *, in_channel: bool = False,
                replace_original: bool = False) -> None:
        """Answer a slash command or a click through its `response_url` (ephemeral by default)."""
        webhook = WebhookClient(response_url, timeout=int(max(1, self._timeout_s)),
                                retry_handlers=self._retry_handlers)
        try:
            answer = webhook.send(text=_clip(text), response_type="in_channel" if in_channel else "ephemeral",
                                  replace_original=replace_original)
        except (SlackClientError, OSError, ValueError) as exc:
            raise SlackUnavailable("response_url", type(exc).__name__, str(exc)) from exc
        if answer.status_code != 200:
            raise SlackUnavailable("response_url", f"HTTP {answer.status_code}", answer.body[:200],
                                   refused=answer.status_code < 429)

    def open_reject_modal(self, trigger_id: str, run_id: str, runbook_id: str = "") -> str:
        """Open the modal asking why `run_id` is rejected (within 3 s of the click); the view id."""
        answer = self._call("views.open", trigger_id=trigger_id, view=reject_modal(run_id, runbook_id))
        return _text(_part(answer, "views.open", "view", dict), "views.open", "id", "view.id")

    # -- who is who ----------------------------------------------------------------------------

    def user_name(self, user_id: str) -> str:
        """The person's display name, else real name, else user name (`user_not_found` raises)."""
        user = _part(self._call("users.info", user=user_id), "users.info", "user", dict)
        profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
        name = profile.get("display_name") or user.get("real_name") or profile.get("real_name") or user.get("name")
        return _text({"name": name}, "users.info", "name", "user.name")

    def usergroup_members(self, usergroup_id: str) -> list[str]:
        """The user ids in a user group (`S0123`); an unknown group raises (`no_such_subteam`)."""
        users = _part(self._call("usergroups.users.list", usergroup=usergroup_id), "usergroups.users.list", "users", list)
        return [user for user in users if isinstance(user, str)]

    def usergroup_ids(self) -> dict[str, str]:
        """{handle: usergroup id} for every user group (to resolve `@kafka-oncall` to `S0123`)."""
        groups = _part(self._call("usergroups.list"), "usergroups.list", "usergroups", list)
        return {group["handle"]: group["id"] for group in groups
                if isinstance(group, dict) and isinstance(group.get("handle"), str) and isinstance(group.get("id"), str)}

    def auth_test(self) -> dict[str, Any]:
        """Who the token belongs to (team, bot user): the cheapest check that Slack answers."""
        return self._call("auth.test")

    # -- the one way out -----------------------------------------------------------------------

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a Web API method through slack_sdk's own method (which picks the encoding Slack
        takes for it: JSON, form or query); its answer, or SlackUnavailable."""
        try:
            answer = getattr(self._client, method.replace(".", "_"))(**params)
        except SlackApiError as exc:
            status = exc.response.status_code
            if status != 200:  # still 429 or 5xx after the retries, or a proxy's 4xx
                raise SlackUnavailable(method, f"HTTP {status}", "after retries" if status >= 429 else "") from exc
            raise SlackUnavailable(method, str(exc.response.get("error")), refused=True) from exc
        except (SlackClientError, OSError, ValueError) as exc:  # connection refused, timeout, no JSON
            raise SlackUnavailable(method, type(exc).__name__, str(exc)) from exc
        return dict(answer.data) if isinstance(answer.data, dict) else {}


def _part(answer: dict[str, Any], method: str, key: str, kind: type) -> Any:
    """`answer[key]` when it is a `kind`; else SlackUnavailable: Slack said ok, but not what it documents."""
    value = answer.get(key)
    if not isinstance(value, kind):
        raise SlackUnavailable(method, f"an answer without {key!r}", refused=True, odd=True)
    return value


def _text(answer: dict[str, Any], method: str, key: str, where: str = "") -> str:
    """`answer[key]` when it is a non-empty string; else SlackUnavailable naming what was missing."""
    value = answer.get(key)
    if not isinstance(value, str) or not value:
        raise SlackUnavailable(method, f"an answer without {where or key!r}", refused=True, odd=True)
    return value


def _clip(text: str) -> str:
    if len(text) <= THREAD_TEXT_MAX_CHARS:
        return text
    return text[: THREAD_TEXT_MAX_CHARS - 40] + "\n_… (cut: see `runbook status`)_"
