"""Generated payloads and headers against every endpoint of a real `runbook serve`: whatever arrives,
the answer is never a 5xx, the server keeps answering, and outside input adds no metric series."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
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


# Any byte a client can put in a header value (h11 refuses controls other than tab on the way out).
header_value = st.binary(max_size=60).map(
    lambda raw: bytes(b for b in raw if b == 9 or 32 <= b != 127)).map(lambda raw: raw.strip(b" \t"))
HEADER_NAMES = ["Authorization", "X-Slack-Signature", "X-Slack-Request-Timestamp", "Content-Type", "Origin",
                "Referer", "X-Forwarded-Email", "X-Forwarded-User", "Cookie", "Accept-Language"]
PAGES = [("POST", "/postmortems/2026-11-27-kafka-replay-0123abcd/review"),
         ("POST", "/postmortems/2026-11-27-kafka-replay-0123abcd"), ("GET", "/postmortems"),
         ("GET", "/postmortems/2026-11-27-kafka-replay-0123abcd"), ("GET", "/metrics"), ("GET", "/healthz")]


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_value, max_size=6),
       target=st.sampled_from([("POST", endpoint) for endpoint in ENDPOINTS] + PAGES))
def test_any_header_values_never_answer_5xx(serve, http, headers, target):
    method, path = target
    response = http.request(method, serve.url + path, content=b"{}", headers=headers)
    assert response.status_code < 500, (target, headers, response.status_code, response.text)


@pytest.mark.parametrize("value", ["Bearer t\u00f6ken", "Bearer \u00ff\u00fe", "\u00e9"])
def test_a_non_ascii_authorization_header_is_401(serve, http, value):
    for endpoint in ENDPOINTS[:2]:
        response = http.post(serve.url + endpoint, content=b"{}", headers={"Authorization": value.encode("latin-1")})
        assert response.status_code == 401, (endpoint, response.status_code)


@pytest.mark.parametrize("endpoint", ["/alerts/alertmanager", "/alerts/grafana", "/slack/interactions"])
@pytest.mark.parametrize("levels", [65, 100_000])
def test_json_nested_too_deep_is_a_400_naming_the_limit(serve, http, endpoint, levels):
    deep = "[" * levels + "]" * levels
    body, headers = body_for(endpoint, {"version": "4", "status": "firing", "alerts": "DEEP"})
    if endpoint == "/slack/interactions":
        levels = min(levels, 40_000)  # urlencoded, 100,000 levels are beyond the 256 KiB a Slack body may have
        body = urlencode({"payload": "[" * levels + "]" * levels}).encode()
        body, headers = body, {**headers, **_slack_signature(body)}
    else:
        body = body.replace(b'"DEEP"', deep.encode())
    response = http.post(serve.url + endpoint, content=body, headers=headers)
    assert response.status_code == 400, (endpoint, response.status_code, response.text[:300])
    assert "nested deeper than 64 levels" in response.json()["error"]
    # 64 levels (the object and 63 lists in it) are within the limit: refused for their shape, not their depth.
    within = body_for(endpoint, {"version": "4", "alerts": "DEEP"})
    body = within[0].replace(b'"DEEP"', b"[" * 63 + b"]" * 63) if endpoint != "/slack/interactions" else \
        urlencode({"payload": "{" + f'"n": "{uuid.uuid4()}", "a": ' + "[" * 63 + "]" * 63 + "}"}).encode()
    headers = within[1] if endpoint != "/slack/interactions" else {**within[1], **_slack_signature(body)}
    answer = http.post(serve.url + endpoint, content=body, headers=headers)
    assert answer.status_code == 400 and "nested deeper" not in answer.text, answer.text


def _slack_signature(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}


def test_unmatched_alertnames_add_no_metric_series(serve, http):
    def series() -> int:
        return sum(1 for line in http.get(serve.url + "/metrics").text.splitlines() if line and not line.startswith("#"))

    def unmatched() -> float:
        text = http.get(serve.url + "/metrics").text
        return float(next(line.split()[1] for line in text.splitlines() if line.startswith("runbook_alerts_unmatched_total ")))

    before, counted = series(), unmatched()
    for batch in range(12):
        alerts = [{"status": "firing", "labels": {"alertname": f"Random{batch}x{i}-{uuid.uuid4().hex[:8]}"},
                   "startsAt": "2026-11-27T03:00:00Z", "fingerprint": uuid.uuid4().hex[:16]} for i in range(500)]
        body, headers = body_for("/alerts/alertmanager", {"version": "4", "status": "firing", "receiver": "x",
                                                          "alerts": alerts})
        answer = http.post(serve.url + "/alerts/alertmanager", content=body, headers=headers)
        assert answer.status_code == 202 and len(answer.json()["unmatched"]) == 500
    # 6,000 unmatched alerts, each with its own name: one counter (plus the received counters' series).
    assert series() - before <= 4
    assert unmatched() - counted == 6000


def test_server_still_answers_after_the_fuzzing(serve, http):
    assert http.get(serve.url + "/healthz").status_code == 200
