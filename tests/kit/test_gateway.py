"""The gateway (mq_runbooks/kit/gateway/) against the real Prefect server: its typed filters mean what
the callers take them to mean, a session reads and writes artifacts and states, names parse back."""
from __future__ import annotations

import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Failed, Scheduled

from mq_runbooks.kit import gateway
from mq_runbooks.kit.gateway.names import lock_of, lock_tag, runbook_of, runbook_tag


@flow(name="gateway-test")
def _nothing() -> None:
    pass


@pytest.fixture
def made():
    """(tag, two runs tagged with it: one Scheduled, one Failed named TimedOut, a declined run), deleted
    afterwards. Not tagged mq-runbooks: nobody else's listing of runs sees them."""
    tag = f"gateway-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:  # the test's own view of the server, beside the gateway
        scheduled = client.create_flow_run(_nothing, name=f"{tag}-scheduled", tags=[tag], state=Scheduled())
        timed_out = client.create_flow_run(_nothing, name=f"{tag}-timed-out", tags=[tag],
                                           state=Failed(name="TimedOut", message="nobody answered"))
    yield tag, {"scheduled": str(scheduled.id), "timed-out": str(timed_out.id)}
    with get_client(sync_client=True) as client:
        for run in (scheduled, timed_out):
            client.delete_flow_run(run.id)


def test_state_types_and_state_names_are_either_or_as_runbook_runs_state_means_them(made):
    tag, made = made
    with gateway.connect() as prefect:
        either = {str(run.id) for run in prefect.read_flow_runs(tags=[tag], state_types=["scheduled"],
                                                                 state_names=["TimedOut"])}
        typed = {str(run.id) for run in prefect.read_flow_runs(tags=[tag], state_types=["scheduled"])}
        named = {str(run.id) for run in prefect.read_flow_runs(tags=[tag], state_names=["TimedOut"])}
        every = [str(run.id) for run in prefect.every_flow_run(tags=[tag], page=1)]
        by_name = prefect.read_flow_runs(tags=[tag], names=[f"{tag}-timed-out"])
    assert either == set(made.values())
    assert typed == {made["scheduled"]} and named == {made["timed-out"]}
    assert sorted(every) == sorted(made.values())  # read page by page, one run a page
    assert [str(run.id) for run in by_name] == [made["timed-out"]]


def test_a_session_labels_a_run_and_keeps_an_artifact_per_key_in_place(made):
    tag, runs = made
    run_id = runs["scheduled"]
    key = f"gateway-test-{tag}"
    with gateway.connect() as prefect:
        prefect.update_flow_run(run_id, name=f"{tag} renamed", tags=[tag, runbook_tag("kit-file-switch"), lock_tag("file:/x")])
        prefect.create_artifact(key=key, type="markdown", data="first", description="one", flow_run_id=run_id)
        first = prefect.read_artifacts(keys=[key], flow_run_ids=[run_id], limit=5)
        prefect.update_artifact(first[0].id, data="second", description="two")
        after = prefect.read_artifacts(keys=[key], limit=5)
        flow_run = prefect.read_flow_run(run_id)
    assert flow_run.name == f"{tag} renamed"
    assert runbook_of(flow_run.tags) == "kit-file-switch" and lock_of(flow_run.tags) == "file:/x"
    assert [(a.data, a.description) for a in after] == [("second", "two")]


def test_a_lease_is_taken_renewed_and_released():
    name = f"gateway-test-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4()
    with gateway.connect() as prefect:
        prefect.ensure_limit(name)
        prefect.ensure_limit(name)  # idempotent
        lease = prefect.take_slot(name, run_id, 60)
        prefect.renew_lease(lease, 60)
        prefect.release_lease(lease)
        again = prefect.take_slot(name, run_id, 60)  # the slot is free again
        prefect.release_lease(again)
    assert lease != again
