"""Choosing an endpoint switch as a runbook parameter (plain Python, shared by the failover runbooks)."""
from __future__ import annotations

from mq_runbooks.base.clusters import Clusters
from mq_runbooks.base.errors import NotFoundError, ParameterError
from mq_runbooks.integrations.switches import EndpointSwitch, switch_named


def open_switch(clusters: Clusters, name: str, runbook: str) -> EndpointSwitch:
    """The endpoint switch `name` of clusters.yaml; ParameterError (field switch) naming the defined ones."""
    try:
        return switch_named(clusters, name)
    except NotFoundError as exc:
        raise ParameterError(runbook, [("switch", str(exc))]) from None
