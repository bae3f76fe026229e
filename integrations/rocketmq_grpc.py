"""Messaging through the RocketMQ 5.x proxy's gRPC endpoint with Apache RocketMQ's own Python client
(`rocketmq-python-client`): send messages (canaries, tests). Admin requests are in
integrations/rocketmq.py; this module knows nothing of Prefect.

    with GrpcProducer.from_cluster(cluster, topics=["orders"]) as producer:
        receipt_id = producer.send("orders", b"body", keys=["k1"], tag="created")
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mq_runbooks.base.errors import ConfigError, UnreachableError

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import RocketMQCluster

__all__ = ["GrpcProducer"]


class GrpcProducer:
    """A started `rocketmq.Producer` of the cluster's proxy (use it in a `with`; it starts on enter)."""

    def __init__(self, endpoint: str, topics: list[str], access_key: str | None = None,
                 secret_key: str | None = None, tls: bool = False, timeout_s: float = 10.0):
        from rocketmq import ClientConfiguration, Credentials, Producer  # a heavy import: only where messaging is used

        configuration = ClientConfiguration(endpoint, Credentials(access_key or "", secret_key or ""),
                                            request_timeout=max(1, round(timeout_s)))  # it needs an int
        self._producer = Producer(configuration, tuple(topics), tls_enable=tls)
        self.endpoint = endpoint

    @classmethod
    def from_cluster(cls, cluster: RocketMQCluster, topics: list[str]) -> "GrpcProducer":
        if cluster.proxy_endpoint is None:
            raise ConfigError(f"rocketmq cluster {cluster.name!r} has no proxy_endpoint in clusters.yaml")
        secret = cluster.secret_key.get_secret_value() if cluster.secret_key else None
        return cls(cluster.proxy_endpoint, topics, cluster.access_key, secret, cluster.tls, cluster.request_timeout_s)

    def __enter__(self) -> "GrpcProducer":
        try:
            self._producer.startup()
        except Exception as exc:  # the client raises its own exception types for every failure
            raise UnreachableError(f"the RocketMQ proxy at {self.endpoint} does not answer ({exc})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._producer.shutdown()

    def send(self, topic: str, body: bytes, keys: list[str] | None = None, tag: str | None = None,
             properties: dict[str, str] | None = None) -> str:
        """Send one message; its message id (the UNIQ_KEY the brokers store)."""
        from rocketmq import Message

        message = Message()
        message.topic = topic
        message.body = body
        for key in keys or ():
            message.keys = key  # the setter adds one key at a time
        if tag:
            message.tag = tag
        for name, value in (properties or {}).items():
            message.add_property(name, value)
        return self._producer.send(message).message_id
