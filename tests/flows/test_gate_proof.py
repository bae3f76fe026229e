"""RUNBOOK_APPROVAL_PROOF: a team refuses unproven answers (`token`) or takes the CLI's OS user as
who answers (`os-user`); the CLI judges it before it signs the answer, and the gate again inside the
run from the signed kind of proof, by the run's own setting."""
from __future__ import annotations

import getpass
import os
from uuid import UUID

import pytest
from prefect.flow_runs import resume_flow_run

from mq_runbooks.app import runs
from mq_runbooks.kit import journal
from mq_runbooks.kit.gate import sign_answer
from mq_runbooks.kit.identity import issue_token, verify_answer
from mq_runbooks.kit.signing import signing_key
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.flows.test_gate_tokens import TEAMS, deployment  # noqa: F401 (fixture)
from tests.flows.test_kafka_replay import group_at_end, kafka_config  # noqa: F401 (fixtures)


def test_each_setting_takes_the_proofs_it_names(deployment):
    token = issue_token(deployment, "carol")
    for required in ("typed", "os-user", "token"):
        assert verify_answer("CAROL", f"token:{token}", TEAMS, deployment, required=required) == ("carol", None)
        assert verify_answer("U123", "slack", TEAMS, deployment, required=required) == ("U123", None)
    assert verify_answer("Carol", "", TEAMS, deployment, required="typed") == ("carol", None)
    assert verify_answer("DAVE", "os-user", TEAMS, deployment, required="os-user") == ("dave", None)
    who, reason = verify_answer("carol", "", TEAMS, deployment, required="os-user")
    assert who == "carol" and reason.startswith("RUNBOOK_APPROVAL_PROOF=os-user: a typed name is not taken")
    who, reason = verify_answer("dave", "os-user", TEAMS, deployment, required="token")
    assert reason.startswith("RUNBOOK_APPROVAL_PROOF=token: the OS user is not taken") and "--token-file" in reason
    assert verify_answer("carol", "token:rbt_forged", TEAMS, deployment, required="typed")[1].startswith(
        "the token is not valid")


def test_a_team_that_requires_tokens_refuses_typed_names_in_the_run_and_on_the_cli(
        group_at_end, runbook_env, deployment):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_DEPLOYMENT=deployment, RUNBOOK_APPROVAL_PROOF="token")
    env = {"RUNBOOK_DEPLOYMENT": deployment, "RUNBOOK_CATALOG": os.environ["RUNBOOK_CATALOG"],
           "RUNBOOK_APPROVAL_PROOF": "token"}
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)

    # A typed name signed by a judge that takes it (e.g. one configured RUNBOOK_APPROVAL_PROOF=typed): the
    # run itself refuses it, by its own setting.
    view = wait_until(run_id, paused)
    digest = journal.last(view.entries, "approval_requested").data["plan_digest"]
    resume_flow_run(UUID(run_id), run_input=sign_answer(signing_key(settings), run_id, view.pause_key,
                                                        decision="approve", by="carol", proof="typed-name",
                                                        plan_digest=digest, comment=""))
    assert runs.execute_if_local(settings, run_id)  # as the CLI does after an answer
    view = wait_until(run_id, lambda v: paused(v) and journal.last(v.entries, "approval_refused"))
    refusal = journal.last(view.entries, "approval_refused")
    assert "via" not in refusal.data, "refused by the gate in the run, not by the CLI"
    assert refusal.summary.startswith("RUNBOOK_APPROVAL_PROOF=token: a typed name is not taken")
    assert refusal.data["proof"] == "typed-name" and refusal.data["by"] == "carol"

    typed = runbook("approve", run_id, "--as", "carol", env=env)
    assert typed.returncode == 2, typed.stdout + typed.stderr
    assert "RUNBOOK_APPROVAL_PROOF=token" in typed.stderr and "Traceback" not in typed.stderr
    nobody = runbook("approve", run_id, env=env)
    assert nobody.returncode == 2 and "RUNBOOK_APPROVAL_PROOF=token" in nobody.stderr
    view = wait_until(run_id, lambda v: journal.last(v.entries, "approval_refused").data.get("via") == "cli")
    assert paused(view) and journal.last(view.entries, "approval") is None

    token = issue_token(deployment, "carol")
    rejected = runbook("reject", run_id, "--reason", "tested", env={**env, "RUNBOOK_TOKEN": token})
    assert rejected.returncode == 0, rejected.stderr
    view = wait_until(run_id, lambda v: v.finished, timeout=90)
    rejection = journal.last(view.entries, "rejection")
    assert rejection.data["by"] == "carol" and rejection.data["proof"] == "token"


@pytest.mark.skipif(os.geteuid() == 0, reason="root is not a person: the OS user is taken from a non-root user only")
def test_a_team_that_takes_the_os_user_records_it_as_the_proof(group_at_end, runbook_env, tmp_path):
    topic, group = group_at_end
    me = getpass.getuser()
    teams = tmp_path / "teams.yaml"
    teams.write_text(f"kafka-oncall: [{me.upper()}, dave]\n")  # matched case-insensitively
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_APPROVAL_PROOF="os-user", RUNBOOK_TEAMS=str(teams))
    env = {"RUNBOOK_CATALOG": os.environ["RUNBOOK_CATALOG"], "RUNBOOK_APPROVAL_PROOF": "os-user",
           "RUNBOOK_TEAMS": str(teams)}
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)

    other = runbook("approve", run_id, "--as", "dave", env=env)
    assert other.returncode == 2 and f"your OS user {me} answers, not dave" in other.stderr
    approved = runbook("approve", run_id, "--json", env=env)
    assert approved.returncode == 0, approved.stderr
    assert '"proof": "os-user"' in approved.stdout
    view = wait_until(run_id, lambda v: v.finished, timeout=90)
    approval = journal.last(view.entries, "approval")
    assert approval.data["by"] == me.upper() and approval.data["proof"] == "os-user", approval.data
    assert view.succeeded, view.message


@pytest.mark.skipif(os.geteuid() != 0, reason="what root is refused")
def test_root_is_not_a_person_and_logname_proves_nothing(group_at_end, runbook_env, tmp_path, deployment):
    topic, group = group_at_end
    teams = tmp_path / "teams.yaml"
    teams.write_text("kafka-oncall: [root, carol]\n")
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_APPROVAL_PROOF="os-user", RUNBOOK_TEAMS=str(teams),
                                    RUNBOOK_DEPLOYMENT=deployment)
    env = {"RUNBOOK_CATALOG": os.environ["RUNBOOK_CATALOG"], "RUNBOOK_APPROVAL_PROOF": "os-user",
           "RUNBOOK_TEAMS": str(teams), "RUNBOOK_DEPLOYMENT": deployment}
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)
    # The review's attack: as root, LOGNAME=carol was approved "as carol (your OS user)".
    for extra in ({"LOGNAME": "carol", "USER": "carol"}, {}):
        answered = runbook("approve", run_id, env={**env, **extra})
        assert answered.returncode == 2 and "root is not a person" in answered.stderr, answered.stdout + answered.stderr
    started = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true",
                      env={**env, "LOGNAME": "carol"})
    assert started.returncode == 2 and "root is not a person" in started.stderr
    view = runs.read_run(run_id)
    assert paused(view) and journal.last(view.entries, "approval") is None
    runs.answer_gate(settings, catalog, run_id, False, "carol", "cleanup", proof=f"token:{issue_token(deployment, 'carol')}")
