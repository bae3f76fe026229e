"""`runbook doctor`: can the engine reach every configured cluster, the Prefect API and Slack?

Each check runs in its own thread with a bounded timeout, so one dead cluster costs its timeout
once, not once per cluster. A check never raises: it reports reachable or not, with the reason.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from mq_runbooks.app.doctor_redis import redis_jobs
from mq_runbooks.base.clusters import Clusters, KafkaCluster, RabbitCluster
from mq_runbooks.base.settings import Settings


@dataclass(frozen=True)
class Check:
    component: str  # e.g. "kafka primary"
    address: str
    ok: bool
    detail: str  # what was seen, or why it failed
    required: bool = True


def check_kafka(cluster: KafkaCluster, timeout_s: float) -> Check:
    from mq_runbooks.integrations.kafka import KafkaClient

    address = cluster.bootstrap_servers
    try:
        with KafkaClient(cluster.client_config(), name=cluster.name, timeout_s=timeout_s) as kafka:
            description = kafka.describe_cluster()
        detail = f"cluster id {description.cluster_id}, {len(description.brokers)} broker(s)"
        return Check(f"kafka {cluster.name}", address, True, detail)
    except Exception as exc:  # the reason is the report
        return Check(f"kafka {cluster.name}", address, False, _reason(exc))


def check_rabbitmq(cluster: RabbitCluster, timeout_s: float) -> Check:
    from mq_runbooks.integrations.rabbitmq import RabbitManagement, amqp_check

    address = f"{cluster.display_amqp_url}, {cluster.management_url}"
    username, password = cluster.management_credentials()
    try:
        with RabbitManagement(cluster.management_url, username, password, name=cluster.name,
                              timeout_s=timeout_s) as management:
            overview = management.overview()
        server = amqp_check(cluster.amqp_url.get_secret_value(), timeout_s=timeout_s)
        detail = f"RabbitMQ {overview.rabbitmq_version} on {overview.node}; AMQP: {server}"
        return Check(f"rabbitmq {cluster.name}", address, True, detail)
    except Exception as exc:
        return Check(f"rabbitmq {cluster.name}", address, False, _reason(exc))


def check_prefect(api_url: str, timeout_s: float) -> Check:
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s)
        if response.status_code == 200:
            version = httpx.get(f"{api_url.rstrip('/')}/admin/version", timeout=timeout_s).json()
            return Check("prefect", api_url, True, f"server {version}")
        return Check("prefect", api_url, False, f"/health answered HTTP {response.status_code}")
    except httpx.HTTPError as exc:
        return Check("prefect", api_url, False, _reason(exc))


def check_slack(settings: Settings, timeout_s: float) -> Check | None:
    if settings.slack_bot_token is None:
        return None
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                       timeout=int(max(1, timeout_s)))
    try:
        answer = client.auth_test()
        return Check("slack", settings.slack_api_url, True, f"team {answer.get('team')}, bot {answer.get('user')}")
    except SlackApiError as exc:
        return Check("slack", settings.slack_api_url, False, f"Slack refused: {exc.response.get('error')}")
    except Exception as exc:
        return Check("slack", settings.slack_api_url, False, _reason(exc))


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) < 400 else text[:400] + "..."


def run_checks(settings: Settings, clusters: Clusters, timeout_s: float = 5.0) -> list[Check]:
    """Every check, concurrently; results in a stable order (Prefect, Kafka, RabbitMQ, Redis, Slack)."""
    jobs: list[Callable[[], Check | None]] = [lambda: check_prefect(settings.prefect_api_url, timeout_s)]
    jobs += [lambda c=cluster: check_kafka(c, timeout_s) for cluster in clusters.kafka.values()]
    jobs += [lambda c=cluster: check_rabbitmq(c, timeout_s) for cluster in clusters.rabbitmq.values()]
    jobs += redis_jobs(clusters, timeout_s)
    jobs.append(lambda: check_slack(settings, timeout_s))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    return [check for check in results if check is not None]
