"""mq_runbooks.integrations.slack: the real slack_sdk client against the fake Slack Web API (tests/slack_fake.py),
and the Block Kit messages within Slack's limits. What Slack sends us: test_slack_requests.py."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from mq_runbooks.flows.replay_plan import PartitionPlan, ReplayPlan
from mq_runbooks.integrations.slack import (
    APPROVE_ACTION,
    REJECT_ACTION,
    ApprovalRequest,
    SlackNotifier,
    SlackUnavailable,
    approval_blocks,
    decided_blocks,
)
from mq_runbooks.integrations.slack_blocks import blocks_size
from tests.slack_blocks_rules import block_errors
from tests.slack_fake import BLOCKS_MAX_CHARS, SlackFake

CHANNEL = "C0RUNBOOK"
RUN_ID = "0b5e8f2c-6d1e-4a51-9a43-1f1e2d3c4b5a"
CAROL, DAVE = "U0CAROL01", "U0DAVE002"


@pytest.fixture(scope="module")
def fake():
    fake = SlackFake.start()
    fake.add_user(CAROL, "carol", real_name="Carol Cole", display_name="carol.c")
    fake.add_user(DAVE, "dave", real_name="Dave Dunn")
    fake.add_usergroup("S0KAFKA01", "kafka-oncall", [CAROL, DAVE])
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fresh(fake):
    """Each test sees only its own calls, and no failure left over from the one before."""
    fake.clear()


@pytest.fixture
def slack(fake):
    return SlackNotifier(fake.token, fake.url, CHANNEL, max_retries=2, backoff_s=0.01)


def big_plan(partitions: int = 1000) -> ReplayPlan:
    """A replay of `partitions` partitions; partition 517 of `orders` moves the most (90,000)."""
    rows = tuple(PartitionPlan("orders" if i % 2 else "payments", i, 50_000 + i, 50_000 - (i % 97) * 10,
                               0, 60_000) for i in range(partitions))
    rows = rows[:517] + (PartitionPlan("orders", 517, 100_000, 10_000, 0, 120_000),) + rows[518:]
    return ReplayPlan("billing", "to 2024-05-01T00:00:00Z", rows, warnings=("group billing has 3 members",))


def approval_request(markdown: str = "**Group** `billing`: 2 partitions change.", **totals) -> ApprovalRequest:
    return ApprovalRequest(
        runbook_id="kafka-replay", runbook_title="Replay a consumer group from offsets", run_id=RUN_ID,
        run_url=f"http://127.0.0.1:4200/runs/flow-run/{RUN_ID}", requested_by=CAROL,
        trigger="alert KafkaConsumerGroupStuck (cluster=primary, consumergroup=billing)",
        plan_markdown=markdown, plan_totals=totals or {"partitions": 2, "messages replayed": 1234},
        approvers="1 approval from @kafka-oncall; no self-approval; times out in 30m", plan_digest="ab" * 32,
    )


def buttons(blocks: list[dict]) -> list[dict]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def all_text(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_the_public_api_is_importable():
    import mq_runbooks.integrations.slack as slack_module
    assert all(hasattr(slack_module, name) for name in slack_module.__all__)


# -- the Web API calls, against the fake ----------------------------------------------------------

def test_approval_request_is_posted_with_approve_and_reject_buttons(fake, slack):
    channel, ts = slack.post_approval_request(approval_request())

    assert channel == CHANNEL
    (call,) = fake.calls("chat.postMessage")
    assert call.status == 200 and call.params["channel"] == CHANNEL and RUN_ID in call.params["text"]
    posted = fake.message(channel, ts)["blocks"]
    assert [(b["action_id"], b["value"], b["style"]) for b in buttons(posted)] == [
        (APPROVE_ACTION, RUN_ID, "primary"), (REJECT_ACTION, RUN_ID, "danger")]
    text = all_text(posted)
    for expected in ("kafka-replay", f"<@{CAROL}>", "KafkaConsumerGroupStuck", "*1,234* messages replayed",
                     f"runbook status {RUN_ID} --plan", "@kafka-oncall", "/runs/flow-run/"):
        assert expected in text


def test_approval_request_goes_to_the_channel_asked_for(fake, slack):
    channel, ts = slack.post_approval_request(approval_request(), channel="C0OTHER01")
    assert channel == "C0OTHER01" and fake.message("C0OTHER01", ts)


def test_update_decision_replaces_the_buttons_with_who_decided_and_when(fake, slack):
    request = approval_request()
    channel, ts = slack.post_approval_request(request)
    slack.update_approval_request(channel, ts, request, approved_so_far=[DAVE])
    assert f"Approved so far by <@{DAVE}>" in all_text(fake.message(channel, ts)["blocks"])

    at = datetime(2024, 5, 1, 12, 30, 5, tzinfo=timezone.utc)
    slack.update_decision(channel, ts, request, approved=False, by=[DAVE], at=at, comment="lag is <5 min & falling")

    (call,) = fake.calls("chat.update")[-1:]
    assert call.params["ts"] == ts and call.status == 200
    blocks = fake.message(channel, ts)["blocks"]
    assert buttons(blocks) == []
    assert f"*Rejected* by <@{DAVE}> at 2024-05-01 12:30:05 UTC: lag is &lt;5 min &amp; falling" in all_text(blocks)


def test_timeout_replaces_the_buttons(fake, slack):
    request = approval_request()
    channel, ts = slack.post_approval_request(request)
    slack.update_timeout(channel, ts, request, waited="30m")
    blocks = fake.message(channel, ts)["blocks"]
    assert buttons(blocks) == [] and "nobody approved within 30m" in all_text(blocks)


def test_thread_reply_ephemeral_and_response_url(fake, slack):
    channel, ts = slack.post_approval_request(approval_request())
    reply_ts = slack.post_in_thread(channel, ts, "offsets reset: *1,234* messages to replay")
    assert fake.message(channel, reply_ts)["thread_ts"] == ts
    assert [m["ts"] for m in fake.replies(channel, ts)] == [reply_ts]

    assert slack.post_ephemeral(channel, DAVE, "you are not an approver")
    (ephemeral,) = fake.calls("chat.postEphemeral")
    assert ephemeral.params["user"] == DAVE and ephemeral.params["channel"] == channel

    slack.respond(fake.response_url("cmd1"), "plan of kafka-replay ...")
    (response,) = fake.calls("response_url")
    assert response.params["key"] == "cmd1"
    assert response.params["body"]["response_type"] == "ephemeral" and response.params["body"]["text"].startswith("plan")


def test_reject_modal_is_opened_with_the_run_id(fake, slack):
    view_id = slack.open_reject_modal("12345.98765.abcd", RUN_ID, "kafka-replay")

    assert view_id.startswith("V")
    (call,) = fake.calls("views.open")
    view = call.params["view"]
    assert call.params["trigger_id"] == "12345.98765.abcd"
    assert view["callback_id"] == "runbook_reject_reason" and view["private_metadata"] == RUN_ID
    (field,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert field["element"]["type"] == "plain_text_input"


def test_user_names_and_usergroups(slack):
    assert slack.user_name(CAROL) == "carol.c"  # the display name first
    assert slack.user_name(DAVE) == "Dave Dunn"  # no display name: the real name
    assert slack.usergroup_members("S0KAFKA01") == [CAROL, DAVE]
    assert slack.usergroup_ids() == {"kafka-oncall": "S0KAFKA01"}
    with pytest.raises(SlackUnavailable) as unknown:
        slack.usergroup_members("S0NOPE")
    assert unknown.value.refused and unknown.value.error == "no_such_subteam"


def test_a_wrong_token_is_refused_as_invalid_auth(fake):
    with pytest.raises(SlackUnavailable) as refused:
        SlackNotifier("xoxb-wrong", fake.url, CHANNEL).auth_test()
    assert refused.value.refused and refused.value.error == "invalid_auth"


def test_429_is_retried_after_retry_after(fake, slack):
    fake.fail_next(1, 429, retry_after=1)
    started = time.monotonic()
    slack.post_message("hello")
    assert time.monotonic() - started >= 1  # slack_sdk waited for Retry-After
    calls = fake.calls("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[0].params == calls[1].params


def test_5xx_is_retried_with_backoff(fake, slack):
    fake.fail_next(2, 502)
    slack.post_message("hello")
    assert [c.status for c in fake.calls("chat.postMessage")] == [502, 502, 200]


def test_slack_staying_down_raises_slack_unavailable(fake, slack):
    fake.fail_next(10, 503)
    with pytest.raises(SlackUnavailable) as down:
        slack.post_approval_request(approval_request())
    assert not down.value.refused and down.value.error == "HTTP 503"
    assert "could not be reached" in str(down.value)
    assert [c.status for c in fake.calls("chat.postMessage")] == [503, 503, 503]  # 1 try + 2 retries


@pytest.mark.parametrize("method, dropped, call", [
    ("chat.getPermalink", "permalink", lambda slack, ts: slack.permalink(CHANNEL, ts)),
    ("chat.postMessage", "ts", lambda slack, ts: slack.post_in_thread(CHANNEL, ts, "progress")),
    ("chat.postMessage", "channel", lambda slack, ts: slack.post_approval_request(approval_request())),
    ("users.info", "user", lambda slack, ts: slack.user_name(CAROL)),
    ("usergroups.users.list", "users", lambda slack, ts: slack.usergroup_members("S0KAFKA01")),
])
def test_an_ok_answer_without_what_slack_documents_raises_slack_unavailable(fake, slack, method, dropped, call):
    _, ts = slack.post_message("the approval message")
    fake.answer_without(method, dropped)
    with pytest.raises(SlackUnavailable) as odd:
        call(slack, ts)
    assert odd.value.method == method and odd.value.refused
    assert f"Slack answered {method} oddly (an answer without '{dropped}')" in str(odd.value)


def test_slack_not_listening_raises_slack_unavailable():
    stopped = SlackFake.start()
    url = stopped.url
    stopped.stop()
    with pytest.raises(SlackUnavailable) as down:
        SlackNotifier("xoxb-x", url, CHANNEL, max_retries=1, backoff_s=0.01).post_message("hello")
    assert not down.value.refused


# -- the fake refuses what Slack refuses (so "the fake took it" means something) -----------------

@pytest.mark.parametrize("blocks, error", [
    ([{"type": "divider"}] * 51, "invalid_blocks"),
    ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "invalid_blocks"),
    ([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Go"},
                                        "action_id": "go", "value": "v" * 2001}]}], "invalid_blocks"),
    ([{"type": "section", "text": {"type": "mrkdwn", "text": "y" * 2900}}] * 5, "msg_blocks_too_long"),
    ([{"type": "header", "text": {"type": "mrkdwn", "text": "not plain"}}], "invalid_blocks"),
])
def test_the_fake_refuses_blocks_slack_refuses(fake, blocks, error):
    client = WebClient(token=fake.token, base_url=fake.url)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=CHANNEL, text="t", blocks=blocks)
    assert refused.value.response["error"] == error


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_the_fake_wants_a_channel_and_text(fake):
    client = WebClient(token=fake.token, base_url=fake.url)
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.chat_postMessage(channel="", text="t")
    with pytest.raises(SlackApiError, match="no_text"):
        client.chat_postMessage(channel=CHANNEL)
    with pytest.raises(SlackApiError, match="not_authed"):
        WebClient(base_url=fake.url).chat_postMessage(channel=CHANNEL, text="t")


# -- a big plan fits ---------------------------------------------------------------------------------

def test_a_1000_partition_plan_is_summarised_within_slacks_limits(fake, slack):
    plan = big_plan()
    assert len(replace(plan, cluster="primary").markdown(rows=1000)) > 4 * BLOCKS_MAX_CHARS  # Slack would refuse it
    markdown = replace(plan, cluster="primary").markdown()  # what the gate sends: the largest moves first
    request = approval_request(markdown, partitions=1000, **{"messages replayed": plan.messages_replayed})
    blocks = approval_blocks(request)

    assert len(blocks) <= 50 and block_errors(blocks) == []
    assert blocks_size(blocks) <= BLOCKS_MAX_CHARS
    text = all_text(blocks)
    assert "*1,000* partitions" in text and f"*{plan.messages_replayed:,}* messages replayed" in text
    (plan_section,) = [b for b in blocks if b.get("block_id") == "plan"]
    shown = plan_section["text"]["text"]
    assert len(shown) <= 3000
    table = shown.split("```\n")[1].splitlines()
    assert table[0].split()[:3] == ["topic", "partition", "current"]
    assert table[1].split() == ["orders", "517", "100000", "10000", "0", "120000", "+90000"]  # the largest first
    assert 20 <= len(table) - 1 < 1000
    assert f"_… {40 - (len(table) - 1)} more row(s) of the plan not shown here._" in shown
    assert "... and 960 more row(s): `runbook status RUN --plan` shows all." in shown
    assert "> WARN group billing has 3 members" in shown  # warnings outlive the rows
    assert f"runbook status {RUN_ID} --plan" in text

    channel, ts = slack.post_approval_request(request)  # and the fake, which checks like Slack, takes it
    slack.update_decision(channel, ts, request, approved=True, by=[CAROL, DAVE])
    assert [c.status for c in fake.calls()] == [200, 200]
    assert len(decided_blocks(request, approved=True, by=[CAROL])) <= 50


def test_a_plan_of_long_text_lines_is_cut_with_a_note():
    markdown = "\n".join(f"> WARN partition {i} of orders has no committed offset; it starts at log start"
                         for i in range(400))
    blocks = approval_blocks(approval_request(markdown))
    (plan_section,) = [b for b in blocks if b.get("block_id") == "plan"]
    shown = plan_section["text"]["text"]
    assert shown.startswith("> WARN partition 0 of orders") and len(shown) <= 3000
    assert shown.endswith("more line(s) of the plan not shown here._") and block_errors(blocks) == []


@settings(max_examples=150, deadline=None)
@given(markdown=st.text(st.sampled_from("| -:*`#>[]()&<\n ab1") , max_size=6000),
       trigger=st.text(max_size=3000), approvers=st.text(max_size=3000))
def test_any_plan_and_facts_fit_slacks_limits(markdown, trigger, approvers):
    request = approval_request(markdown)
    request = ApprovalRequest(**{**request.__dict__, "trigger": trigger, "approvers": approvers})
    for blocks in (approval_blocks(request, approved_so_far=[CAROL]),
                   decided_blocks(request, approved=False, by=[DAVE], comment=trigger)):
        assert block_errors(blocks) == [] and blocks_size(blocks) <= BLOCKS_MAX_CHARS


def test_markdown_tables_become_aligned_code_blocks():
    markdown = ("**Group** `billing` on `primary`\n\n| topic | partition | replayed |\n|---|---:|---:|\n"
                "| orders | 0 | +10 |\n| orders | 11 | -5 |\n\n> WARN group has 2 members & <none>")
    (plan_section,) = [b for b in approval_blocks(approval_request(markdown)) if b.get("block_id") == "plan"]
    assert plan_section["text"]["text"] == (
        "*Group* `billing` on `primary`\n\n```\n"
        "topic   partition  replayed\n"
        "orders          0       +10\n"
        "orders         11        -5\n```\n\n"
        "> WARN group has 2 members &amp; &lt;none&gt;"
    )
