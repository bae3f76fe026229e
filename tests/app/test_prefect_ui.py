"""Prefect's UI reads right: runs named after their runbook and target and tagged with who asked and
whom they wait for (also a run created from the deployment's Run form), the gate's form saying what
is asked, by whom, until when and how to answer, with no judge's field in it, the plan a keyed table
artifact, and a rejected run not green (in real Chromium, on the Prefect UI's page of the run)."""
from __future__ import annotations

import json
import time
import uuid
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
from prefect.flow_runs import resume_flow_run
from prefect.input.run_input import keyset_from_paused_state
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mq_runbooks.app import runs, workers
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.settings import Settings
from tests.app.test_cli import runbook
from tests.app.test_review_pages import browser  # noqa: F401  (the fixture: real Chromium)
from tests.flows.runbook_harness import finished, paused, wait_until
from tests.kafka_groups import group_at_end


@pytest.fixture(scope="module")
def waiting(clusters):
    """A kafka-replay run requested by alice, waiting at its gate; rejected by the last test."""
    _, topic, group = group_at_end(clusters, unique, "ui")
    started = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true",
                      "--as", "alice", "--json")
    assert started.returncode == 0, started.stderr
    return wait_until(json.loads(started.stdout)["run_id"], paused, timeout=90), topic, group


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _flow_run(run_id: str):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id))


def test_a_run_is_named_after_its_runbook_and_target_and_tagged_with_who_asked_and_whom_it_waits_for(waiting):
    view, _, group = waiting
    flow_run = _flow_run(view.id)
    assert flow_run.name == f"kafka-replay primary/{group}"
    assert {"mq-runbooks", "runbook:kafka-replay", f"lock:kafka:primary:group:{group}", "requested-by:alice"} <= set(
        flow_run.tags)
    assert [tag for tag in flow_run.tags if tag.startswith("waits-for:1 of @kafka-oncall")], flow_run.tags


def test_the_form_says_what_is_asked_by_whom_until_when_and_links_the_plan_table(waiting):
    view, topic, _ = waiting
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(view.id))
        keyset = keyset_from_paused_state(flow_run.state)
        schema = json.loads(client.read_flow_run_input(UUID(view.id), keyset["schema"]))
        description = json.loads(client.read_flow_run_input(UUID(view.id), keyset["description"]))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[UUID(view.id)])))
    assert set(schema["properties"]) == {"decision", "by", "comment"}, "no editable digest, proof or signature"
    assert all(field.get("description") for field in schema["properties"].values())
    for expected in ("## Approve `kafka-replay`?", "**Asked by** alice", "1 approval(s) from @kafka-oncall",
                     " UTC**", f"runbook approve {view.id}", "refused", f"/artifacts/key/plan-{view.id}", topic):
        assert expected in description, (expected, description)
    [plan] = [a for a in artifacts if a.key == f"plan-{view.id}"]
    assert plan.type == "table"
    assert json.loads(plan.data)[0] == {"topic": topic, "partition": 0, "current": 2, "target": 0, "log start": 0,
                                        "log end": 2, "replayed (+) / skipped (-)": "+2"}


def test_a_run_from_the_deployment_run_form_is_refused_named_and_tagged(clusters):
    """As the Prefect UI's Run form creates it: the deployment's parameters, no tags, a random name. The
    engine did not start it (kit/origin.py): it is refused before its first step, and reads right in the UI."""
    settings = Settings.from_environ()
    catalog = load_catalog(settings.catalog)
    _, _, group = group_at_end(clusters, unique, "uiform")
    workers.ensure_registered(catalog.get("kafka-replay"), workers.LOCAL, None)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(workers.deployment_name("kafka-replay", workers.LOCAL))
        created = client.create_flow_run_from_deployment(deployment.id, parameters={
            "params": {"cluster": "primary", "group": group, "to_earliest": True}, "requested_by": "unknown"})
    workers.spawn_executor(settings, str(created.id))
    view = wait_until(str(created.id), lambda v: v.finished, timeout=90)
    flow_run = _flow_run(view.id)
    assert flow_run.name == f"kafka-replay primary/{group}"
    assert {"mq-runbooks", "runbook:kafka-replay", f"lock:kafka:primary:group:{group}"} <= set(flow_run.tags)
    assert view.runbook == "kafka-replay" and runs.read_run(view.id).target == f"primary/{group}"
    assert (view.state, view.state_type) == ("Refused", "CANCELLED"), "grey in the UI, not a green success"
    assert "not started by mq-runbooks" in view.message and not view.entries


def test_an_answer_from_the_form_is_refused_and_the_form_says_so_when_it_opens_again(waiting):
    view, _, _ = waiting
    settings = Settings.from_environ()
    resume_flow_run(UUID(view.id), run_input={"decision": "approve", "by": "carol", "comment": "from the form"})
    assert runs.execute_if_local(settings, view.id)
    again = wait_until(view.id, lambda v: paused(v) and v.pause_key != view.pause_key, timeout=90)
    assert "refused carol's answer" in again.message
    with get_client(sync_client=True) as client:
        keyset = keyset_from_paused_state(client.read_flow_run(UUID(view.id)).state)
        description = json.loads(client.read_flow_run_input(UUID(view.id), keyset["description"]))
    assert "> **Refused:** refused carol's answer: the answer is not signed by mq-runbooks" in description, description


def test_prefect_ui_resume_dialog_says_what_is_asked_and_has_no_judges_field(waiting, browser, tmp_path):
    """In real Chromium: the Resume dialog of the waiting run (before the next test rejects it)."""
    view, topic, _ = waiting
    browser.get(f"{Settings.from_environ().prefect_api_url.removesuffix('/api')}/runs/flow-run/{view.id}")
    resume = WebDriverWait(browser, 30).until(lambda d: next(
        (b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Resume"), None))
    resume.click()
    dialog = WebDriverWait(browser, 30).until(lambda d: next(
        (x for x in d.find_elements(By.CSS_SELECTOR, "[role=dialog], .p-modal") if "Approve" in x.text), None))
    text = dialog.text
    for expected in ("Approve kafka-replay?", "Asked by alice.", "Waiting for 1 approval(s) from @kafka-oncall",
                     " UTC.", f"runbook approve {view.id}", "is refused", "plan artifact", topic,
                     "Decision", "approve or reject the plan shown above", "By", "Who answers", "Comment",
                     "kept in the journal and the postmortem"):
        assert expected in text, (expected, text)
    for judge_field in ("Plan Digest", "Signature", "Proof"):
        assert judge_field not in text, (judge_field, text)
    browser.save_screenshot(str(tmp_path / "prefect-ui-gate-form.png"))


# Last: it ends the shared run.
def test_a_rejected_run_is_not_green_and_waits_for_nobody(waiting):
    view, _, _ = waiting
    rejected = runbook("reject", view.id, "--as", "carol", "--reason", "not now")
    assert rejected.returncode == 0, rejected.stderr
    done = wait_until(view.id, finished)
    flow_run = _flow_run(view.id)
    assert (done.state, flow_run.state.type.value) == ("Rejected", "CANCELLED")
    assert not [tag for tag in flow_run.tags if tag.startswith("waits-for:")]


def test_an_approved_run_logs_a_human_line_per_step_and_its_journal_is_one_ordered_timeline(clusters, browser,
                                                                                            tmp_path):
    _, topic, group = group_at_end(clusters, unique, "uilog")
    started = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true",
                      "--as", "alice", "--json")
    assert started.returncode == 0, started.stderr
    view = wait_until(json.loads(started.stdout)["run_id"], paused, timeout=90)
    approved = runbook("approve", view.id, "--as", "carol", "--comment", "consumers stopped")
    assert approved.returncode == 0, approved.stderr
    done = wait_until(view.id, finished, timeout=90)
    assert done.succeeded, done.message
    snapshot = next(e for e in done.entries if e.kind == "snapshot")
    wanted = ("plan: 1 of 1 partition(s)", "approval: approved by carol: consumers stopped", "snapshot saved: ",
              f"(at {snapshot.data['path']})", "changed: altered 1 partition offset(s)",
              "verified: read back 1 offset(s): all as planned", "outcome: ")
    deadline = time.monotonic() + 20  # the executor's last log lines reach the server a moment after its state
    while True:
        with get_client(sync_client=True) as client:
            logs = [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[UUID(view.id)])), limit=200)]
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
                any_=[UUID(view.id)])))
        missing = [line for line in wanted if not any(line in message for message in logs)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, (missing, logs)
    timelines = [a for a in artifacts if a.key == f"journal-{view.id}"]
    assert timelines and all(a.type == "markdown" for a in timelines)
    latest = max(timelines, key=lambda a: a.created).data
    kinds = [row.split("|")[2].strip() for row in latest.splitlines() if row.startswith("| 20")]
    assert kinds[0] == "parameters" and kinds.index("approval") < kinds.index("snapshot") < kinds.index("outcome")
    stamps = [row.split("|")[1].strip() for row in latest.splitlines() if row.startswith("| 20")]
    assert stamps == sorted(stamps), "oldest first"
    assert len(timelines) == 1, "one timeline, updated in place"

    # In real Chromium, the run's Artifacts tab: the plan's table, the journal's timeline and the
    # postmortem, one card each, and no card of an unknown type (the journal's entries are not on it).
    browser.get(f"{Settings.from_environ().prefect_api_url.removesuffix('/api')}/runs/flow-run/{view.id}")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "li.p-tab#artifacts"))[0].click()
    panel = WebDriverWait(browser, 30).until(lambda d: next(
        (p for p in d.find_elements(By.CSS_SELECTOR, ".flow-run-artifacts") if f"journal-{view.id}" in p.text), None))
    cards = panel.text
    assert "UNKNOWN" not in cards, cards
    for key, kind in ((f"plan-{view.id}", "TABLE"), (f"journal-{view.id}", "MARKDOWN"),
                      (f"postmortem-{view.id.replace('-', '')[:8]}", "MARKDOWN")):
        assert cards.count(key) == 1, (key, cards)
        assert cards.split(key)[0].rstrip().endswith(kind), (key, kind, cards)
    browser.execute_script("arguments[0].scrollIntoView()", panel)
    browser.save_screenshot(str(tmp_path / "prefect-ui-artifacts.png"))


def test_prefect_ui_shows_the_rejected_run_grey_named_and_tagged(waiting, browser, tmp_path):
    """In real Chromium, the Prefect UI's page of the run the previous test rejected."""
    view, _, group = waiting
    assert runs.read_run(view.id).state == "Rejected", "run after test_a_rejected_run_is_not_green_and_waits_for_nobody"
    browser.get(f"{Settings.from_environ().prefect_api_url.removesuffix('/api')}/runs/flow-run/{view.id}")
    badge = WebDriverWait(browser, 30).until(lambda d: next(
        (b for b in d.find_elements(By.CSS_SELECTOR, ".state-badge") if b.text.strip() == "Rejected"), None))
    assert "state--cancelled" in badge.get_attribute("class"), badge.get_attribute("class")
    assert "completed" not in badge.get_attribute("class")
    page = browser.find_element(By.TAG_NAME, "body").text
    for text in (f"kafka-replay primary/{group}", "requested-by:alice"):  # more tags fold into "+1" at 1100 px
        assert text in page, text
    browser.save_screenshot(str(tmp_path / "prefect-ui-rejected-run.png"))
