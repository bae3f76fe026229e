"""What Slack sends to our endpoints: the signature check, the `/runbook` slash command and the
interactions (a click on Approve or Reject, the reject modal's submission).

Parsers return plain dataclasses and raise ValueError with a message fit for the 400 response
(or the person's ephemeral reply) when a request is not of the shape Slack documents.
"""
from __future__ import annotations

import hashlib
import html
import re
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import Clock, SignatureVerifier

from mq_runbooks.base.json_limits import TooDeep, loads_limited
from mq_runbooks.integrations.slack_blocks import APPROVE_ACTION, REASON_ACTION, REASON_BLOCK, REJECT_ACTION, REJECT_CALLBACK

VERBS = ("list", "show", "plan", "run", "status", "restore", "help")
USAGE = (
    "Usage: `/runbook list` · `/runbook show ID` · `/runbook plan ID key=value ...` · "
    "`/runbook run ID key=value ...` · `/runbook status RUN` · `/runbook restore RUN` · `/runbook help`"
)
_ARGUMENT = {"show": "ID", "plan": "ID", "run": "ID", "status": "RUN", "restore": "RUN"}
SIGNATURE_WINDOW_S = 5 * 60  # how far a request's timestamp may be from now (slack_sdk's check)


@dataclass(frozen=True)
class SlashCommand:
    user_id: str
    user_name: str
    channel_id: str
    text: str
    response_url: str
    trigger_id: str
    command: str = "/runbook"
    request_key: str = ""  # request_key() of the signed request: the same for a replay of it


@dataclass(frozen=True)
class BlockAction:
    """A click on Approve or Reject in an approval message; `run_id` is the button's value."""

    user_id: str
    action_id: str
    run_id: str
    channel: str
    message_ts: str
    trigger_id: str
    response_url: str
    user_name: str = ""


@dataclass(frozen=True)
class ViewSubmission:
    """The reject modal submitted: who, which run (its private_metadata), and why."""

    user_id: str
    run_id: str
    reason: str
    user_name: str = ""


def verify_request(signing_secret: str, headers: Mapping[str, str], body: bytes,
                   now: float | None = None, seen: SeenSignatures | None = None) -> bool:
    """True when the request carries Slack's v0 signature of `body` made with `signing_secret`
    and a timestamp within 5 minutes of now (or of `now`, seconds since the epoch). `headers` is
    any mapping (`X-Slack-Request-Timestamp`, `X-Slack-Signature`, in any case). Never raises:
    a malformed timestamp or signature is simply not valid.

    With `seen`, a request is valid once: the same signed request sent again (a replay, whose
    signature and timestamp still check out within the window) is not."""
    verifier = SignatureVerifier(signing_secret) if now is None else SignatureVerifier(signing_secret, _At(now))
    try:
        valid = verifier.is_valid_request(body, dict(headers.items()))
    except (ValueError, TypeError):  # a timestamp that is no integer, a signature that is not ASCII
        return False
    return valid and (seen is None or seen.first_time(_signature(headers), now))


def request_key(headers: Mapping[str, str]) -> str:
    """A name for one signed request, the same for every replay of it (its signature covers its
    timestamp and body), e.g. `slack:3f2a...`: an idempotency key for what the request starts, so a
    replay sent to another `runbook serve` replica starts nothing new either."""
    return "slack:" + hashlib.sha256(_signature(headers).encode("utf-8", "replace")).hexdigest()[:32]


class SeenSignatures:
    """The signatures of the Slack requests taken lately, to refuse a replay of one.

    Slack's timestamp may be up to 5 minutes old or ahead, so a signature stays acceptable at most
    10 minutes after it first arrives: that long it is remembered, then forgotten. Memory is
    bounded: beyond `max_size` (far more than a workspace sends in 10 minutes) the oldest are
    forgotten first. Thread-safe."""

    KEPT_S = 2 * SIGNATURE_WINDOW_S

    def __init__(self, max_size: int = 50_000, clock: Callable[[], float] = time.time) -> None:
        self._max_size = max_size
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()  # signature -> forgotten after; oldest first
        self._lock = threading.Lock()

    def first_time(self, signature: str, now: float | None = None) -> bool:
        """Remember `signature`; False when it was already taken within the window."""
        now = self._clock() if now is None else now
        with self._lock:
            while self._until and next(iter(self._until.values())) < now:
                self._until.popitem(last=False)
            if signature in self._until:
                return False
            self._until[signature] = now + self.KEPT_S
            while len(self._until) > self._max_size:
                self._until.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._until)


def _signature(headers: Mapping[str, str]) -> str:
    # The one slack_sdk checks: the last of repeated headers, so a replay cannot vary an extra one.
    return str({name.lower(): value for name, value in headers.items()}.get("x-slack-signature", ""))


class _At(Clock):
    def __init__(self, now: float):
        self._now = now

    def now(self) -> float:
        return self._now


def parse_slash_command(form: Mapping[str, Any] | bytes | str, request_key: str = "") -> SlashCommand:
    """The slash command from its form (the parsed form, or the raw urlencoded body); `request_key`
    names the signed request it came in (see request_key())."""
    fields = _form(form)
    missing = [name for name in ("user_id", "channel_id", "response_url") if not fields.get(name)]
    if missing:
        raise ValueError(f"not a Slack slash command: missing {', '.join(missing)}")
    return SlashCommand(
        user_id=fields["user_id"], user_name=fields.get("user_name", ""), channel_id=fields["channel_id"],
        text=fields.get("text", ""), response_url=fields["response_url"],
        trigger_id=fields.get("trigger_id", ""), command=fields.get("command", "/runbook"),
        request_key=request_key,
    )


def parse_command_text(text: str) -> tuple[str, list[str], dict[str, str | list[str]]]:
    """`/runbook` text -> (verb, positional args, key=value params; a repeated key gives a list).

    >>> parse_command_text("plan kafka-replay group=billing topic=a topic=b:0,1")
    ('plan', ['kafka-replay'], {'group': 'billing', 'topic': ['a', 'b:0,1']})

    Empty text means `help`. Values may be quoted (`comment="two words"`). Raises ValueError with
    the usage for an unknown verb, a missing or extra ID, or parameters where none are taken.
    """
    text = _unformat(text)
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"could not read the command ({exc}). {USAGE}") from None
    if not tokens:
        return "help", [], {}
    verb, rest = tokens[0].lower(), tokens[1:]
    if verb not in VERBS:
        raise ValueError(f"unknown command {tokens[0]!r}. {USAGE}")
    args: list[str] = []
    params: dict[str, str | list[str]] = {}
    for token in rest:
        key, sep, value = token.partition("=")
        if not sep:
            args.append(token)
        elif not key:
            raise ValueError(f"{token!r}: write parameters as key=value (e.g. group=billing)")
        elif key in params:
            previous = params[key]
            params[key] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            params[key] = value
    wanted = _ARGUMENT.get(verb)
    if wanted and len(args) != 1:
        raise ValueError(f"`/runbook {verb}` takes one {wanted}" + (f", not {len(args)}" if args else "")
                         + f". {USAGE}")
    if not wanted and args:
        raise ValueError(f"`/runbook {verb}` takes no argument. {USAGE}")
    if params and verb not in ("plan", "run"):
        raise ValueError(f"`/runbook {verb}` takes no key=value parameters. {USAGE}")
    return verb, args, params


def parse_interaction(payload_json: str | bytes) -> BlockAction | ViewSubmission:
    """An interaction payload (the `payload` form field): a button click on an approval message,
    or the reject modal's submission. Raises ValueError for anything else or a malformed payload."""
    try:
        payload = loads_limited(payload_json)
    except TooDeep as exc:
        raise ValueError(f"the interaction payload is refused: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the interaction payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("the interaction payload must be a JSON object")
    kind = payload.get("type")
    user = _object(payload, "user")
    user_id = _text(user, "id", "user.id")
    user_name = str(user.get("username") or user.get("name") or "")
    if kind == "block_actions":
        return _block_action(payload, user_id, user_name)
    if kind == "view_submission":
        return _view_submission(payload, user_id, user_name)
    raise ValueError(f"unsupported interaction type {kind!r}: expected block_actions or view_submission")


def _block_action(payload: dict[str, Any], user_id: str, user_name: str) -> BlockAction:
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise ValueError("block_actions payload without actions")
    action = actions[0]
    action_id = _text(action, "action_id", "actions[0].action_id")
    if action_id not in (APPROVE_ACTION, REJECT_ACTION):
        raise ValueError(f"unknown action {action_id!r}: expected {APPROVE_ACTION} or {REJECT_ACTION}")
    container = payload.get("container") if isinstance(payload.get("container"), dict) else {}
    channel = payload.get("channel") if isinstance(payload.get("channel"), dict) else {}
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    channel_id = channel.get("id") or container.get("channel_id")
    message_ts = container.get("message_ts") or message.get("ts")
    if not isinstance(channel_id, str) or not isinstance(message_ts, str) or not channel_id or not message_ts:
        raise ValueError("block_actions payload without its message (channel.id and container.message_ts)")
    return BlockAction(
        user_id=user_id, action_id=action_id, run_id=_text(action, "value", "actions[0].value"),
        channel=channel_id, message_ts=message_ts, trigger_id=str(payload.get("trigger_id") or ""),
        response_url=str(payload.get("response_url") or ""), user_name=user_name,
    )


def _view_submission(payload: dict[str, Any], user_id: str, user_name: str) -> ViewSubmission:
    view = _object(payload, "view")
    if view.get("callback_id") != REJECT_CALLBACK:
        raise ValueError(f"unknown view {view.get('callback_id')!r}: expected {REJECT_CALLBACK}")
    run_id = _text(view, "private_metadata", "view.private_metadata")
    state = view.get("state") if isinstance(view.get("state"), dict) else {}
    values = state.get("values") if isinstance(state.get("values"), dict) else {}
    block = values.get(REASON_BLOCK) if isinstance(values.get(REASON_BLOCK), dict) else {}
    field = block.get(REASON_ACTION) if isinstance(block.get(REASON_ACTION), dict) else {}
    reason = field.get("value")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"view_submission without a reason (view.state.values.{REASON_BLOCK}.{REASON_ACTION}.value)")
    return ViewSubmission(user_id=user_id, run_id=run_id, reason=reason.strip(), user_name=user_name)


def _object(payload: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"interaction payload without {key!r}")
    return value


def _text(container: Mapping[str, Any], key: str, where: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"interaction payload without {where}")
    return value


def _form(form: Mapping[str, Any] | bytes | str) -> dict[str, str]:
    if isinstance(form, bytes | str):
        text = form.decode("utf-8", "replace") if isinstance(form, bytes) else form
        return {key: values[0] for key, values in parse_qs(text, keep_blank_values=True).items()}
    return {str(key): str(value) for key, value in form.items()}


def _unformat(text: str) -> str:
    """Undo what Slack does to typed text: HTML escapes, smart quotes, auto-links (`<url|label>`)."""
    text = re.sub(r"<([^<>|]+)\|([^<>]*)>", r"\2", text)
    text = re.sub(r"<([^<>]+)>", r"\1", text)
    text = html.unescape(text)
    return text.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"}))

