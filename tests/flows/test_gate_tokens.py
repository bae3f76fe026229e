"""Personal tokens prove who answers a gate: issued and revoked with `runbook tokens`, stored hashed
as a Prefect Variable, sent by `runbook approve|reject --token` (or RUNBOOK_TOKEN), and checked by the
gate inside the run, so an answer sent straight to Prefect (as the UI's resume dialog sends it) is
judged the same way."""
from __future__ import annotations

import os
import uuid
from uuid import UUID

import pytest
from prefect.flow_runs import resume_flow_run
from prefect.variables import Variable

from mq_runbooks.app import runs
from mq_runbooks.kit import journal
from mq_runbooks.kit.identity import issue_token, variable_name, verify_answer
from tests.engine.test_cli import runbook
from tests.flows.runbook_harness import paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.flows.test_kafka_replay import group_at_end, kafka_config  # noqa: F401 (fixtures)

TEAMS = {"kafka-oncall": ["carol", "dave"]}


@pytest.fixture
def deployment():
    name = f"tokens-{uuid.uuid4().hex[:8]}"
    yield name
    Variable.unset(variable_name(name))


def test_verify_answer_takes_the_token_holder_and_matches_names_case_insensitively(deployment):
    token = issue_token(deployment, "carol")
    assert verify_answer("Carol", "", TEAMS, deployment) == ("carol", None)
    assert verify_answer("", f"token:{token}", TEAMS, deployment) == ("carol", None)
    assert verify_answer("CAROL", f"token:{token}", TEAMS, deployment) == ("carol", None)
    assert verify_answer("dave", f"token:{token}", TEAMS, deployment)[1] == "the token belongs to carol, not dave"
    assert "the token is not valid" in verify_answer("carol", "token:rbt_forged", TEAMS, deployment)[1]
    stored = Variable.get(variable_name(deployment))
    assert token not in str(stored) and set(stored) == {"carol"} and len(stored["carol"]["sha256"]) == 64


def test_the_gate_checks_the_token_in_the_run_and_the_cli_sends_it(group_at_end, runbook_env, deployment):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_DEPLOYMENT=deployment)
    env = {"RUNBOOK_DEPLOYMENT": deployment, "RUNBOOK_CATALOG": os.environ["RUNBOOK_CATALOG"]}
    issued = runbook("tokens", "issue", "carol", env=env)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("rbt_") and "carol" in runbook("tokens", "list", env=env).stdout

    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)
    # Straight to Prefect, past the CLI's own check: the run refuses the forged token and waits on.
    resume_flow_run(UUID(run_id), run_input={"decision": "approve", "by": "carol", "proof": "token:rbt_forged"})
    assert runs.execute_if_local(settings, run_id)  # what serve's sweep does for an answer from the Prefect UI
    view = wait_until(run_id, lambda v: paused(v) and journal.last(v.entries, "approval_refused"))
    refusal = journal.last(view.entries, "approval_refused")
    assert "the token is not valid" in refusal.summary and refusal.data["proof"] == "token"
    # The refusal is visible where the Prefect UI shows the run: its state message (and its logs).
    assert view.state == "Suspended" and "refused carol's answer: the token is not valid" in view.message

    someone_else = runbook("approve", run_id, "--as", "dave", "--token", token, env=env)
    assert someone_else.returncode == 2 and "the token belongs to carol, not dave" in someone_else.stderr
    approved = runbook("approve", run_id, "--comment", "ok", env={**env, "RUNBOOK_TOKEN": token})
    assert approved.returncode == 0, approved.stderr
    assert "with your token" in approved.stdout
    view = wait_until(run_id, lambda v: v.finished, timeout=90)
    approval = journal.last(view.entries, "approval")
    assert approval.data["by"] == "carol" and approval.data["proof"] == "token" and view.succeeded, view.message

    revoked = runbook("tokens", "revoke", "carol", env=env)
    assert revoked.returncode == 0 and "carol" not in runbook("tokens", "list", "--json", env=env).stdout
    assert "the token is not valid" in verify_answer("carol", f"token:{token}", TEAMS, deployment)[1]
