"""`runbook doctor` for the Redis clusters of clusters.yaml: PING, version, role and replicas.

Kept apart from doctor.py (one module per system's check); doctor.run_checks adds these jobs.
"""
from __future__ import annotations

from collections.abc import Callable

from mq_runbooks.base.clusters import Clusters, RedisCluster
from mq_runbooks.app.doctor_check import Check, reason


def check_redis(cluster: RedisCluster, timeout_s: float) -> Check:
    """One Redis server: 'Redis 7.0.15, primary with 1 replica(s)' or 'Redis 7.0.15, replica, link to
    primary up'; unreachable (one line, no password) if it does not answer within `timeout_s`."""
    from mq_runbooks.integrations.redis_streams import RedisStreams

    bounded = cluster.model_copy(update={"socket_timeout_s": min(cluster.socket_timeout_s, timeout_s)})
    component = f"redis {cluster.name}"
    try:
        with RedisStreams.from_cluster(bounded) as streams:
            health = streams.health()
    except Exception as exc:  # the reason is the report
        return Check(component, cluster.display_url, False, reason(exc))
    if health.role == "slave":
        detail = f"Redis {health.version}, replica, link to primary {health.primary_link or 'unknown'}"
    else:
        detail = f"Redis {health.version}, primary with {health.connected_replicas} replica(s)"
    return Check(component, cluster.display_url, True, detail)


def redis_jobs(clusters: Clusters, timeout_s: float) -> list[Callable[[], Check]]:
    """One check per redis cluster, for doctor.run_checks' thread pool."""
    return [lambda c=cluster: check_redis(c, timeout_s) for cluster in clusters.redis.values()]
