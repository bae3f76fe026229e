"""Personal tokens prove who answers a gate: issued and revoked with `runbook tokens` (with the signing
key), stored as HMACs in a Prefect Variable, sent by `runbook approve|reject` from RUNBOOK_TOKEN (or a 0600
--token-file), checked by the judge of the answer, which signs it; an answer sent straight to Prefect
(as the UI's resume dialog sends it) is not signed, and the run refuses it."""
from __future__ import annotations

import os
import uuid
from uuid import UUID

import pytest
from prefect.flow_runs import resume_flow_run
from prefect.variables import Variable

from mq_runbooks.app import runs
from mq_runbooks.kit import journal
from mq_runbooks.kit.gate import UNSIGNED
from mq_runbooks.kit.identity import issue_token, variable_name, verify_answer
from tests.app.test_cli import runbook
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
    assert token not in str(stored) and set(stored) == {"carol"} and len(stored["carol"]["hmac"]) == 64


def test_the_gate_checks_the_token_in_the_run_and_the_cli_sends_it(group_at_end, runbook_env, deployment,
                                                                   tmp_path):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_DEPLOYMENT=deployment)
    env = {"RUNBOOK_DEPLOYMENT": deployment, "RUNBOOK_CATALOG": os.environ["RUNBOOK_CATALOG"]}
    issued = runbook("tokens", "issue", "carol", env=env)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("rbt_") and "carol" in runbook("tokens", "list", env=env).stdout

    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)
    # Straight to Prefect, past the CLI's own check: the run refuses the unsigned answer and waits on.
    resume_flow_run(UUID(run_id), run_input={"decision": "approve", "by": "carol", "proof": "token:rbt_forged"})
    assert runs.execute_if_local(settings, run_id)  # as the CLI does after an answer
    view = wait_until(run_id, lambda v: paused(v) and journal.last(v.entries, "approval_refused"))
    refusal = journal.last(view.entries, "approval_refused")
    assert refusal.summary == UNSIGNED and refusal.data["proof"] == "unsigned"
    # The refusal is visible where the Prefect UI shows the run: its state message (and its logs).
    assert view.state == "Suspended" and "refused carol's answer: the answer is not signed" in view.message

    in_argv = runbook("approve", run_id, "--as", "carol", "--token", token, env=env)
    assert in_argv.returncode == 2 and "No such option '--token'" in in_argv.stderr, "never a token in `ps`"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o644)
    readable = runbook("approve", run_id, "--token-file", str(token_file), env=env)
    assert readable.returncode == 2 and "may be read by others" in readable.stderr
    token_file.chmod(0o600)
    someone_else = runbook("approve", run_id, "--as", "dave", "--token-file", str(token_file), env=env)
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
