"""The endpoint switch as the RabbitMQ failover runbooks use it, and the canary that proves it.

    switch = open_switch(clusters, "orders-clients", "rabbitmq-failover")
    old = switch.switch(switch.value_for("standby"))
    canary_round_trip(switch.current(), standby_cluster, "/", run_id)

The switch itself (file, HTTP, Consul KV) lives in integrations/switches.py; this module adds what
these runbooks need: the switch's value before a failover (from that run's journal), and a canary
published and consumed through whatever the switch now points at.
"""
from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import pika
import pika.exceptions

from mq_runbooks.base.clusters import Clusters, RabbitCluster
from mq_runbooks.base.errors import BrokerError, ParameterError
from mq_runbooks.kit import journal
from mq_runbooks.flows.switching import open_switch  # noqa: F401 (the rabbitmq failover flows import it from here)
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_amqp import vhost_uri


def value_before_failover(failover_run: str, switch: str, runbook: str) -> str | None:
    """The value `switch` had before the rabbitmq-failover run `failover_run` switched it, from that
    run's journal; ParameterError (field failover_run) saying why when the journal has none."""
    try:
        entries = journal.read(UUID(failover_run))
    except ValueError:
        raise ParameterError(runbook, [("failover_run", f"{failover_run!r} is not a run id")]) from None
    start = journal.last(entries, "parameters")
    if start is None or start.data.get("runbook") != "rabbitmq-failover":
        raise ParameterError(runbook, [("failover_run", f"{failover_run} is not a rabbitmq-failover run")])
    switched = [e for e in entries if e.kind == "action" and e.data.get("step") == "switch"
                and e.data.get("switch") == switch]
    if switched:
        return switched[-1].data["switch_old"]  # exactly the value the switch replaced
    # A failover that stopped before switching: its snapshot holds the value before it started.
    saved = [e for e in entries if e.kind == "snapshot" and e.data.get("switch") == switch]
    if saved:
        return saved[-1].data.get("value")
    outcome = journal.last(entries, "outcome")
    raise ParameterError(runbook, [("failover_run", f"run {failover_run} never got to {switch!r} "
                                                    f"({outcome.summary if outcome else 'no outcome yet'})")])


def amqp_url_for(endpoint: str, destination: RabbitCluster) -> str:
    """The AMQP URL a client reads from the switch's value: an amqp:// URL (credentials of the
    destination added when it has none) or host:port."""
    own = urlsplit(destination.amqp_url.get_secret_value())
    credentials = own.netloc.rpartition("@")[0]
    value = endpoint.strip()
    if "://" not in value:
        value = f"{own.scheme}://{value}/"
    parts = urlsplit(value)
    if parts.scheme not in ("amqp", "amqps"):
        raise BrokerError(f"the switch points at {endpoint!r}, which is not an AMQP endpoint (amqp://... or host:port)")
    if "@" not in parts.netloc and credentials:
        parts = parts._replace(netloc=f"{credentials}@{parts.netloc}")
    return parts.geturl()


def canary_round_trip(endpoint: str | None, destination: RabbitCluster, vhost: str, run_id: str) -> dict[str, Any]:
    """Publish one message through `endpoint` into a private queue and consume it back; BrokerError
    unless it comes back and the endpoint is the destination cluster."""
    if endpoint is None:
        raise BrokerError("the switch holds no endpoint after switching: clients have nothing to connect to")
    url = vhost_uri(amqp_url_for(endpoint, destination), vhost)
    marker = f"canary-{run_id}-{uuid.uuid4().hex[:6]}"
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerError(f"the canary could not connect to {endpoint!r}: {type(exc).__name__}") from None
    try:
        reached = (connection._impl.server_properties or {}).get("cluster_name", b"")
        reached = reached.decode() if isinstance(reached, bytes) else str(reached)
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, marker.encode(), pika.BasicProperties(message_id=marker))
        method, properties, _ = channel.basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    if method is None or properties.message_id != marker:
        raise BrokerError(f"the canary published through {endpoint!r} did not come back")
    with RabbitManagement.from_cluster(destination) as rabbit:
        expected = rabbit.overview().cluster_name
    if reached != expected:
        raise BrokerError(f"the switch points at {endpoint!r}, which reaches cluster {reached!r}, "
                          f"not {destination.name} ({expected!r})")
    return {"endpoint": endpoint, "cluster_name": reached, "message_id": marker}
