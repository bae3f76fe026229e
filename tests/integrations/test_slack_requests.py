"""mq_runbooks.integrations.slack_requests: what Slack sends to our endpoints, as Slack sends it (tests/slack_payloads.py):
the v0 signature check, the /runbook command, and the interactions (button clicks, the reject modal)."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq_runbooks.integrations.slack import (
    APPROVE_ACTION,
    REJECT_ACTION,
    BlockAction,
    ViewSubmission,
    parse_command_text,
    parse_interaction,
    parse_slash_command,
    verify_request,
)
from mq_runbooks.integrations.slack_requests import SeenSignatures, request_key
from tests.slack_payloads import (
    block_action_payload,
    signed_request_headers,
    slash_command_body,
    view_submission_payload,
)

CHANNEL = "C0RUNBOOK"
RUN_ID = "0b5e8f2c-6d1e-4a51-9a43-1f1e2d3c4b5a"
CAROL, DAVE = "U0CAROL01", "U0DAVE002"


# -- signatures -----------------------------------------------------------------------------------

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = slash_command_body("list", user_id=CAROL)


def test_a_correctly_signed_request_is_verified():
    assert verify_request(SECRET, signed_request_headers(SECRET, BODY), BODY)


def test_header_names_are_case_insensitive():
    headers = {k.lower(): v for k, v in signed_request_headers(SECRET, BODY).items()}
    assert verify_request(SECRET, headers, BODY)


@pytest.mark.parametrize("headers, body", [
    (signed_request_headers("another-secret", BODY), BODY),  # forged: signed with another secret
    (signed_request_headers(SECRET, BODY), BODY + b"&text=run"),  # body changed after signing
    ({}, BODY),
    ({"X-Slack-Request-Timestamp": "yesterday", "X-Slack-Signature": "v0=00"}, BODY),
    ({"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=é"}, BODY),
])
def test_forged_or_malformed_signatures_are_refused(headers, body):
    assert not verify_request(SECRET, headers, body)


def test_a_timestamp_older_than_5_minutes_is_refused():
    now = time.time()
    assert verify_request(SECRET, signed_request_headers(SECRET, BODY, int(now) - 290), BODY, now=now)
    assert not verify_request(SECRET, signed_request_headers(SECRET, BODY, int(now) - 301), BODY, now=now)
    assert not verify_request(SECRET, signed_request_headers(SECRET, BODY, int(now) - 301), BODY)


def test_a_signed_request_is_taken_once_within_its_window():
    seen, now = SeenSignatures(), time.time()
    headers = signed_request_headers(SECRET, BODY, int(now))
    assert verify_request(SECRET, headers, BODY, now=now, seen=seen)
    # The same request again (a replay: same signature, same timestamp, still within 5 minutes).
    assert not verify_request(SECRET, headers, BODY, now=now + 1, seen=seen)
    assert not verify_request(SECRET, {k.lower(): v for k, v in headers.items()}, BODY, now=now + 299, seen=seen)
    # A replay that adds a second signature header still names the one slack_sdk checks (the last).
    doubled = [("X-Slack-Signature", "v0=" + "0" * 64), *headers.items()]
    assert not verify_request(SECRET, _Pairs(doubled), BODY, now=now + 2, seen=seen)
    # The person typing the same command again is another request (another timestamp).
    assert verify_request(SECRET, signed_request_headers(SECRET, BODY, int(now) + 1), BODY, now=now + 1, seen=seen)
    # A forged request is not remembered: it cannot make the real one look like a replay.
    real = signed_request_headers(SECRET, BODY, int(now) + 2)
    assert not verify_request(SECRET, real, BODY + b"&x=1", now=now + 2, seen=seen)
    assert verify_request(SECRET, real, BODY, now=now + 2, seen=seen)


def test_seen_signatures_are_forgotten_after_the_window_and_bounded():
    clock = [1000.0]
    seen = SeenSignatures(max_size=3, clock=lambda: clock[0])
    assert seen.first_time("v0=a") and not seen.first_time("v0=a")
    clock[0] += SeenSignatures.KEPT_S + 1  # no timestamp is acceptable any more: forgotten
    assert seen.first_time("v0=a") and len(seen) == 1
    for name in ("b", "c", "d", "e"):
        assert seen.first_time(f"v0={name}")
    assert len(seen) == 3 and not seen.first_time("v0=e")


def test_a_replay_names_the_same_request_key():
    headers = signed_request_headers(SECRET, BODY, 1_700_000_000)
    again = {k.lower(): v for k, v in headers.items()}
    assert request_key(headers) == request_key(again) and request_key(headers).startswith("slack:")
    assert request_key(headers) != request_key(signed_request_headers(SECRET, BODY, 1_700_000_001))
    command = parse_slash_command(BODY, request_key(headers))
    assert command.request_key == request_key(headers)


class _Pairs:
    """Headers as a server hands them over: a name may repeat."""

    def __init__(self, pairs):
        self._pairs = pairs

    def items(self):
        return list(self._pairs)


# -- the slash command --------------------------------------------------------------------------------

def test_a_slash_command_is_parsed_from_its_form():
    body = slash_command_body("plan kafka-replay group=billing", user_id=CAROL, user_name="carol",
                              response_url="https://hooks.slack.com/commands/T0/1/abc", trigger_id="1.2.3")
    command = parse_slash_command(body)
    assert (command.user_id, command.user_name, command.channel_id, command.text, command.response_url,
            command.trigger_id, command.command) == (
        CAROL, "carol", "C0RUNBOOK", "plan kafka-replay group=billing",
        "https://hooks.slack.com/commands/T0/1/abc", "1.2.3", "/runbook")
    assert parse_slash_command({"user_id": CAROL, "channel_id": "C1", "response_url": "u"}).text == ""


def test_a_form_that_is_not_a_slash_command_is_refused():
    with pytest.raises(ValueError, match="missing user_id, response_url"):
        parse_slash_command(b"channel_id=C1&text=list")


@pytest.mark.parametrize("text, parsed", [
    ("", ("help", [], {})),
    ("  LIST ", ("list", [], {})),
    ("show kafka-replay", ("show", ["kafka-replay"], {})),
    ("plan kafka-replay group=billing topic=a topic=b:0,1 to_datetime=2024-05-01T00:00:00Z",
     ("plan", ["kafka-replay"], {"group": "billing", "topic": ["a", "b:0,1"], "to_datetime": "2024-05-01T00:00:00Z"})),
    ("run kafka-replay group=billing comment=“two words”", ("run", ["kafka-replay"], {"group": "billing",
                                                                                      "comment": "two words"})),
    ("run kafka-replay host=<http://db.example.com|db.example.com> note=a&amp;b",
     ("run", ["kafka-replay"], {"host": "db.example.com", "note": "a&b"})),
    ("status 0b5e8f2c", ("status", ["0b5e8f2c"], {})),
    ("help", ("help", [], {})),
])
def test_command_text_is_parsed(text, parsed):
    assert parse_command_text(text) == parsed


@pytest.mark.parametrize("text, message", [
    ("deploy kafka-replay", "unknown command 'deploy'"),
    ("show", "takes one ID"),
    ("plan a b group=x", "takes one ID, not 2"),
    ("status", "takes one RUN"),
    ("list kafka-replay", "takes no argument"),
    ("status abc group=x", "takes no key=value parameters"),
    ("plan kafka-replay =billing", "write parameters as key=value"),
    ('run kafka-replay comment="unclosed', "could not read the command"),
])
def test_bad_command_text_is_refused_with_the_usage(text, message):
    with pytest.raises(ValueError, match=message):
        parse_command_text(text)


# -- interactions ---------------------------------------------------------------------------------

def test_a_button_click_is_parsed():
    payload = block_action_payload(APPROVE_ACTION, RUN_ID, user_id=DAVE, user_name="dave", channel=CHANNEL,
                                   message_ts="1714560000.000100", trigger_id="9.8.7",
                                   response_url="https://hooks.slack.com/actions/T0/1/x")
    assert parse_interaction(json.dumps(payload)) == BlockAction(
        user_id=DAVE, action_id=APPROVE_ACTION, run_id=RUN_ID, channel=CHANNEL, message_ts="1714560000.000100",
        trigger_id="9.8.7", response_url="https://hooks.slack.com/actions/T0/1/x", user_name="dave")


def test_the_reject_modal_submission_is_parsed():
    payload = view_submission_payload(RUN_ID, "  lag is falling already \n", user_id=DAVE, user_name="dave")
    assert parse_interaction(json.dumps(payload).encode()) == ViewSubmission(
        user_id=DAVE, run_id=RUN_ID, reason="lag is falling already", user_name="dave")


def _click(**changes) -> str:
    payload = block_action_payload(REJECT_ACTION, RUN_ID, user_id=DAVE, channel=CHANNEL, message_ts="1.2")
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = payload
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return json.dumps(payload)


def _submission(**view_changes) -> str:
    payload = view_submission_payload(RUN_ID, "why", user_id=DAVE)
    payload["view"].update(view_changes)
    return json.dumps(payload)


@pytest.mark.parametrize("payload, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"type": "shortcut", "user": {"id": DAVE}}), "unsupported interaction type 'shortcut'"),
    (_click(user=None), "without 'user'"),
    (_click(user__id=""), "without user.id"),
    (_click(actions=[]), "without actions"),
    (_click(actions__0__action_id="something_else"), "unknown action 'something_else'"),
    (_click(actions__0__value=None), "without actions\\[0\\].value"),
    (_click(channel=None, container__channel_id=None), "without its message"),
    (_submission(callback_id="other_view"), "unknown view 'other_view'"),
    (_submission(private_metadata=""), "without view.private_metadata"),
    (_submission(state={"values": {"reason": {"reason": {"type": "plain_text_input", "value": "  "}}}}),
     "without a reason"),
    (_submission(state="garbage"), "without a reason"),
])
def test_malformed_interactions_are_refused_with_a_reason(payload, message):
    with pytest.raises(ValueError, match=message):
        parse_interaction(payload)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(payload=st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["block_actions", "view_submission", "shortcut"]) | st.text(max_size=5),
    "user": JSON | st.fixed_dictionaries({"id": JSON}), "actions": JSON, "channel": JSON, "container": JSON,
    "message": JSON, "view": JSON | st.fixed_dictionaries({"callback_id": st.just("runbook_reject_reason"),
                                                           "private_metadata": JSON, "state": JSON}),
}) | JSON)
def test_any_payload_is_parsed_or_refused_with_value_error(payload):
    try:
        parse_interaction(json.dumps(payload))
    except ValueError:
        pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80), form=st.binary(max_size=200))
def test_any_command_text_form_or_signature_is_parsed_or_refused(text, form):
    for parse in (lambda: parse_command_text(text), lambda: parse_slash_command(form)):
        try:
            parse()
        except ValueError:
            pass
    headers = {"X-Slack-Request-Timestamp": text, "X-Slack-Signature": text}
    assert not verify_request(SECRET, headers, form)
