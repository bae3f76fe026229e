"""`python -m mq_runbooks.app.executor RUN_ID`: execute one flow run that `runbook run` created.

The flow is found through the catalog (a runbook's flow is named after its id), so only runbooks
the catalog validated can be executed.
"""
from __future__ import annotations

import sys
from uuid import UUID

from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.settings import Settings


def execute(run_id: str) -> int:
    settings = Settings.from_environ()
    settings.apply_to_prefect()
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    catalog = load_catalog(settings.catalog, settings.team_catalog)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(run_id))
        flow_name = client.read_flow(flow_run.flow_id).name
    runbook = catalog.get(flow_name)
    state = run_flow(runbook.flow_function, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(execute(sys.argv[1]))
