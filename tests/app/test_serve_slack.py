"""Slack end to end: a real `runbook serve` (runner included) on the real stack, the real slack_sdk
client talking to the local fake Slack Web API, and requests to our endpoints signed as Slack signs
them."""
from __future__ import annotations

import time
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.app import runs, starts
from mq_runbooks.kit import journal
from mq_runbooks.integrations.kafka import KafkaClient
from tests.serve_harness import BOT_TOKEN, SIGNING_SECRET, ServeProcess, serve_environment
from tests.slack_fake import SlackFake
from tests.slack_payloads import (
    FORM, block_action_payload, interaction_body, signed_request_headers, slash_command_body,
    view_submission_payload,
)

CAROL, DAVE, MALLORY = "U0CAROL", "U0DAVE", "U0MALLORY"


pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


@pytest.fixture(scope="module")
def slack():
    fake = SlackFake.start(token=BOT_TOKEN)
    for user_id, name in ((CAROL, "carol"), (DAVE, "dave"), (MALLORY, "mallory")):
        fake.add_user(user_id, name)
    fake.add_usergroup("S0ONCALL", "kafka-oncall", [CAROL, DAVE])
    yield fake
    fake.stop()


def start_serve(tmp_path, slack, timeout="60s"):
    (tmp_path / "teams.yaml").write_text("kafka-oncall:\n  members: []\n  slack_usergroup: S0ONCALL\n")
    env = serve_environment(tmp_path, slack_url=slack.url, timeout=timeout)
    env["RUNBOOK_TEAMS"] = str(tmp_path / "teams.yaml")
    return ServeProcess(tmp_path, env), env


@pytest.fixture(scope="module")
def serve(tmp_path_factory, slack, clusters):
    process, env = start_serve(tmp_path_factory.mktemp("slack-serve"), slack)
    yield process, env
    process.stop()


@pytest.fixture
def group(clusters, unique):
    config = clusters.kafka_cluster("primary").client_config()
    topic, group_id = unique("slack"), unique("slackgroup")
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, 2)
    producer = Producer(config)
    for i in range(8):
        producer.produce(topic, value=b"x", partition=i % 2)
    producer.flush()
    consumer = Consumer({**config, "group.id": group_id, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, 4) for p in range(2)], asynchronous=False)
    consumer.close()
    return config, topic, group_id


def signed_post(url: str, body: bytes, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> httpx.Response:
    headers = {**FORM, **signed_request_headers(secret, body, timestamp)}
    return httpx.post(url, content=body, headers=headers, timeout=30)


def slash(serve_url: str, slack: SlackFake, text: str, user: str) -> str:
    """Send `/runbook text` and return what the engine answered through the response_url."""
    key = uuid.uuid4().hex
    body = slash_command_body(text, user_id=user, response_url=slack.response_url(key))
    ack = signed_post(f"{serve_url}/slack/commands", body)
    assert ack.status_code == 200 and "Working on" in ack.json()["text"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answers = [c for c in slack.calls("response_url") if c.params["key"] == key]
        if answers:
            answer = answers[0].params["body"]
            return answer["text"] if isinstance(answer, dict) else str(answer)
        time.sleep(0.2)
    raise AssertionError(f"no answer to /runbook {text}")


def approval_message(slack: SlackFake, run_id: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in slack.calls("chat.postMessage"):
            blocks = call.params.get("blocks") or []
            if call.status == 200 and run_id in str(blocks) and "runbook_approve" in str(blocks):
                channel = call.params["channel"]
                message = next(m for (ch, ts), m in slack._state.messages.items()
                               if ch == channel and run_id in str(m.get("blocks")) and not m.get("thread_ts"))
                return channel, message["ts"]
        time.sleep(0.3)
    raise AssertionError(f"no approval message for {run_id}")


def click(serve_url: str, action: str, run_id: str, user: str, channel: str, ts: str) -> httpx.Response:
    payload = block_action_payload(action, run_id, user_id=user, channel=channel, message_ts=ts)
    return signed_post(f"{serve_url}/slack/interactions", interaction_body(payload))


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def started_run_id(answer: str) -> str:
    assert "Started kafka-replay: run `" in answer, answer
    return answer.split("run `", 1)[1].split("`", 1)[0]


def test_slack_command_starts_and_buttons_approve_with_policy(serve, slack, group):
    process, _ = serve
    config, topic, group_id = group
    assert "kafka-replay" in slash(process.url, slack, "list", MALLORY)
    refused = slash(process.url, slack, f"run kafka-replay cluster=primary group={group_id} to_earliest=true", MALLORY)
    assert refused.startswith("Refused:") and "may not run kafka-replay" in refused
    bad = slash(process.url, slack, f"run kafka-replay cluster=primary group={group_id} colour=red", CAROL)
    assert "colour: unknown parameter" in bad and "/runbook list" in bad

    run_id = started_run_id(slash(process.url, slack,
                                  f"run kafka-replay cluster=primary group={group_id} to_earliest=true", CAROL))
    channel, ts = approval_message(slack, run_id)
    assert channel == "C0RUNBOOK"  # the channel the command came from

    assert click(process.url, "runbook_approve", run_id, MALLORY, channel, ts).status_code == 200
    assert click(process.url, "runbook_approve", run_id, CAROL, channel, ts).status_code == 200  # the requester
    ephemerals = wait_for(lambda: [c for c in slack.calls("chat.postEphemeral") if c.params.get("user") in (MALLORY, CAROL)
                                   and c.status == 200] if len(slack.calls("chat.postEphemeral")) >= 2 else None,
                          what="two refusals")
    texts = {c.params["user"]: c.params["text"] for c in ephemerals}
    assert "U0MALLORY is not an approver" in texts[MALLORY]
    assert "may not approve it" in texts[CAROL]

    assert click(process.url, "runbook_approve", run_id, DAVE, channel, ts).status_code == 200
    view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, what="the run to end")
    assert view.succeeded, view.message
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group_id) == {(topic, 0): 0, (topic, 1): 0}
    refusals = [e.data["by"] for e in view.entries if e.kind == "approval_refused"]
    assert refusals == [MALLORY, CAROL]
    assert journal.last(view.entries, "approval").data["by"] == DAVE
    assert journal.last(view.entries, "approval").data["proof"] == "slack-signature"

    message = slack.message(channel, ts)
    assert "runbook_approve" not in str(message["blocks"]) and "approved" in str(message["blocks"]).lower()
    thread = [c.params["text"] for c in slack.calls("chat.postMessage") if c.params.get("thread_ts") == ts]
    assert any(text.startswith("*outcome*") for text in thread) and any("*verification*" in t for t in thread)


def replay_from_slack(process, slack, group_id: str, requester: str) -> tuple[str, str, str]:
    """`/runbook run kafka-replay ... to_earliest=true` by `requester`: (run id, channel, ts of its approval message)."""
    run_id = started_run_id(slash(process.url, slack,
                                  f"run kafka-replay cluster=primary group={group_id} to_earliest=true", requester))
    return (run_id, *approval_message(slack, run_id))


def test_slack_restore_command_undoes_a_run_through_its_own_gate(serve, slack, group):
    process, _ = serve
    config, topic, group_id = group
    run_id, channel, ts = replay_from_slack(process, slack, group_id, CAROL)
    click(process.url, "runbook_approve", run_id, DAVE, channel, ts)
    assert wait_for(lambda: (v := runs.read_run(run_id)).finished and v, what="the run to end").succeeded

    refused = slash(process.url, slack, f"restore {run_id}", MALLORY)
    assert refused.startswith("Refused:") and "may not restore runs of kafka-replay" in refused
    answer = slash(process.url, slack, f"restore {run_id[:8]}", CAROL)
    assert f"Started a restore of run `{run_id}` (kafka-replay): run `" in answer, answer
    restore_id = answer.split("): run `", 1)[1].split("`", 1)[0]
    channel, ts = approval_message(slack, restore_id)
    assert "restore" in str(slack.message(channel, ts)["blocks"]).lower()
    click(process.url, "runbook_approve", restore_id, DAVE, channel, ts)
    view = wait_for(lambda: (v := runs.read_run(restore_id)).finished and v, what="the restore to end")
    assert view.succeeded, view.message
    start = journal.last(view.entries, "parameters")
    assert (start.data["trigger"]["source"], start.data["trigger"]["restore_of"]) == ("slack", run_id)
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group_id) == {(topic, 0): 4, (topic, 1): 4}, "the offsets before the run"
    usage = slash(process.url, slack, "restore", CAROL)
    assert "`/runbook restore` takes one RUN" in usage


def test_reject_button_opens_a_modal_and_its_reason_rejects(serve, slack, group):
    process, _ = serve
    config, topic, group_id = group
    run_id, channel, ts = replay_from_slack(process, slack, group_id, DAVE)
    assert click(process.url, "runbook_reject", run_id, CAROL, channel, ts).status_code == 200
    modal = wait_for(lambda: [c for c in slack.calls("views.open") if c.params["view"]["private_metadata"] == run_id],
                     what="the reject modal")
    assert modal[0].params["view"]["callback_id"] == "runbook_reject_reason"
    submit = view_submission_payload(run_id, "wrong group, stop", user_id=CAROL)
    assert signed_post(f"{process.url}/slack/interactions", interaction_body(submit)).status_code == 200
    view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, what="the run to end")
    assert view.state == "Rejected"
    rejection = journal.last(view.entries, "rejection")
    assert {k: rejection.data[k] for k in ("by", "comment", "proof")} == {
        "by": CAROL, "comment": "wrong group, stop", "proof": "slack-signature"}
    assert rejection.data["gate"] == 1  # the first gate round, its first answer
    assert "rejected" in str(slack.message(channel, ts)["blocks"]).lower()
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group_id) == {(topic, 0): 4, (topic, 1): 4}


def runs_on_group(group_id: str) -> list[str]:
    """The runs started on the consumer group (their lock tag names it), as Prefect records them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from mq_runbooks.kit.lock import lock_tag

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[lock_tag(f"kafka:primary:group:{group_id}")])), limit=10)
    return [str(run.id) for run in found]


def test_a_replayed_slash_command_starts_nothing_new(tmp_path, serve, slack, group):
    process, env = serve
    _, _, group_id = group
    key = uuid.uuid4().hex
    body = slash_command_body(f"run kafka-replay cluster=primary group={group_id} to_earliest=true",
                              user_id=CAROL, response_url=slack.response_url(key))
    headers = {**FORM, **signed_request_headers(SIGNING_SECRET, body)}
    sent = [httpx.post(f"{process.url}/slack/commands", content=body, headers=headers, timeout=30) for _ in range(3)]
    # The first is taken; its replays (same signature and timestamp, well within 5 minutes) are not.
    assert [answer.status_code for answer in sent] == [200, 401, 401]
    answers = wait_for(lambda: [c for c in slack.calls("response_url") if c.params["key"] == key], what="the answer")
    run_id = started_run_id(answers[0].params["body"]["text"])
    # Another replica has not seen the signature; the run's idempotency key (the signed request's)
    # still makes it the same run.
    other = ServeProcess(tmp_path, dict(env), runner=False)
    try:
        assert httpx.post(f"{other.url}/slack/commands", content=body, headers=headers, timeout=30).status_code == 200
        again = wait_for(lambda: [c for c in slack.calls("response_url") if c.params["key"] == key][1:],
                         what="the other replica's answer")
    finally:
        other.stop()
    assert run_id in again[0].params["body"]["text"] and "already" in again[0].params["body"]["text"]
    time.sleep(1)
    assert runs_on_group(group_id) == [run_id]
    assert len([c for c in slack.calls("response_url") if c.params["key"] == key]) == 2
    # A click is a signed request too: its replay does nothing (here: no second reject modal).
    channel, ts = approval_message(slack, run_id)
    click_body = interaction_body(block_action_payload("runbook_reject", run_id, user_id=CAROL, channel=channel,
                                                       message_ts=ts))
    click_headers = {**FORM, **signed_request_headers(SIGNING_SECRET, click_body)}
    clicks = [httpx.post(f"{process.url}/slack/interactions", content=click_body, headers=click_headers, timeout=30)
              for _ in range(2)]
    assert [answer.status_code for answer in clicks] == [200, 401]
    time.sleep(1)
    assert len([c for c in slack.calls("views.open") if c.params["view"]["private_metadata"] == run_id]) == 1


@pytest.mark.parametrize("case", ["forged", "stale", "unsigned"])
def test_bad_signatures_get_a_bare_401(serve, case):
    process, _ = serve
    body = slash_command_body("list", user_id=CAROL)
    for path in ("/slack/commands", "/slack/interactions"):
        if case == "forged":
            response = signed_post(process.url + path, body, secret="not-the-secret")
        elif case == "stale":
            response = signed_post(process.url + path, body, timestamp=int(time.time()) - 6 * 60)
        else:
            response = httpx.post(process.url + path, content=body, headers=FORM)
        assert response.status_code == 401 and response.content == b""


def test_timeout_updates_the_approval_message(tmp_path, slack, group):
    config, topic, group_id = group
    process, _ = start_serve(tmp_path, slack, timeout="4s")
    try:
        run_id = started_run_id(slash(process.url, slack,
                                      f"run kafka-replay cluster=primary group={group_id} to_earliest=true", DAVE))
        channel, ts = approval_message(slack, run_id)
        # The run waits suspended, with no process: serve's sweep (every 30 s) concludes it once the
        # Prefect server has failed it at the deadline. (Read raw: runs.read_run would conclude it here.)
        from uuid import UUID

        from prefect.client.orchestration import get_client

        def state_name() -> str:
            with get_client(sync_client=True) as client:
                return client.read_flow_run(UUID(run_id)).state.name

        wait_for(lambda: state_name() == "TimedOut", what="serve concluding the timeout", timeout=90)
        view = runs.read_run(run_id)
        assert journal.last(view.entries, "rejection").data["by"] == "timeout"
        assert "timed out" in str(slack.message(channel, ts)["blocks"]).lower()
    finally:
        process.stop()


def test_slack_outage_is_recorded_and_the_cli_still_approves(tmp_path, slack, group, monkeypatch):
    from mq_runbooks.base.catalog import load_catalog
    from mq_runbooks.base.settings import Settings

    config, topic, group_id = group
    env = serve_environment(tmp_path, slack_url=slack.url)
    for key, value in env.items():
        if key.startswith("RUNBOOK_"):
            monkeypatch.setenv(key, value)
    settings = Settings.from_environ()
    catalog = load_catalog(settings.catalog, settings.team_catalog)
    runbook = catalog.get("kafka-replay")
    slack.fail_next(200, 500)  # Slack answers nothing but errors for a while
    try:
        run_id = starts.start_run(settings, runbook, runbook.validate_parameters(
            {"cluster": "primary", "group": group_id, "to_earliest": "true"}), requested_by="alice")
        view = wait_for(lambda: (v := runs.read_run(run_id)).state_type == "PAUSED"
                        and journal.last(v.entries, "slack") and v, what="the gate")
        note = journal.last(view.entries, "slack")
        assert note.data["ok"] is False and "Slack could not be reached" in note.summary
        runs.answer_gate(settings, catalog, run_id, True, "bob", "approved from the terminal")
        view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, what="the run to end")
        assert view.succeeded, view.message
    finally:
        slack.clear()
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group_id) == {(topic, 0): 0, (topic, 1): 0}


def test_an_odd_slack_answer_is_journalled_and_the_run_goes_on(tmp_path, slack, group, monkeypatch):
    from mq_runbooks.base.catalog import load_catalog
    from mq_runbooks.base.settings import Settings

    config, topic, group_id = group
    env = serve_environment(tmp_path, slack_url=slack.url)
    for key, value in env.items():
        if key.startswith("RUNBOOK_"):
            monkeypatch.setenv(key, value)
    settings = Settings.from_environ()
    catalog = load_catalog(settings.catalog, settings.team_catalog)
    runbook = catalog.get("kafka-replay")
    slack.answer_without("chat.getPermalink", "permalink")  # ok, but not what Slack documents
    try:
        run_id = starts.start_run(settings, runbook, runbook.validate_parameters(
            {"cluster": "primary", "group": group_id, "to_earliest": "true"}), requested_by="alice")
        view = wait_for(lambda: (v := runs.read_run(run_id)).state_type == "PAUSED"
                        and journal.last(v.entries, "slack") and v, what="the gate")
        trouble = [e for e in view.entries if e.kind == "slack" and e.data.get("ok") is False]
        assert len(trouble) == 1 and "Slack answered chat.getPermalink oddly" in trouble[0].summary, trouble
        assert "without 'permalink'" in trouble[0].summary
        posted = journal.last(view.entries, "slack")
        assert posted.data["ok"] is True and posted.data["ts"] and posted.data["permalink"] == ""
        runs.answer_gate(settings, catalog, run_id, True, "bob", "approved from the terminal")
        view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, what="the run to end")
        assert view.succeeded, view.message
    finally:
        slack.clear()
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group_id) == {(topic, 0): 0, (topic, 1): 0}


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_slack_never_reads_a_file_on_the_server(serve, slack, tmp_path, verb):
    process, _ = serve
    planted = tmp_path / "secrets.env"
    planted.write_text("DB_PASSWORD=hunter2-planted\n")
    for path in ("/etc/passwd", str(planted), "/dev/zero"):
        answer = slash(process.url, slack, f"{verb} kafka-replay cluster=primary group=x from_file={path}", CAROL)
        assert "from_file: names a file on the server, which is never taken from Slack" in answer, answer
        assert "root:" not in answer and "hunter2" not in answer and "Started" not in answer
