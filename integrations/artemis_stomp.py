"""Messaging with ActiveMQ Artemis over STOMP 1.2 (`stomp.py`), for canaries and tests.

    with StompSession.from_cluster(cluster, "mq-runbooks canary") as stomp:
        stomp.send("orders", "hello", {"msg_id": "m-1"})
        received = stomp.receive("orders", count=1, timeout_s=5)    # [Received(...)]

Why STOMP and `stomp.py` rather than AMQP 1.0 and `python-qpid-proton`: stomp.py is pure Python
(no C extension to build on every machine and Python version), its blocking API fits the engine's
synchronous integrations, and STOMP maps one-to-one on what the runbooks and tests need: send to an
anycast queue with string properties (Artemis keeps STOMP headers as message properties, so
filters and `_AMQ_ORIG_QUEUE` work on them), subscribe with a selector, ack each message. Artemis'
default acceptor speaks STOMP beside CORE and AMQP, so no extra port is needed. AMQP's extras
(transactions, flow-control credits, typed bodies) are not used here.

Every call raises UnreachableError when the broker does not answer and BrokerError when it refuses
the login; messages never contain the password.
"""
from __future__ import annotations

import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import stomp
import stomp.exception

from mq_runbooks.base.errors import BrokerError, UnreachableError

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import ArtemisCluster

__all__ = ["Received", "StompSession"]


@dataclass(frozen=True, slots=True)
class Received:
    body: str
    headers: dict[str, str]


class _Inbox(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.errors: list[str] = []
        self.arrived = threading.Condition()

    def on_message(self, frame) -> None:
        with self.arrived:
            self.messages.append(Received(frame.body if isinstance(frame.body, str) else frame.body.decode(),
                                          dict(frame.headers)))
            self.arrived.notify_all()

    def on_error(self, frame) -> None:
        self.errors.append(frame.headers.get("message", "") or str(frame.body)[:200])


class StompSession:
    """One STOMP connection to an Artemis acceptor (use it as a context manager)."""

    def __init__(self, host: str, port: int, user: str, password: str, *, name: str = "mq-runbooks",
                 tls: bool = False, ca_location: str | None = None, timeout_s: float = 10.0):
        self.where = f"artemis at {host}:{port} (STOMP)"
        self.timeout_s = timeout_s
        self._inbox = _Inbox()
        self._connection = stomp.Connection12([(host, port)], heartbeats=(0, 0), timeout=timeout_s,
                                              reconnect_attempts_max=1, auto_content_length=True)
        if tls:
            self._connection.set_ssl([(host, port)], ca_certs=ca_location, ssl_version=ssl.PROTOCOL_TLS_CLIENT)
        self._connection.set_listener("inbox", self._inbox)
        try:
            self._connection.connect(user, password, wait=True, headers={"client-id": f"{name}-{uuid.uuid4().hex[:8]}"})
        except stomp.exception.ConnectFailedException:
            detail = "; ".join(self._inbox.errors)
            if detail:
                raise BrokerError(f"{self.where} refused the connection: {detail}") from None
            raise UnreachableError(f"{self.where} did not answer within {timeout_s:g}s") from None
        if self._inbox.errors:
            raise BrokerError(f"{self.where} refused the connection: {'; '.join(self._inbox.errors)}")

    @classmethod
    def from_cluster(cls, cluster: ArtemisCluster, name: str = "mq-runbooks", timeout_s: float | None = None,
                     endpoint: str | None = None) -> StompSession:
        """A session to the cluster's STOMP acceptor (or to `endpoint`, host:port, e.g. a switched one)."""
        host, port, tls = cluster.messaging_address
        if endpoint:
            host, _, raw_port = endpoint.rpartition(":")
            port = int(raw_port)
        return cls(host, port, cluster.user, cluster.password.get_secret_value(), name=name, tls=tls,
                   ca_location=cluster.ssl_ca_location, timeout_s=timeout_s or cluster.request_timeout_s)

    def __enter__(self) -> StompSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._connection.disconnect()
        except stomp.exception.StompException:
            pass

    def send(self, queue: str, body: str, properties: dict[str, str] | None = None, *, receipt: bool = False) -> None:
        """Send to the anycast queue `queue` (created by Artemis if missing); properties become message
        properties. `receipt`: wait until the broker confirms it has the message."""
        headers = {"destination-type": "ANYCAST", "persistent": "true", **(properties or {})}
        if receipt:
            headers["receipt"] = uuid.uuid4().hex
        try:
            self._connection.send(queue, body, headers=headers)
        except stomp.exception.StompException as exc:
            raise UnreachableError(f"{self.where}: sending to {queue} failed: {exc}") from None

    def subscribe(self, queue: str, *, ack: str = "client-individual", window: int = -1,
                  selector: str | None = None) -> str:
        """Subscribe without acking (ack='client-individual'): what arrives stays delivering until
        `ack` or until the session closes (then Artemis redelivers it). Its subscription id."""
        subscription = uuid.uuid4().hex
        headers = {"subscription-type": "ANYCAST", "consumer-window-size": str(window)}
        if selector:
            headers["selector"] = selector
        self._connection.subscribe(queue, subscription, ack=ack, headers=headers)
        return subscription

    def unsubscribe(self, subscription: str) -> None:
        self._connection.unsubscribe(subscription)

    @property
    def received(self) -> list[Received]:
        """Everything this session received so far."""
        return list(self._inbox.messages)

    def receive(self, queue: str, count: int, timeout_s: float, selector: str | None = None) -> list[Received]:
        """Consume `queue` (acking each message) until `count` messages arrived or `timeout_s` passed; every
        message that arrived meanwhile is returned, even past `count` (it is acked: none is dropped unseen)."""
        subscription = uuid.uuid4().hex
        headers = {"subscription-type": "ANYCAST", "consumer-window-size": "-1"}
        if selector:
            headers["selector"] = selector
        start = len(self._inbox.messages)
        self._connection.subscribe(queue, subscription, ack="auto", headers=headers)
        deadline = time.monotonic() + timeout_s
        with self._inbox.arrived:
            while len(self._inbox.messages) - start < count and time.monotonic() < deadline:
                self._inbox.arrived.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        self._connection.unsubscribe(subscription)
        return self._inbox.messages[start:]
