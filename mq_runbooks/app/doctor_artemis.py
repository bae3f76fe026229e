"""`runbook doctor` for the ActiveMQ Artemis brokers of clusters.yaml: Jolokia, version, HA role and
whether the backup is in sync, and (for an active broker) an AMQP login.

Kept apart from doctor.py (one module per system's check); doctor.run_checks adds these jobs.
"""
from __future__ import annotations

from collections.abc import Callable

from mq_runbooks.base.clusters import ArtemisCluster, Clusters
from mq_runbooks.app.doctor_check import Check, reason


def check_artemis(cluster: ArtemisCluster, timeout_s: float) -> Check:
    """One broker: 'Artemis 2.40.0 (artemis-primary), active, backup in sync; AMQP login ok', or
    'backup, in sync'. A backup not in sync is a problem (a failover would lose messages); so is a
    broker that does not answer (one line, no password)."""
    from mq_runbooks.integrations.artemis import ArtemisManagement
    from mq_runbooks.integrations.artemis_amqp import AmqpSession

    bounded = cluster.model_copy(update={"request_timeout_s": min(cluster.request_timeout_s, timeout_s)})
    component = f"artemis {cluster.name}"
    address = f"{cluster.management_url}, {cluster.messaging_url}"
    try:
        with ArtemisManagement.from_cluster(bounded) as artemis:
            broker = artemis.broker()
        detail = f"Artemis {broker.version} ({broker.name}), {broker.role}"
        if broker.active:
            with AmqpSession.from_cluster(bounded, "mq-runbooks doctor"):
                detail += "; AMQP login ok"
    except Exception as exc:  # the reason is the report
        return Check(component, address, False, reason(exc), status="UNREACHABLE")
    if not broker.active and not broker.replica_sync:
        return Check(component, address, False, detail, status="NOT IN SYNC", data={"role": broker.role})
    return Check(component, address, True, detail, status="reachable", data={"role": broker.role})


def artemis_jobs(clusters: Clusters, timeout_s: float) -> list[Callable[[], Check]]:
    """One check per artemis cluster, for doctor.run_checks' thread pool."""
    return [lambda c=cluster: check_artemis(c, timeout_s) for cluster in clusters.artemis.values()]
