"""Execute one flow run of a runbook: `python -m mq_runbooks.app.executor RUN_ID` (a run of this
machine: `runbook run`, or one whose gate was answered) or, from a worker of the pool, with the run
in PREFECT__FLOW_RUN_ID (the pool's command; the worker has claimed it already).

The flow is found through the catalog (a runbook's flow is named after its id), so only runbooks
the catalog validated can be executed. A run that suspends at its gate leaves this process (exit 0);
it is executed again when answered.
"""
from __future__ import annotations

import os
import sys
from uuid import UUID

from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.settings import Settings


def execute(run_id: str, claim: bool) -> int:
    settings = Settings.from_environ()
    settings.apply_to_prefect()
    from prefect.client.orchestration import get_client
    from prefect.context import refresh_global_settings_context
    from prefect.exceptions import Pause
    from prefect.flow_engine import run_flow

    from mq_runbooks.app.workers import claim as claim_run

    refresh_global_settings_context()  # a forked run's Prefect read its settings in the preloaded starter
    if claim and not claim_run(run_id):
        print(f"run {run_id} is executed elsewhere (or no longer waits to be): nothing to do")
        return 0
    catalog = load_catalog(settings.catalog, settings.team_catalog)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(run_id))
        flow_name = client.read_flow(flow_run.flow_id).name
    runbook = catalog.get(flow_name)
    try:
        state = run_flow(runbook.flow_function, flow_run=flow_run, parameters=flow_run.parameters,
                         return_type="state")
    except Pause:
        print(f"run {run_id} waits at its gate with no process; it goes on when answered")
        return 0
    return 0 if state.is_completed() or state.is_paused() else 1


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return execute(argv[1], claim=True)
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        print("usage: python -m mq_runbooks.app.executor RUN_ID (or PREFECT__FLOW_RUN_ID set by a worker)",
              file=sys.stderr)
        return 2
    return execute(run_id, claim=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
