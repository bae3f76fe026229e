"""The one gateway to Prefect: every read and write of flow runs, states, artifacts, variables,
deployments, work pools, automations and concurrency leases goes through here, and the names, tags
and state names they use are defined here once (names.py). The rest of the package never builds a
Prefect client.

    session.py      connect() / Session: the connection, with typed methods from
    flow_runs.py      flow runs, states, task runs, logs, resume
    artifacts.py      artifacts (the journal's entries, plan and timeline)
    leases.py         global concurrency limits and their leases (locks)
    deployments.py    deployments, runs created from them, work pools, workers, automations
    variables.py    Prefect Variables
    names.py        tags, state names, artifact type
"""
from mq_runbooks.kit.gateway.flow_runs import resume_flow_run
from mq_runbooks.kit.gateway.session import Session, connect

__all__ = ["Session", "connect", "resume_flow_run"]
