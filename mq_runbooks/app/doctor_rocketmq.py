"""`runbook doctor` for the RocketMQ clusters of clusters.yaml: the name server, each broker it routes
to (its version, from its runtime info) and the proxy's gRPC port.

Kept apart from doctor.py (one module per system's check); doctor.run_checks adds these jobs.
"""
from __future__ import annotations

import socket
from collections.abc import Callable

from mq_runbooks.app.doctor_check import Check, reason
from mq_runbooks.base.clusters import Clusters, RocketMQCluster


def check_rocketmq(cluster: RocketMQCluster, timeout_s: float) -> Check:
    """One cluster: 'broker-a V5_3_3 at 127.0.0.1:10911; proxy 127.0.0.1:8081 answers', or one line of why not
    (no secret in it)."""
    from mq_runbooks.integrations.rocketmq import RocketMQAdmin

    bounded = cluster.model_copy(update={"request_timeout_s": min(cluster.request_timeout_s, timeout_s)})
    component = f"rocketmq {cluster.name}"
    address = cluster.namesrv + (f", proxy {cluster.proxy_endpoint}" if cluster.proxy_endpoint else "")
    try:
        with RocketMQAdmin.from_cluster(bounded) as admin:
            brokers = admin.brokers()
            if not brokers:
                return Check(component, address, False, "the name server knows no broker", status="NO BROKER")
            detail = "; ".join(f"{name} {admin.broker_version(name)} at {addr}" for name, addr in sorted(brokers.items()))
        if cluster.proxy_endpoint:
            host, _, port = cluster.proxy_endpoint.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=bounded.request_timeout_s):
                detail += f"; proxy {cluster.proxy_endpoint} answers"
    except Exception as exc:  # the reason is the report
        return Check(component, address, False, reason(exc), status="UNREACHABLE")
    return Check(component, address, True, detail, status="reachable", data={"brokers": sorted(brokers)})


def rocketmq_jobs(clusters: Clusters, timeout_s: float) -> list[Callable[[], Check]]:
    """One check per rocketmq cluster, for doctor.run_checks' thread pool."""
    return [lambda c=cluster: check_rocketmq(c, timeout_s) for cluster in clusters.rocketmq.values()]
