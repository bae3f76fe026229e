"""Slack over Socket Mode end to end: a real `runbook serve` (runner included) with
RUNBOOK_SLACK_APP_TOKEN connects to a fake Socket Mode server over a real WebSocket, acknowledges
each envelope, and handles it with the same core as the HTTP endpoints."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from mq_runbooks.app import runs
from mq_runbooks.kit import journal
from mq_runbooks.integrations.kafka import KafkaClient
from tests.app.test_serve_slack import CAROL, DAVE, MALLORY, approval_message, group, started_run_id, wait_for  # noqa: F401
from tests.serve_harness import BOT_TOKEN, ServeProcess, free_port, serve_environment
from tests.slack_payloads import block_action_payload, slash_command_body, view_submission_payload
from tests.slack_socket_fake import SocketSlackFake


pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


@pytest.fixture(scope="module")
def slack():
    fake = SocketSlackFake.start(token=BOT_TOKEN)
    for user_id in (CAROL, DAVE, MALLORY):
        fake.add_user(user_id, user_id.removeprefix("U0").lower())
    fake.add_usergroup("S0ONCALL", "kafka-oncall", [CAROL, DAVE])  # the approvers, through teams.yaml
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def serve(tmp_path_factory, slack, clusters):
    workdir = tmp_path_factory.mktemp("socket-serve")
    (workdir / "teams.yaml").write_text("kafka-oncall:\n  members: []\n  slack_usergroup: S0ONCALL\n")
    env = serve_environment(workdir, slack_url=slack.url)
    env.update(RUNBOOK_TEAMS=str(workdir / "teams.yaml"), RUNBOOK_SLACK_APP_TOKEN=slack.app_token)
    process = ServeProcess(workdir, env)
    slack.wait_connected()
    yield process
    process.stop()


def slash(slack: SocketSlackFake, text: str, user: str) -> str:
    """Send `/runbook text` over the socket; check the ack; return the answer posted to its response_url."""
    key = uuid.uuid4().hex
    form = dict(parse_qsl(slash_command_body(text, user_id=user, response_url=slack.response_url(key)).decode()))
    envelope_id = slack.push("slash_commands", form, accepts_response_payload=True)
    ack = slack.ack(envelope_id, timeout=3)
    assert ack["envelope_id"] == envelope_id and ack["payload"]["text"] == f"Working on `/runbook {text}` ..."
    answer = wait_for(lambda: [c for c in slack.calls("response_url") if c.params["key"] == key], timeout=30,
                      what=f"the answer to /runbook {text}")[0].params["body"]
    return answer["text"] if isinstance(answer, dict) else str(answer)


def interact(slack: SocketSlackFake, payload: dict) -> dict:
    envelope_id = slack.push("interactive", payload, accepts_response_payload=payload["type"] == "view_submission")
    ack = slack.ack(envelope_id, timeout=3)
    assert ack["envelope_id"] == envelope_id
    return ack


def test_commands_and_approval_over_socket_mode(serve, slack, group):
    config, topic, group_id = group
    assert "kafka-replay" in slash(slack, "list", MALLORY)

    run_id = started_run_id(slash(slack, f"run kafka-replay cluster=primary group={group_id} to_earliest=true", CAROL))
    channel, ts = approval_message(slack, run_id)

    # Mallory is no approver: refused, privately, and the run keeps waiting.
    interact(slack, block_action_payload("runbook_approve", run_id, user_id=MALLORY, channel=channel, message_ts=ts))
    refusal = wait_for(lambda: [c for c in slack.calls("chat.postEphemeral") if c.params.get("user") == MALLORY],
                       what="the refusal")
    assert "U0MALLORY is not an approver" in refusal[0].params["text"]

    # Her reject reason is refused too: the modal shows why, through the ack's response_action.
    ack = interact(slack, view_submission_payload(run_id, "stop it", user_id=MALLORY))
    assert ack["payload"]["response_action"] == "errors"
    assert "not an approver" in ack["payload"]["errors"]["reason"]

    ack = interact(slack, block_action_payload("runbook_approve", run_id, user_id=DAVE, channel=channel, message_ts=ts))
    assert "payload" not in ack
    view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, what="the run to end")
    assert view.succeeded, view.message
    assert journal.last(view.entries, "approval").data["by"] == DAVE
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group_id) == {(topic, 0): 0, (topic, 1): 0}
    assert "approved" in str(slack.message(channel, ts)["blocks"]).lower()


@pytest.mark.parametrize("envelope", [
    {"type": "interactive", "payload": {"type": "block_actions"}},            # no user, no actions
    {"type": "interactive", "payload": "not an object"},
    {"type": "slash_commands", "payload": {"text": "list"}},                  # no user_id, no response_url
    {"type": "slash_commands", "payload": ["a", "list"]},
    {"type": "events_api", "payload": {"event": {"type": "app_mention"}}},  # not subscribed to: ignored
])
def test_malformed_envelopes_are_acked_and_the_listener_goes_on(serve, slack, envelope):
    envelope_id = f"bad-{uuid.uuid4().hex}"
    slack.push_raw({"envelope_id": envelope_id, "accepts_response_payload": False, **envelope})
    assert slack.ack(envelope_id, timeout=3) == {"envelope_id": envelope_id}
    slack.push_raw("{not json")
    assert "kafka-replay" in slash(slack, "list", MALLORY)


def test_socket_mode_without_an_app_token_is_refused_before_serving(tmp_path):
    runbook = str(Path(sys.executable).parent / "runbook")
    env = serve_environment(tmp_path)
    assert "--slack-socket-mode" in subprocess.run([runbook, "serve", "--help"], env=env, capture_output=True,
                                                   text=True).stdout
    args = [runbook, "serve", "--no-runner", "--port", str(free_port())]
    missing = subprocess.run(args + ["--slack-socket-mode"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "needs RUNBOOK_SLACK_APP_TOKEN" in missing.stderr
    bot_token = subprocess.run(args, env={**env, "RUNBOOK_SLACK_APP_TOKEN": "xoxb-a-bot-token"},
                               capture_output=True, text=True, timeout=60)
    assert bot_token.returncode != 0 and "must be an app-level token (xapp-...)" in bot_token.stderr
