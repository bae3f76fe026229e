"""The guide's worked example (docs/examples/team-catalog: rabbitmq-queue-limit) as a team would use it:
a team catalog directory of its own YAML and Python (RUNBOOK_TEAM_CATALOG), real runs on the primary
RabbitMQ through plan, gate, act, verify, restore and the postmortem."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mq_runbooks.app import runs, starts
from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.kit import journal
from tests.flows.runbook_harness import finished, kinds, paused, team_catalog_env, wait_until  # noqa: F401
from tests.rabbitmq_messages import publish

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "team-catalog"


def test_the_example_is_at_most_60_lines_of_python():
    code = [line for line in (EXAMPLE / "queue_limit.py").read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]
    assert len(code) <= 60, f"the smallest runbook grew to {len(code)} lines"


@pytest.fixture
def team_env(tmp_path, team_catalog_env, clusters):
    """The guide's example as a team's catalog (a copy, its gate timeout shortened), the shipped one left out."""
    team = tmp_path / "team-catalog"
    shutil.copytree(EXAMPLE, team)
    yaml_path = team / "rabbitmq-queue-limit.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("timeout: 30m", "timeout: 60s"))
    return team_catalog_env(team)


@pytest.fixture
def queue(clusters, unique):
    """A queue on the primary with 5 ready messages; deleted with its policy afterwards."""
    cluster = clusters.rabbit_cluster("primary")
    name = unique("limit")
    publish(cluster.amqp_url.get_secret_value(), name, [f"m{index}" for index in range(5)], persistent=False)
    yield name
    with RabbitManagement.from_cluster(cluster) as rabbit:
        rabbit.send("DELETE", f"/api/policies/%2F/incident-limit-{name}", missing_ok=True)
        rabbit.send("DELETE", f"/api/queues/%2F/{name}", missing_ok=True)


def policy_of(clusters, queue_name):
    with RabbitManagement.from_cluster(clusters.rabbit_cluster("primary")) as rabbit:
        return rabbit.queue("/", queue_name).policy


def policy_exists(clusters, queue_name) -> bool:
    """Whether the policy itself is defined (the queue's own `policy` field follows a moment later)."""
    with RabbitManagement.from_cluster(clusters.rabbit_cluster("primary")) as rabbit:
        return any(p["name"] == f"incident-limit-{queue_name}" for p in rabbit.get_json("/api/policies/%2F"))


def start(settings, catalog, **raw):
    runbook = catalog.get("rabbitmq-queue-limit")
    params = runbook.validate_parameters({"cluster": "primary", **raw})
    runbook.planner(params, load_clusters(settings.clusters))  # the CLI's preflight
    return starts.start_run(settings, runbook, params, requested_by="alice")


def test_plan_gate_act_verify_and_postmortem(team_env, queue, clusters):
    settings, catalog = team_env
    run_id = start(settings, catalog, queue=queue, max_length="3")
    view = wait_until(run_id, paused)
    plan = journal.last(view.entries, "plan")
    assert plan.data["columns"] == ["queue", "ready now", "policy now", "policy after"]
    assert plan.data["rows"][0][0] == queue and plan.data["rows"][0][3] == f"incident-limit-{queue}"
    assert policy_of(clusters, queue) is None, "nothing changes before the approval"

    runs.answer_gate(settings, catalog, run_id, True, "erin", "disk at 90%")
    view = wait_until(run_id, finished)

    assert view.succeeded, view.message
    assert policy_of(clusters, queue) == f"incident-limit-{queue}"
    assert kinds(view)[-3:] == ["verification", "outcome", "postmortem"]
    action = journal.last(view.entries, "action")
    assert action.data["step"] == "put-policy"
    draft = Path(journal.last(view.entries, "postmortem").data["path"])
    assert draft.is_file() and "rabbitmq-queue-limit" in draft.read_text()

    # A second run on the same queue is refused before the gate: the queue is governed by a policy now.
    second = start(settings, catalog, queue=queue, max_length="3")
    view = wait_until(second, finished)
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "refused" and f"incident-limit-{queue}" in outcome.summary
    assert "approval_requested" not in kinds(view)


def test_a_failed_verify_restores_the_snapshot(team_env, queue, clusters, monkeypatch):
    monkeypatch.setenv("RUNBOOK_INJECT_FAULT", "verify")
    settings, catalog = team_env
    run_id = start(settings, catalog, queue=queue, max_length="3")
    wait_until(run_id, paused)
    runs.answer_gate(settings, catalog, run_id, True, "erin", "")
    view = wait_until(run_id, finished)

    assert not view.succeeded
    rollback = journal.last(view.entries, "rollback")
    assert rollback.data["restored"] is True and "deleted" in rollback.summary
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "failed" and outcome.data["changed"] == [f"{queue} capped"]
    assert not policy_exists(clusters, queue), "the restore took the policy away again"


def test_an_unknown_queue_is_refused_before_a_run_exists(team_env, clusters, unique):
    settings, catalog = team_env
    runbook = catalog.get("rabbitmq-queue-limit")
    params = runbook.validate_parameters({"cluster": "primary", "queue": unique("nope"), "max_length": "1"})
    with pytest.raises(ParameterError, match="does not exist"):
        runbook.planner(params, clusters)
