"""The trigger of a RabbitMQ runbook's run reaches its gate: an alert-started run tells Slack which alert
started it (not "from the CLI"), and a Slack-started run posts its approval request to the channel the
command was typed in (not the default one); `runbook status RUN --plan` shows the plan's table. Real runs on the real stack; Slack
is the local fake.

Each run reaches the gate without a stuck consumer or a standby change (drain: a backlog shovel is
planned; failover: the switch), and is rejected by its requester there, so nothing changes."""
from __future__ import annotations

import json
import time

import pika
import pytest

from mq_runbooks.app import runs, starts
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, paused, runbook_env, wait_until  # noqa: F401
from mq_runbooks.integrations.rabbitmq_shovels import queue_depth
from tests.flows.test_rabbitmq_failover import MAIN_PORTS, PRIMARY_ENDPOINT, clusters_yaml, file_switch
from tests.rabbitmq_failover_support import amqp_url, scratch_vhost
from tests.serve_harness import BOT_TOKEN
from tests.slack_fake import SlackFake

DEFAULT_CHANNEL, TYPED_IN = "C0DEFAULT", "C0RABBITWAR"


@pytest.fixture(scope="module")
def slack():
    fake = SlackFake.start(token=BOT_TOKEN)
    yield fake
    fake.stop()


def alert(alertname: str, **labels: str) -> dict:
    return {"source": "alertmanager", "alertname": alertname, "labels": {"alertname": alertname, **labels},
            "startsAt": "2026-11-29T20:00:00Z", "fingerprint": "f00d"}


def slash_trigger() -> dict:
    return {"source": "slack", "user": "U0CAROL", "user_name": "carol", "channel": TYPED_IN}


def approval_request(slack: SlackFake, run_id: str, timeout: float = 30):
    """The chat.postMessage of the run's approval request: (channel, its blocks as text)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in slack.calls("chat.postMessage"):
            blocks = json.dumps(call.params.get("blocks") or [])
            if run_id in blocks and "runbook_approve" in blocks:
                return call.params["channel"], blocks
        time.sleep(0.2)
    raise AssertionError(f"no approval request posted for run {run_id}")


def start(settings, catalog, runbook_id: str, raw: dict, trigger: dict) -> str:
    runbook = catalog.get(runbook_id)
    return starts.start_run(settings, runbook, runbook.validate_parameters(raw), requested_by="alice", trigger=trigger)


def check_gate(slack, settings, catalog, started: list[tuple[str, dict]], row: str) -> None:
    """Each run waits at its gate with its trigger, and `runbook status RUN --plan` shows its plan's
    table (`row`: a cell of it); then its requester rejects it."""
    for run_id, trigger in started:
        view = wait_until(run_id, paused, timeout=90)
        assert journal.last(view.entries, "parameters").data["trigger"] == trigger
        channel, blocks = approval_request(slack, run_id)
        if trigger["source"] == "slack":
            assert channel == TYPED_IN, "posted where the command was typed"
            assert "/runbook in Slack by alice" in blocks
        else:
            assert channel == DEFAULT_CHANNEL
            assert f"alert {trigger['alertname']}" in blocks and "via alertmanager" in blocks
        assert "from the CLI" not in blocks
        assert journal.last(view.entries, "plan").data["rows"], "the plan's table is in the journal"
        status = runbook("status", run_id, "--plan", env={"COLUMNS": "300"})
        assert status.returncode == 0 and "plan (1 row(s))" in status.stdout and row in status.stdout, status.stdout
        runs.answer_gate(settings, catalog, run_id, False, "alice", "only checking the gate")
    for run_id, _ in started:
        view = wait_until(run_id, finished, timeout=60)
        assert journal.last(view.entries, "outcome").data["outcome"] == "rejected"


def slack_env(slack) -> dict[str, str]:
    return {"RUNBOOK_SLACK_BOT_TOKEN": BOT_TOKEN, "RUNBOOK_SLACK_API_URL": slack.url,
            "RUNBOOK_SLACK_CHANNEL": DEFAULT_CHANNEL}


def test_drain_stuck_gate_has_the_trigger(slack, clusters, unique, runbook_env):
    primary = clusters.rabbit_cluster("primary")
    settings, catalog = runbook_env("rabbitmq-drain-stuck", **slack_env(slack))
    started, queues = [], []
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(primary)))
    try:
        for trigger_of in (lambda q: alert("RabbitMQConsumersStuck", cluster="primary", vhost="/", queue=q),
                           lambda q: slash_trigger()):
            queue = unique("alerted")  # one queue each: the runs do not wait for each other's lock
            connection.channel().queue_declare(queue, durable=True)
            connection.channel().basic_publish("", queue, b"waiting")
            queues.append(queue)
            raw = {"cluster": "primary", "queue": queue, "backlog_to": f"{queue}.elsewhere", "window_s": "5"}
            started.append((start(settings, catalog, "rabbitmq-drain-stuck", raw, trigger_of(queue)), trigger_of(queue)))
        check_gate(slack, settings, catalog, started, "shovel backlog")
        assert [queue_depth(amqp_url(primary), "/", q) for q in queues] == [1, 1], "rejected: nothing moved"
    finally:
        for queue in queues:
            connection.channel().queue_delete(queue)
        connection.close()


def test_failover_gate_has_the_trigger(slack, clusters, tmp_path, runbook_env, monkeypatch):
    primary, standby = clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(json.dumps({"rabbitmq": {"endpoint": PRIMARY_ENDPOINT}}))
    monkeypatch.setenv("RUNBOOK_CLUSTERS", str(clusters_yaml(tmp_path, MAIN_PORTS, file_switch(endpoint_file))))
    settings, catalog = runbook_env("rabbitmq-failover", **slack_env(slack))
    with scratch_vhost(primary, standby) as vhost:
        raw = {"vhost": vhost, "switch": "orders-clients"}
        for trigger in (alert("RabbitMQClusterDown", cluster="primary"), slash_trigger()):
            # one after the other: both hold the vhost's failover lock while they wait at the gate
            check_gate(slack, settings, catalog, [(start(settings, catalog, "rabbitmq-failover", raw, trigger), trigger)],
                       "endpoint switch")
    assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == PRIMARY_ENDPOINT, "rejected: not switched"
