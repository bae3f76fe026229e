"""The artifacts a run shows in Prefect's UI (kit/run_artifacts.py), against the stack's Prefect server."""
from __future__ import annotations

import json

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from mq_runbooks.kit.run_artifacts import PLAN_TABLE_ROWS, plan_key, publish_plan


@flow(name="test-run-artifacts")
def _a_flow() -> None:
    pass


def _latest(key: str):
    with get_client(sync_client=True) as client:
        [artifact] = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return artifact


def test_a_big_plan_shows_its_first_rows_and_says_where_the_rest_is():
    with get_client(sync_client=True) as client:
        run_id = str(client.create_flow_run(_a_flow).id)
    columns = ["consumer", "entry id", "action"]
    rows = [["billing-dead", f"1796677452537-{i}", "claim to billing-healthy"] for i in range(PLAN_TABLE_ROWS + 4000)]
    publish_plan(run_id, "5,000 stuck entries to claim", columns, rows)
    artifact = _latest(plan_key(run_id))
    table = json.loads(artifact.data)
    assert len(table) == PLAN_TABLE_ROWS and table[0] == {"consumer": "billing-dead", "entry id": "1796677452537-0",
                                                          "action": "claim to billing-healthy"}
    assert f"The first {PLAN_TABLE_ROWS:,} of {PLAN_TABLE_ROWS + 4000:,} rows: `runbook status {run_id} --plan`" \
        in artifact.description

    publish_plan(run_id, "3 stuck entries to claim", columns, rows[:3])  # a new version, whole
    artifact = _latest(plan_key(run_id))
    assert len(json.loads(artifact.data)) == 3 and "The first" not in artifact.description
