"""Alert webhooks against a real `runbook serve` (runner included) on the real stack."""
from __future__ import annotations

import copy
import datetime as dt
import json
import time
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.app import runs, starts
from mq_runbooks.kit import journal
from mq_runbooks.integrations.kafka import KafkaClient
from tests.serve_harness import ALERT_TOKEN, ServeProcess, serve_environment

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


AUTH = {"Authorization": f"Bearer {ALERT_TOKEN}"}


@pytest.fixture(scope="module")
def serve(tmp_path_factory, clusters):
    workdir = tmp_path_factory.mktemp("serve")
    process = ServeProcess(workdir, serve_environment(workdir))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def group(clusters):
    """A group with committed offsets, so kafka-replay can plan for it."""
    config = clusters.kafka_cluster("primary").client_config()
    topic, group_id = f"alerts-{uuid.uuid4().hex[:8]}", f"alerted-{uuid.uuid4().hex[:8]}"
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, 2)
    producer = Producer(config)
    for i in range(10):
        producer.produce(topic, value=b"x", partition=i % 2)
    producer.flush()
    consumer = Consumer({**config, "group.id": group_id, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, 5) for p in range(2)], asynchronous=False)
    consumer.close()
    return group_id


def alertmanager_payload(group_id: str, fingerprint: str, status: str = "firing", **labels: str) -> dict:
    """The shape Alertmanager's webhook sends (version 4)."""
    starts = "2026-11-27T03:00:00.000Z"
    alert_labels = {"alertname": "KafkaConsumerGroupStuck", "severity": "page", "cluster": "primary",
                    "consumergroup": group_id, **labels}
    return {
        "version": "4", "groupKey": '{}:{alertname="KafkaConsumerGroupStuck"}', "truncatedAlerts": 0,
        "status": status, "receiver": "runbooks",
        "groupLabels": {"alertname": "KafkaConsumerGroupStuck"}, "commonLabels": alert_labels,
        "commonAnnotations": {"summary": "billing is stuck"}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status, "labels": alert_labels, "annotations": {"summary": "billing is stuck"},
            "startsAt": starts, "endsAt": "2026-11-27T03:30:00.000Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint,
        }],
    }


def grafana_payload(group_id: str, fingerprint: str) -> dict:
    """The shape Grafana's alerting webhook contact point sends."""
    labels = {"alertname": "KafkaConsumerGroupStuck", "severity": "critical", "cluster": "primary",
              "consumergroup": group_id, "grafana_folder": "Kafka"}
    return {
        "receiver": "runbooks", "status": "firing", "orgId": 1, "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://grafana:3000/",
        "version": "1", "groupKey": "{}/{}:{}", "truncatedAlerts": 0, "title": "[FIRING:1] KafkaConsumerGroupStuck",
        "state": "alerting", "message": "**Firing**",
        "alerts": [{
            "status": "firing", "labels": labels, "annotations": {"summary": "stuck"},
            "startsAt": "2026-11-27T03:05:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://grafana:3000/alerting/grafana/x/view", "fingerprint": fingerprint,
            "silenceURL": "http://grafana:3000/alerting/silence/new", "dashboardURL": "", "panelURL": "",
            "values": {"B": 12.0}, "valueString": "[ var='B' value=12 ]",
        }],
    }


def post(serve: ServeProcess, path: str, payload, headers=AUTH, raw: bytes | None = None) -> httpx.Response:
    body = raw if raw is not None else json.dumps(payload).encode()
    return httpx.post(f"{serve.url}{path}", content=body, headers={"Content-Type": "application/json", **headers},
                      timeout=30)


def wait_paused(run_id: str, timeout: float = 60) -> runs.RunView:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = runs.read_run(run_id)
        if view.state_type == "PAUSED" and journal.last(view.entries, "approval_requested"):
            return view
        if view.finished:
            raise AssertionError(f"run ended: {view.state} {view.message} {view.entries[-3:]}")
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not reach its gate in {timeout}s")


def reject(run_id: str) -> None:
    from mq_runbooks.base.catalog import load_catalog
    from mq_runbooks.base.settings import Settings

    settings = Settings.from_environ()
    runs.answer_gate(settings, load_catalog(settings.catalog), run_id, False, "bob", "test over")


def test_alertmanager_alert_starts_the_runbook_once_with_parameters_from_labels(serve, group, tmp_path):
    fingerprint = uuid.uuid4().hex[:16]
    payload = alertmanager_payload(group, fingerprint)
    first = post(serve, "/alerts/alertmanager", payload)
    assert first.status_code == 202, first.text
    started = first.json()["started"]
    assert [item["runbook"] for item in started] == ["kafka-replay"]
    run_id = started[0]["run_id"]

    view = wait_paused(run_id)
    parameters = journal.last(view.entries, "parameters").data
    assert parameters["parameters"]["group"] == group and parameters["parameters"]["cluster"] == "primary"
    assert parameters["parameters"]["by_duration"] == "PT15M"
    assert parameters["trigger"]["alertname"] == "KafkaConsumerGroupStuck"
    assert parameters["trigger"]["startsAt"].startswith("2026-11-27T03:00:00")

    # Alertmanager repeats the notification: no second run.
    again = post(serve, "/alerts/alertmanager", payload).json()
    assert again["started"] == [] and [item["run_id"] for item in again["deduplicated"]] == [run_id]

    # Another replica (HTTP only) gets the same notification: still no second run.
    replica = ServeProcess(tmp_path, serve_environment(tmp_path, deployment=serve.env["RUNBOOK_DEPLOYMENT"]),
                           runner=False)
    try:
        from_replica = post(replica, "/alerts/alertmanager", payload).json()
    finally:
        replica.stop()
    assert from_replica["started"] == [] and [i["run_id"] for i in from_replica["deduplicated"]] == [run_id]

    # The alert resolves: the run's journal says so.
    resolved = post(serve, "/alerts/alertmanager", alertmanager_payload(group, fingerprint, status="resolved")).json()
    assert resolved["resolved"][0]["runs"] == [run_id]
    entry = journal.last(runs.read_run(run_id).entries, "alert_resolved")
    assert entry is not None and entry.data["endsAt"].startswith("2026-11-27T03:30:00")
    reject(run_id)


def test_grafana_alert_starts_the_runbook(serve, group):
    response = post(serve, "/alerts/grafana", grafana_payload(group, uuid.uuid4().hex[:16]))
    assert response.status_code == 202, response.text
    started = response.json()["started"]
    assert len(started) == 1
    view = wait_paused(started[0]["run_id"])
    assert journal.last(view.entries, "parameters").data["trigger"]["source"] == "grafana"
    reject(started[0]["run_id"])


def test_missing_label_and_unmatched_alerts_are_reported_not_started(serve, group):
    payload = alertmanager_payload(group, uuid.uuid4().hex[:16])
    del payload["alerts"][0]["labels"]["consumergroup"]
    other = copy.deepcopy(payload["alerts"][0])
    other["labels"] = {"alertname": "DiskFull", "severity": "page"}
    payload["alerts"].append(other)
    body = post(serve, "/alerts/alertmanager", payload).json()
    assert body["started"] == []
    assert body["not_started"][0]["reason"] == (
        "not started because label 'consumergroup' is missing (needed for parameter group)")
    assert body["unmatched"][0]["alertname"] == "DiskFull"
    metrics = httpx.get(f"{serve.url}/metrics").text
    assert "runbook_alerts_unmatched_total " in metrics and "DiskFull" not in metrics
    assert 'runbook_alerts_rejected_total{reason="bad_parameters"}' in metrics


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ALERT_TOKEN}])
def test_alert_endpoints_need_the_bearer_token(serve, group, headers):
    for path in ("/alerts/alertmanager", "/alerts/grafana"):
        response = post(serve, path, alertmanager_payload(group, "f"), headers=headers)
        assert response.status_code == 401 and response.content == b""


@pytest.mark.parametrize("raw, status, reason", [
    (b"{not json", 400, "the body is not JSON"),
    (b"[]", 400, "is a JSON object"),
    (json.dumps({"version": "4", "status": "firing", "alerts": []}).encode(), 400, "alerts"),
    (json.dumps({"version": "4", "status": "firing", "alerts": [{"status": "firing"}]}).encode(), 400,
     "alerts.0.labels: Field required"),
    (json.dumps({"version": "3", "status": "firing", "alerts": [{}]}).encode(), 400, "version"),
    (b"x" * (1024 * 1024 + 1), 413, "larger than"),
])
def test_bad_payloads_get_a_4xx_with_the_reason(serve, raw, status, reason):
    response = post(serve, "/alerts/alertmanager", None, raw=raw)
    assert response.status_code == status
    assert reason in response.json()["error"]


def test_healthz_and_metrics(serve):
    health = httpx.get(f"{serve.url}/healthz").json()
    assert health["status"] == "ok" and "kafka-replay" in health["runbooks"]
    metrics = httpx.get(f"{serve.url}/metrics")
    assert metrics.status_code == 200 and "runbook_alerts_received_total" in metrics.text


def test_a_rejected_run_is_one_info_line_in_serves_log_not_an_error(serve, clusters, unique):
    """serve's runner executes the flow for its result: a gate's no must not end as an ERROR with
    Prefect's traceback of a failed run (kit/endings.py), yet the run is not a success."""
    config = clusters.kafka_cluster("primary").client_config()
    topic, group_id = unique("declined"), unique("declined-group")
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, 1)
    producer = Producer(config)
    producer.produce(topic, value=b"x", partition=0)
    producer.flush()
    consumer = Consumer({**config, "group.id": group_id, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)  # the last 15 min: 1 to replay
    consumer.close()
    started = post(serve, "/alerts/alertmanager", alertmanager_payload(group_id, uuid.uuid4().hex[:16]))
    assert started.status_code == 202, started.text
    run_id = started.json()["started"][0]["run_id"]
    wait_paused(run_id)
    reject(run_id)
    deadline = time.monotonic() + 60
    while not (view := runs.read_run(run_id)).finished and time.monotonic() < deadline:
        time.sleep(0.3)
    assert view.state == "Rejected" and not view.succeeded, (view.state, view.message)
    line = f"run {run_id} rejected by bob: test over; nothing was changed"
    while line not in serve.log_path.read_text() and time.monotonic() < deadline:  # the log lands a moment later
        time.sleep(0.3)
    log = serve.log_path.read_text()
    assert "Traceback" not in log and "FailedRun" not in log, log[-4000:]
    naming = [row for row in log.splitlines() if line in row]
    assert len(naming) == 1 and "| INFO" in naming[0], log[-4000:]


def test_what_a_run_writes_is_not_readable_by_others(serve, clusters, unique, tmp_path, monkeypatch):
    """Snapshots and run logs 0600 in 0700 directories, the postmortem draft 0640 in 0750 (the team
    reads it): written by a run forked from serve's starter, and by a local run's executor."""
    import stat
    from pathlib import Path

    from mq_runbooks.base.catalog import load_catalog
    from mq_runbooks.base.settings import Settings

    def mode(path: Path) -> str:
        return oct(stat.S_IMODE(path.stat().st_mode))

    config = clusters.kafka_cluster("primary").client_config()
    topic, group_id = unique("modes"), unique("modesgroup")
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, 1)
    producer = Producer(config)
    for _ in range(3):
        producer.produce(topic, value=b"x", partition=0)
    producer.flush()
    consumer = Consumer({**config, "group.id": group_id, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    consumer.close()
    answer = post(serve, "/alerts/alertmanager", alertmanager_payload(group_id, uuid.uuid4().hex[:16]))
    run_id = answer.json()["started"][0]["run_id"]
    wait_paused(run_id)
    settings = Settings.from_environ()
    runs.answer_gate(settings, load_catalog(settings.catalog), run_id, True, "carol", "modes")
    deadline = time.monotonic() + 90
    while not (view := runs.read_run(run_id)).finished or not journal.last(view.entries, "postmortem"):
        assert time.monotonic() < deadline, f"run {run_id} did not end with its draft: {view.state}"
        time.sleep(0.5)
    assert view.succeeded, view.message
    snapshots = Path(serve.env["RUNBOOK_SNAPSHOT_DIR"])
    [snapshot] = snapshots.glob(f"*{group_id}*{run_id}*")
    drafts = Path(serve.env["RUNBOOK_POSTMORTEM_DIR"])
    [draft] = [path for path in drafts.glob("*.md") if run_id in path.read_text()]
    assert {"snapshot": mode(snapshot), "snapshots/": mode(snapshots), "draft": mode(draft),
            "drafts/": mode(drafts)} == {"snapshot": "0o600", "snapshots/": "0o700", "draft": "0o640",
                                         "drafts/": "0o750"}

    # A local run (`runbook run` on this machine): its executor's log under run-logs/.
    for key, value in serve_environment(tmp_path).items():
        if key.startswith("RUNBOOK_"):
            monkeypatch.setenv(key, value)
    settings = Settings.from_environ()
    catalog = load_catalog(settings.catalog)
    runbook = catalog.get("kafka-replay")
    local = starts.start_run(settings, runbook, runbook.validate_parameters(
        {"cluster": "primary", "group": group_id, "to_latest": "true"}), requested_by="alice")
    try:
        log = runs.run_log_path(settings, local)
        assert {"run log": mode(log), "run-logs/": mode(log.parent)} == {"run log": "0o600", "run-logs/": "0o700"}
    finally:
        wait_paused(local)
        runs.answer_gate(settings, catalog, local, False, "bob", "test over")
