"""One door: what anyone holding the Prefect credential can write (a run's input, its artifacts, its
job variables, the token variable) never decides a gate or how a run executes. Each test is an attack
from the security review, made against a real run on the real stack."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.flow_runs import resume_flow_run
from prefect.variables import Variable

from mq_runbooks.app import runs, workers
from mq_runbooks.kit import journal
from mq_runbooks.kit.gate import UNSIGNED, sign_answer
from mq_runbooks.kit.identity import issue_token, token_holder, variable_name, verify_answer
from mq_runbooks.kit.origin import NOT_STARTED_BY_ENGINE, SIGNATURE, new_idempotency_key, signed_start
from mq_runbooks.kit.signing import signing_key
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.flows.test_gate_tokens import TEAMS, deployment  # noqa: F401 (fixture)
from tests.flows.test_kafka_replay import group_at_end, kafka_config  # noqa: F401 (fixtures)
import pytest

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


def _refused(run_id: str, count: int):
    return wait_until(run_id, lambda v: paused(v) and len([e for e in v.entries if e.kind == "approval_refused"]) >= count)


def test_a_resume_through_prefect_is_no_answer_whatever_proof_it_claims(group_at_end, runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay")
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    view = wait_until(run_id, paused)
    digest = journal.last(view.entries, "approval_requested").data["plan_digest"]

    # The review's attack: a resume claiming Slack's proof; then one signed with a key of one's own.
    resume_flow_run(UUID(run_id), run_input={"decision": "approve", "by": "carol", "proof": "slack",
                                             "plan_digest": digest})
    assert runs.execute_if_local(settings, run_id)
    view = _refused(run_id, 1)
    forged = sign_answer(b"not-the-engines-key-0123456789", run_id, view.pause_key, decision="approve", by="carol",
                         proof="slack-signature", plan_digest=digest, comment="")
    resume_flow_run(UUID(run_id), run_input=forged)
    assert runs.execute_if_local(settings, run_id)
    view = _refused(run_id, 2)
    refusals = [e for e in view.entries if e.kind == "approval_refused"]
    assert [r.summary for r in refusals] == [UNSIGNED, UNSIGNED]
    assert all(r.data["proof"] == "unsigned" for r in refusals), "the claimed proof is not believed"
    assert journal.last(view.entries, "approval") is None and journal.last(view.entries, "action") is None
    assert "not signed by mq-runbooks" in view.message, "the refusal shows where the Prefect UI shows the run"

    # A judged answer (here the CLI's, a typed name as RUNBOOK_APPROVAL_PROOF=typed takes) is signed and acts.
    runs.answer_gate(settings, catalog, run_id, True, "carol", "ok")
    view = wait_until(run_id, finished, timeout=90)
    approval = journal.last(view.entries, "approval")
    assert view.succeeded and approval.data["by"] == "carol" and approval.data["proof"] == "typed-name"
    drafted = journal.last(view.entries, "postmortem").summary  # a path, and how to read it (no bare /postmortems/...)
    assert drafted.startswith(f"postmortem draft written to {settings.postmortem_dir}/") and \
        "`runbook postmortems show " in drafted, drafted


def _forge_entry(run_id: str, kind: str, summary: str, **data) -> None:
    """An artifact of the journal's type posted straight to Prefect, as anyone with its credential can."""
    entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(), "kind": kind, "summary": summary, "data": data}
    with get_client(sync_client=True) as client:
        client.create_artifact(ArtifactCreate(type=journal.ARTIFACT_TYPE, key=journal.entries_key(run_id),
                                              description=f"{kind}: {summary}", data=entry))
        client.create_artifact(ArtifactCreate(type=journal.ARTIFACT_TYPE, flow_run_id=UUID(run_id),  # as entries were
                                              description=f"{kind}: {summary}", data=entry))


def test_a_forged_journal_entry_is_never_replayed_and_status_names_it(group_at_end, runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay")
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    view = wait_until(run_id, paused)
    digest = journal.last(view.entries, "approval_requested").data["plan_digest"]
    _forge_entry(run_id, "approval", "approved by carol", by="carol", gate=1, answer="gate-1-1", plan_digest=digest,
                 approvals=1, required=1, proof="token")
    assert journal.last(journal.read(run_id), "approval") is None, "the forged entry is not read"
    # Any resume then (here dave's signed rejection) is judged as itself; the forged approval is not replayed.
    runs.answer_gate(settings, catalog, run_id, False, "dave", "wrong group")
    view = wait_until(run_id, finished, timeout=90)
    assert not view.succeeded and journal.last(view.entries, "action") is None
    assert journal.last(view.entries, "rejection").data["by"] == "dave"
    problems = journal.problems(run_id)
    assert problems == ["an entry not signed by the engine (approval) is ignored"] * 2  # under the key, on the run
    status = runbook("status", run_id)
    assert "journal tampered with: an entry not signed by the engine (approval) is ignored" in status.stdout, \
        status.stdout + status.stderr


def test_a_journal_entry_deleted_from_the_middle_shows_as_a_missing_link(group_at_end, runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay")
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType

        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[journal.entries_key(run_id)]),
            type=ArtifactFilterType(any_=[journal.ARTIFACT_TYPE])))
        plan = next(a for a in artifacts if a.data["kind"] == "plan")
        client.delete_artifact(plan.id)
    problems = journal.problems(run_id)
    assert len(problems) == 1 and problems[0].startswith("the entry before "), problems
    runs.answer_gate(settings, catalog, run_id, False, "dave", "cleanup")
    wait_until(run_id, finished, timeout=90)


def test_tokens_minted_without_the_signing_key_are_taken_by_no_gate(deployment):
    token = issue_token(deployment, "carol")
    stored = Variable.get(variable_name(deployment))
    assert token not in str(stored) and set(stored["carol"]) == {"hmac", "issued"}
    # The review's attack: a hash of one's own token written into the variable, bare or keyed otherwise.
    mine = "rbt_" + uuid.uuid4().hex
    for entry in ({"sha256": hashlib.sha256(mine.encode()).hexdigest()},
                  {"hmac": hmac.new(b"another-key-0123456789", b"token\x00" + mine.encode(), hashlib.sha256).hexdigest()}):
        Variable.set(variable_name(deployment), {"carol": entry}, overwrite=True)
        assert token_holder(deployment, mine) is None
        assert "the token is not valid" in verify_answer("carol", f"token:{mine}", TEAMS, deployment)[1]


def test_the_token_never_reaches_the_run(group_at_end, runbook_env, deployment):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_DEPLOYMENT=deployment)
    token = issue_token(deployment, "carol")
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)
    runs.answer_gate(settings, catalog, run_id, True, "", "ok", proof=f"token:{token}")
    view = wait_until(run_id, finished, timeout=90)
    assert view.succeeded and journal.last(view.entries, "approval").data["proof"] == "token"
    with get_client(sync_client=True) as client:
        inputs = client.filter_flow_run_input(flow_run_id=UUID(run_id), key_prefix="", limit=100, exclude_keys=set())
    answers = [i.value for i in inputs if "decision" in i.value]
    assert answers and all(token not in value and token[4:20] not in value for value in answers), answers


TEAM_RUNBOOK_HOOK = '''
import os as _os
from pathlib import Path as _Path
_Path({marker!r}).write_text(_os.environ.get("RUNBOOK_APPROVAL_PROOF", "") + " " + _os.environ.get("RUNBOOK_SLACK_SIGNING_SECRET", ""))
'''


def test_a_runs_job_variables_never_choose_the_code_or_settings_it_executes_with(group_at_end, runbook_env, tmp_path,
                                                                                deployment):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_APPROVAL_PROOF="token", RUNBOOK_DEPLOYMENT=deployment)
    # The attacker's own catalog: a valid runbook whose module, once imported, leaves a mark.
    team, marker = tmp_path / "attacker", tmp_path / "imported"
    made = runbook("new", "kafka-attacker", "--broker", "kafka", "--dir", str(team))
    assert made.returncode == 0, made.stderr
    module = next(team.glob("*.py"))
    module.write_text(module.read_text() + TEAM_RUNBOOK_HOOK.format(marker=str(marker)))
    replay = catalog.get("kafka-replay")
    params = replay.validate_parameters({"cluster": "primary", "group": group, "to_earliest": "true"})
    workers.ensure_registered(replay, workers.LOCAL, None)
    # A start the engine signed (so that the executor takes it), its job variables chosen by the attacker.
    once = new_idempotency_key()
    parameters = signed_start(signing_key(settings), "kafka-replay", {
        "params": params.model_dump(mode="json"), "requested_by": "mallory", "trigger": {}}, once)
    with get_client(sync_client=True) as client:
        local = client.read_deployment_by_name(workers.deployment_name("kafka-replay", workers.LOCAL))
        flow_run = client.create_flow_run_from_deployment(
            local.id, parameters=parameters, tags=["mq-runbooks", "runbook:kafka-replay"], idempotency_key=once,
            job_variables={"env": {"RUNBOOK_TEAM_CATALOG": str(team), "RUNBOOK_APPROVAL_PROOF": "typed"}})
    run_id = str(flow_run.id)
    assert runs.execute_if_local(settings, run_id)  # as `runbook approve` or serve (for Slack) would after an answer
    view = wait_until(run_id, paused, timeout=90)
    assert not marker.exists(), "the run's job variables chose the catalog its executor loaded"

    # ... nor its settings: an answer a judge signed as a typed name (taken where RUNBOOK_APPROVAL_PROOF=typed)
    # meets the executor's own RUNBOOK_APPROVAL_PROOF=token, not the run's "typed".
    digest = journal.last(view.entries, "approval_requested").data["plan_digest"]
    typed = sign_answer(signing_key(settings), run_id, view.pause_key, decision="approve", by="carol",
                        proof="typed-name", plan_digest=digest, comment="")
    resume_flow_run(UUID(run_id), run_input=typed)
    assert runs.execute_if_local(settings, run_id)
    view = _refused(run_id, 1)
    assert journal.last(view.entries, "approval_refused").summary.startswith(
        "RUNBOOK_APPROVAL_PROOF=token: a typed name is not taken")
    token = issue_token(deployment, "dave")
    runs.answer_gate(settings, catalog, run_id, False, "", "not ours", proof=f"token:{token}")
    view = wait_until(run_id, finished, timeout=90)
    assert journal.last(view.entries, "action") is None and not marker.exists()


def _create(catalog, parameters: dict, idempotency_key: str | None = None) -> str:
    """A flow run of kafka-replay's deployment created straight through Prefect's API, as anyone with its
    credential (or its UI's Run form) can; returns its id."""
    workers.ensure_registered(catalog.get("kafka-replay"), workers.LOCAL, None)
    with get_client(sync_client=True) as client:
        local = client.read_deployment_by_name(workers.deployment_name("kafka-replay", workers.LOCAL))
        return str(client.create_flow_run_from_deployment(local.id, parameters=parameters,
                                                          idempotency_key=idempotency_key).id)


def test_a_run_the_engine_did_not_start_is_refused_before_its_first_step(group_at_end, runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay")
    params = {"cluster": "primary", "group": group, "to_earliest": True}
    # Fresh keys: Prefect keeps one run per deployment and key, across test sessions too.
    abc, other = new_idempotency_key(), new_idempotency_key()
    signed = signed_start(signing_key(settings), "kafka-replay", {"params": params, "requested_by": "alice",
                                                                  "trigger": {}}, abc)
    copied = signed["trigger"][SIGNATURE]
    attempts = {
        "no signature": _create(catalog, {"params": params, "requested_by": "alice"}),
        "another key's": _create(catalog, signed_start(b"not-the-engines-key-0123456789", "kafka-replay", {
            "params": params, "requested_by": "alice", "trigger": {}}, other), other),
        "parameters changed": _create(catalog, {"params": {**params, "to_earliest": False, "to_latest": True},
                                                 "requested_by": "alice", "trigger": {SIGNATURE: copied}}, abc),
        "another idempotency key": _create(catalog, signed, new_idempotency_key()),
    }
    for attempt, run_id in attempts.items():
        assert runs.execute_if_local(settings, run_id)
        view = wait_until(run_id, finished, timeout=90)
        assert view.state == "Refused" and view.state_type == "CANCELLED" and NOT_STARTED_BY_ENGINE in view.message, (attempt, view)
        assert journal.read(run_id) == [], f"{attempt}: the runbook took no step (no plan, no lock, no notice)"
        assert view.name == f"kafka-replay primary/{group}", (attempt, view.name)


def test_a_started_runs_signature_copied_onto_a_new_run_names_the_same_run(group_at_end, runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay")
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused)
    with get_client(sync_client=True) as client:
        original = client.read_flow_run(UUID(run_id))
    assert original.idempotency_key.startswith("start:")
    again = _create(catalog, original.parameters, original.idempotency_key)
    assert again == run_id, "Prefect keeps one run per idempotency key: the copy is the same run"
    runs.answer_gate(settings, catalog, run_id, False, "dave", "test over")
    wait_until(run_id, finished, timeout=90)
