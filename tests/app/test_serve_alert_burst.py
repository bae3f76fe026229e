"""The alert path under bursts and failures, against real `runbook serve --no-runner` replicas and the
real Prefect server: one run per alert occurrence across replicas, and no acknowledgement for a
notification whose run Prefect did not record. (Its speed is measured by bench/alerts.py.)"""
from __future__ import annotations

import json
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from tests.serve_harness import ALERT_TOKEN, ServeProcess, serve_environment
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


HEADERS = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}


def notification(group: str, fingerprint: str, alertname: str = "KafkaConsumerGroupStuck") -> bytes:
    labels = {"alertname": alertname, "severity": "page", "cluster": "primary", "consumergroup": group}
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "runbooks", "groupKey": "test", "groupLabels": {},
        "commonLabels": labels, "commonAnnotations": {}, "externalURL": "", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": labels, "annotations": {}, "startsAt": "2026-11-29T03:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint}],
    }).encode()


def send(replica: ServeProcess, body: bytes) -> httpx.Response:
    return httpx.post(f"{replica.url}/alerts/alertmanager", content=body, headers=HEADERS, timeout=60)


def deliver(replica: ServeProcess, body: bytes, within_s: float = 60) -> tuple[httpx.Response, int]:
    """Send until acknowledged, as Alertmanager does (a 503 means: not recorded, send it again; the
    shared SQLite behind Prefect refuses some writes under load). The answer, and how many 503s came first."""
    deadline, refused = time.monotonic() + within_s, 0
    while True:
        answer = send(replica, body)
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer, refused
        refused += 1
        time.sleep(0.2)


def runs_of(deployment: str, group_prefix: str) -> list:
    """The flow runs of the test's deployment whose group starts with `group_prefix`, read from Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])), limit=200)
    return [run for run in runs if run.parameters["params"]["group"].startswith(group_prefix)]


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """A serve environment whose deployments are registered (by a serve with its runner, stopped at once:
    the runs the tests create stay scheduled, nothing executes them), deleted again at the end."""
    workdir = tmp_path_factory.mktemp("burst")
    env = serve_environment(workdir)
    ServeProcess(workdir, env).stop()
    yield workdir, env
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for run in runs_of(env["RUNBOOK_DEPLOYMENT"], ""):
            client.delete_flow_run(run.id)


@pytest.fixture(scope="module")
def replicas(environment):
    workdir, env = environment
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda _: ServeProcess(workdir, env, runner=False), range(2)))
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture()
def relayed(environment):
    """A replica that reaches the Prefect server through a relay the test can cut (and whose Prefect
    client does not retry, so a cut fails the request at once)."""
    workdir, env = environment
    api = urlsplit(os.environ["PREFECT_API_URL"])
    relay = TcpRelay(api.hostname, api.port)
    replica = ServeProcess(workdir, {**env, "PREFECT_API_URL": f"http://127.0.0.1:{relay.port}{api.path}",
                                     "PREFECT_CLIENT_MAX_RETRIES": "0"}, runner=False)
    yield replica, relay
    replica.stop()
    relay.close()


def test_a_burst_with_repeats_across_two_replicas_starts_exactly_one_run_per_alert(environment, replicas):
    _, env = environment
    prefix = f"burst-{uuid.uuid4().hex[:8]}-"
    alerts = [(f"{prefix}{i}", f"{prefix}{i:03d}") for i in range(20)]
    sends = [(replicas[n % 2], alert) for n, alert in enumerate(alerts * 6)]
    random.shuffle(sends)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda item: (item[1], deliver(item[0], notification(*item[1]))[0]), sends))

    assert [answer.status_code for _, answer in answers] == [202] * len(sends), \
        [answer.text for _, answer in answers if answer.status_code != 202][:3]
    run_of: dict[str, set[str]] = {}
    for (group, _), answer in answers:
        result = answer.json()
        items = result["started"] + result["deduplicated"]
        assert len(items) == 1, result
        run_of.setdefault(group, set()).add(items[0]["run_id"])
    assert all(len(ids) == 1 for ids in run_of.values()), run_of  # every repeat, on either replica, got the same run
    created = runs_of(env["RUNBOOK_DEPLOYMENT"], prefix)
    assert len(created) == len(alerts)
    assert {str(run.id) for run in created} == {next(iter(ids)) for ids in run_of.values()}
    assert sum(len(answer.json()["started"]) for _, answer in answers) == len(alerts)


def test_a_notification_is_not_acknowledged_while_prefect_cannot_record_it(environment, relayed):
    _, env = environment
    replica, relay = relayed
    prefix = f"cut-{uuid.uuid4().hex[:8]}-"
    before, busy_before = deliver(replica, notification(f"{prefix}before", f"{prefix}1"))
    assert before.status_code == 202, before.text
    before_run = (before.json()["started"] + before.json()["deduplicated"])[0]["run_id"]
    relay.cut()

    refused = send(replica, notification(f"{prefix}during", f"{prefix}2"))
    assert refused.status_code == 503, refused.text
    assert "Prefect" in refused.json()["error"] and "send the alert again" in refused.json()["error"]
    # What needs no write is still answered, from memory: a repeat this replica started, an alert matching nothing.
    repeat = send(replica, notification(f"{prefix}before", f"{prefix}1"))
    assert repeat.status_code == 202
    assert repeat.json()["deduplicated"][0]["run_id"] == before_run
    unmatched = send(replica, notification(f"{prefix}x", f"{prefix}3", alertname="NothingMatchesThis"))
    assert unmatched.status_code == 202 and len(unmatched.json()["unmatched"]) == 1, unmatched.text
    assert runs_of(env["RUNBOOK_DEPLOYMENT"], f"{prefix}during") == []

    relay.restore()
    again, busy = deliver(replica, notification(f"{prefix}during", f"{prefix}2"))
    assert again.status_code == 202, again.text
    assert [str(run.id) for run in runs_of(env["RUNBOOK_DEPLOYMENT"], f"{prefix}during")] == \
        [item["run_id"] for item in again.json()["started"] + again.json()["deduplicated"]]
    metrics = httpx.get(f"{replica.url}/metrics", timeout=10).text
    assert f'runbook_alerts_rejected_total{{reason="prefect_unavailable"}} {1.0 + busy_before + busy}' in metrics


def only_run(answer: httpx.Response) -> tuple[str, str]:
    """(bucket, run id) of a notification of one alert: started or deduplicated."""
    assert answer.status_code == 202, answer.text
    result = answer.json()
    buckets = [(bucket, item["run_id"]) for bucket in ("started", "deduplicated") for item in result[bucket]]
    assert len(buckets) == 1, [item.get("reason") for item in result["not_started"]] or result
    return buckets[0]


def test_a_replica_answers_occurrences_another_replica_recorded_with_their_runs(environment, replicas, relayed):
    """The second replica to see an occurrence (or one restarted with an empty memory) gets the run
    the first recorded, while the new occurrences of the same burst are started, each exactly once."""
    _, env = environment
    fresh, _ = relayed  # a replica that has seen nothing yet
    prefix = f"seen-{uuid.uuid4().hex[:8]}-"
    alerts = [(f"{prefix}{i}", f"{prefix}{i:03d}") for i in range(10)]
    first = {group: only_run(deliver(replicas[0], notification(group, key))[0]) for group, key in alerts[:5]}
    assert {bucket for bucket, _ in first.values()} == {"started"}

    with ThreadPoolExecutor(10) as pool:
        second = dict(zip([group for group, _ in alerts], pool.map(
            lambda alert: only_run(deliver(fresh, notification(*alert))[0]), alerts)))
    for group, _ in alerts[:5]:
        assert second[group] == ("deduplicated", first[group][1])
    assert {second[group][0] for group, _ in alerts[5:]} == {"started"}
    created = runs_of(env["RUNBOOK_DEPLOYMENT"], prefix)
    assert sorted(str(run.id) for run in created) == sorted(run_id for _, run_id in second.values())


def test_a_repeat_of_an_occurrence_whose_run_crashed_starts_one_new_run_on_every_replica(
        environment, replicas, relayed):
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    _, env = environment
    fresh, _ = relayed
    group = f"crashed-{uuid.uuid4().hex[:8]}"
    body = notification(group, group)
    bucket, crashed = only_run(deliver(replicas[0], body)[0])
    assert bucket == "started"
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(crashed), Crashed(message="its process died (test)"), force=True)

    bucket, again = only_run(deliver(replicas[1], body)[0])  # this replica never saw the occurrence
    assert bucket == "started" and again != crashed
    assert only_run(deliver(fresh, body)[0]) == ("deduplicated", again)  # nor this one: it finds the new run
    assert only_run(deliver(replicas[1], body)[0]) == ("deduplicated", again)
    assert sorted(str(run.id) for run in runs_of(env["RUNBOOK_DEPLOYMENT"], group)) == sorted([crashed, again])
