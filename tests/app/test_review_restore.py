"""The Restore button of a postmortem's review page (issue 27, item 1): on a real `runbook serve`, the
page of a run that saved a snapshot offers it to the person the proxy asserts; pressing it starts a
restore run of that run, requested by that person, which serve's worker takes through the gate to the
offsets the run saved. Without a proven identity it starts nothing."""
from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client

from mq_runbooks.app import runs
from mq_runbooks.kit import journal
from tests.flows.runbook_harness import finished, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.flows.test_kafka_replay import committed, group_at_end, kafka_config  # noqa: F401 (fixtures)
from tests.serve_harness import ServeProcess, serve_environment

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out

PROXY = "127.0.0.2"  # the test's "authenticating proxy": requests sent from this address


def from_proxy() -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY), timeout=60, follow_redirects=False)


def test_the_review_page_restores_a_run_as_the_person_the_proxy_asserts(tmp_path, kafka_config, group_at_end,
                                                                        runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay")
    before = committed(kafka_config, group)
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused, timeout=90)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "go")
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, view.message
    postmortem_id = Path(journal.last(view.entries, "postmortem").data["path"]).stem

    (tmp_path / "teams.yaml").write_text("kafka-oncall: [carol, Dana]\n")
    env = serve_environment(tmp_path)
    env.update({"RUNBOOK_TEAMS": str(tmp_path / "teams.yaml"), "RUNBOOK_TRUSTED_PROXIES": PROXY,
                "RUNBOOK_POSTMORTEM_DIR": os.environ["RUNBOOK_POSTMORTEM_DIR"]})
    serve = ServeProcess(tmp_path, env)
    try:
        with from_proxy() as http:
            shown = http.get(f"{serve.url}/postmortems/{postmortem_id}", headers={"X-Forwarded-User": "carol"})
            assert shown.status_code == 200, shown.text
            assert "id=restore>" in shown.text and "Restore as carol" in shown.text
            assert f"the snapshot of run <code>{run_id}</code>" in shown.text

            unproven = httpx.post(f"{serve.url}/postmortems/{postmortem_id}/restore", timeout=30,
                                  headers={"Origin": serve.url, "X-Forwarded-User": "carol"})
            assert unproven.status_code == 403, "a typed identity from outside the proxy starts nothing"

            pressed = http.post(f"{serve.url}/postmortems/{postmortem_id}/restore",
                                headers={"Origin": serve.url, "X-Forwarded-User": "carol"})
            assert pressed.status_code == 201, pressed.text
            restore_id = pressed.text.split("id=restore-run>Run <code>", 1)[1].split("</code>", 1)[0]
        with get_client(sync_client=True) as client:
            started = client.read_flow_run(UUID(restore_id))
        assert started.parameters["requested_by"] == "carol"
        assert started.parameters["trigger"]["restore_of"] == run_id
        assert started.parameters["trigger"]["source"] == "review-page"
        assert started.parameters["params"]["group"] == group, "the run's own parameters"
        # serve's worker executes it: its gate, then the offsets the run's snapshot saved.
        wait_until(restore_id, paused, timeout=120)
        runs.answer_gate(settings, catalog, restore_id, True, "bob", "undo it")
        done = wait_until(restore_id, finished, timeout=120)
        assert done.succeeded, (done.message, done.entries[-4:])
        assert committed(kafka_config, group) == before
    finally:
        serve.stop()
