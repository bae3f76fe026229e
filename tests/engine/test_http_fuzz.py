"""Generated payloads against every POST endpoint of a real `runbook serve`: whatever arrives,
the answer is never a 5xx, and the server keeps answering."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve_harness import ALERT_TOKEN, SIGNING_SECRET, ServeProcess, serve_environment

ENDPOINTS = ["/alerts/alertmanager", "/alerts/grafana", "/slack/commands", "/slack/interactions"]

text = st.text(max_size=40)
labels = st.dictionaries(st.sampled_from(["alertname", "severity", "cluster", "consumergroup", "x"]) | text,
                         text, max_size=5)
alert = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(["firing", "resolved", "pending", ""]) | text,
    "labels": labels | st.integers() | st.none(),
    "annotations": labels | st.lists(text),
    "startsAt": st.sampled_from(["2026-11-27T03:00:00Z", "not a time", ""]) | st.integers(),
    "endsAt": st.sampled_from(["0001-01-01T00:00:00Z", "x"]),
    "fingerprint": text | st.integers(),
})
alert_payload = st.fixed_dictionaries({}, optional={
    "version": st.sampled_from(["4", "3", 4]) | text,
    "status": st.sampled_from(["firing", "resolved"]) | text,
    "alerts": st.lists(alert, max_size=3) | text | st.none(),
    "receiver": text | st.integers(),
})
json_value = st.recursive(st.none() | st.booleans() | st.integers() | text,
                          lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
                          max_leaves=10)
slack_payload = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["block_actions", "view_submission", "shortcut"]) | text,
    "user": st.fixed_dictionaries({}, optional={"id": text, "name": text}) | text,
    "actions": st.lists(st.fixed_dictionaries({}, optional={
        "action_id": st.sampled_from(["runbook_approve", "runbook_reject"]) | text, "value": text}), max_size=2),
    "view": json_value, "channel": json_value, "message": json_value, "trigger_id": text, "response_url": text,
})
command_form = st.fixed_dictionaries({}, optional={
    "command": st.just("/runbook") | text, "text": st.sampled_from(["", "help", "list", "show x", "run", "plan"]) | text,
    "user_id": text, "user_name": text, "channel_id": text, "response_url": text, "trigger_id": text,
})


def body_for(endpoint: str, draw_value) -> tuple[bytes, dict[str, str]]:
    if endpoint.startswith("/alerts"):
        return json.dumps(draw_value).encode(), {"Authorization": f"Bearer {ALERT_TOKEN}",
                                                 "Content-Type": "application/json"}
    if endpoint == "/slack/commands":
        body = urlencode(draw_value).encode()
    else:
        body = urlencode({"payload": json.dumps(draw_value)}).encode()
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
                  "Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def serve(tmp_path_factory, clusters):
    workdir = tmp_path_factory.mktemp("fuzz")
    process = ServeProcess(workdir, serve_environment(workdir), runner=False)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=30) as client:
        yield client


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(payload=alert_payload)
def test_alert_endpoints_never_answer_5xx(serve, http, payload):
    for endpoint in ENDPOINTS[:2]:
        body, headers = body_for(endpoint, payload)
        response = http.post(serve.url + endpoint, content=body, headers=headers)
        assert response.status_code < 500, (endpoint, response.status_code, response.text)


@FUZZ
@given(payload=slack_payload, form=command_form)
def test_slack_endpoints_never_answer_5xx(serve, http, payload, form):
    for endpoint, value in (("/slack/interactions", payload), ("/slack/commands", form)):
        body, headers = body_for(endpoint, value)
        response = http.post(serve.url + endpoint, content=body, headers=headers)
        assert response.status_code < 500, (endpoint, response.status_code, response.text)


@FUZZ
@given(raw=st.binary(max_size=300), endpoint=st.sampled_from(ENDPOINTS))
def test_arbitrary_bytes_never_answer_5xx(serve, http, raw, endpoint):
    response = http.post(serve.url + endpoint, content=raw,
                         headers={"Authorization": f"Bearer {ALERT_TOKEN}"})
    assert response.status_code < 500, (endpoint, response.status_code, response.text)


def test_server_still_answers_after_the_fuzzing(serve, http):
    assert http.get(serve.url + "/healthz").status_code == 200
