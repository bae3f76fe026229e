"""Messaging with ActiveMQ Artemis over AMQP 1.0 (`python-qpid-proton`'s blocking API), for canaries
and tests.

    with AmqpSession.from_cluster(cluster, "mq-runbooks canary") as amqp:
        amqp.send("orders", "hello", {"msg_id": "m-1"})             # returns once Artemis has it
        received = amqp.receive("orders", count=1, timeout_s=5)      # [Received(...)], accepted

Why AMQP 1.0 and python-qpid-proton rather than STOMP and stomp.py: Artemis applies an address'
flow control (address-full-policy BLOCK) to AMQP and CORE producers only. A STOMP producer is never
blocked (measured on 2.40: 3,000 messages into an address at 300 times its max-size-bytes), so a
STOMP canary would report a blocked address as healthy, and no test could reproduce what blocked
producers see. AMQP is also what most non-Java clients of Artemis speak. proton ships wheels (no
build), and its blocking API fits the engine's synchronous integrations. Application properties
become Artemis message properties, so filters and `_AMQ_ORIG_QUEUE` work on them.

Every call raises UnreachableError when the broker does not answer (or, for a send, does not take the
message within the timeout: a blocked address) and BrokerError when it refuses; messages never
contain the password.
"""
from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proton import ConnectionException, Data, Delivery, Message, SSLDomain, Timeout
from proton.handlers import MessagingHandler
from proton.reactor import LinkOption, Selector
from proton.utils import BlockingConnection, LinkDetached, SendException

from mq_runbooks.base.errors import BrokerError, UnreachableError

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import ArtemisCluster

__all__ = ["AmqpSession", "Received"]


class _AnycastQueue(LinkOption):
    """The link's terminus is a queue (Artemis' capability 'queue'): anycast, created as a queue if
    missing. Without it Artemis treats a new address as multicast and drops what has no queue."""

    def apply(self, link) -> None:
        terminus = link.target if link.is_sender else link.source
        terminus.capabilities.put_array(False, Data.SYMBOL)
        terminus.capabilities.enter()
        terminus.capabilities.put_symbol("queue")
        terminus.capabilities.exit()


class _Holder(MessagingHandler):
    """Keeps what arrives, settles nothing, and never grants more credit than the link was given."""

    def __init__(self, connection: BlockingConnection) -> None:
        super().__init__(prefetch=0, auto_accept=False)
        self.connection = connection
        self.incoming: list[Message] = []
        self.receiver: Any = None

    def on_message(self, event) -> None:
        self.incoming.append(event.message)
        self.connection.container.yield_()  # wake the blocking wait() loop, as proton's own fetcher does


@dataclass(frozen=True, slots=True)
class Received:
    body: str
    properties: dict[str, Any]


class AmqpSession:
    """One AMQP connection to an Artemis acceptor (use it as a context manager)."""

    def __init__(self, host: str, port: int, user: str, password: str, *, name: str = "mq-runbooks",
                 tls: bool = False, ca_location: str | None = None, verify: bool = True, timeout_s: float = 10.0):
        self.where = f"artemis at {host}:{port} (AMQP)"
        self.timeout_s = timeout_s
        self._held: list[_Holder] = []  # what the subscriptions hold, unsettled (subscribe)
        self._received: list[Received] = []
        ssl_domain = None
        if tls:
            ssl_domain = SSLDomain(SSLDomain.MODE_CLIENT)
            if ca_location:
                ssl_domain.set_trusted_ca_db(ca_location)
            ssl_domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME if verify else SSLDomain.ANONYMOUS_PEER)
        url = f"{'amqps' if tls else 'amqp'}://{host}:{port}"
        try:
            self._connection = BlockingConnection(url, timeout=timeout_s, user=user, password=password,
                                                  ssl_domain=ssl_domain, container_id=f"{name}-{uuid.uuid4().hex[:8]}",
                                                  allowed_mechs="PLAIN", allow_insecure_mechs=True)
        except Timeout:
            raise UnreachableError(f"{self.where} did not answer within {timeout_s:g}s") from None
        except ConnectionException as exc:
            text = str(exc)
            if "unauthorized" in text.lower() or "sasl" in text.lower() or "auth" in text.lower():
                raise BrokerError(f"{self.where} refused the connection: {text.splitlines()[0][:200]}") from None
            raise UnreachableError(f"{self.where} is unreachable: {text.splitlines()[0][:200]}") from None

    @classmethod
    def from_cluster(cls, cluster: ArtemisCluster, name: str = "mq-runbooks", timeout_s: float | None = None,
                     endpoint: str | None = None) -> AmqpSession:
        """A session to the cluster's AMQP acceptor (or to `endpoint`, host:port, e.g. a switched one)."""
        host, port, tls = cluster.messaging_address
        if endpoint:
            host, _, raw_port = endpoint.rpartition(":")
            port = int(raw_port)
        return cls(host, port, cluster.user, cluster.password.get_secret_value(), name=name, tls=tls,
                   ca_location=cluster.ssl_ca_location, verify=cluster.ssl_verify,
                   timeout_s=timeout_s or cluster.request_timeout_s)

    def __enter__(self) -> AmqpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:  # noqa: BLE001  (closing a dead connection: nothing left to do)
            pass

    def sender(self, queue: str):
        """A sender to the anycast queue `queue` (Artemis creates it if missing); send() returns once the
        broker took the message, or raises (UnreachableError after the timeout: a blocked address)."""
        try:
            return _Sender(self, self._connection.create_sender(queue, options=[_AnycastQueue()]), queue)
        except (LinkDetached, ConnectionException) as exc:
            raise BrokerError(f"{self.where} refused a sender to {queue}: {exc}") from None

    def send(self, queue: str, body: str, properties: dict[str, Any] | None = None) -> None:
        sender = self.sender(queue)
        try:
            sender.send(body, properties)
        finally:
            sender.close()

    def subscribe(self, queue: str, *, credit: int = 1000, selector: str | None = None) -> None:
        """Take up to `credit` messages of `queue` and hold them unsettled (a stuck consumer): they stay
        delivering until the session closes, then Artemis redelivers them."""
        options = [_AnycastQueue(), *([Selector(selector)] if selector else [])]
        holder = _Holder(self._connection)
        # the receiver is kept with its holder: a BlockingReceiver that is garbage-collected closes its link
        holder.receiver = self._connection.create_receiver(queue, credit=credit, options=options, handler=holder)
        self._held.append(holder)

    def held(self, at_least: int = 0, wait_s: float = 0.0) -> int:
        """How many deliveries the subscriptions hold, after waiting up to `wait_s` for `at_least`."""
        def count() -> int:
            return sum(len(holder.incoming) for holder in self._held)
        if wait_s:
            try:
                self._connection.wait(lambda: count() >= at_least, timeout=wait_s)
            except Timeout:
                pass
        return count()

    def consumer(self, queue: str, credit: int = 1, selector: str | None = None) -> _Consumer:
        """A consumer that stays attached: its next() waits for one message and accepts it."""
        options = [_AnycastQueue(), *([Selector(selector)] if selector else [])]
        return _Consumer(self._connection.create_receiver(queue, credit=credit, options=options))

    def receive(self, queue: str, count: int, timeout_s: float, selector: str | None = None) -> list[Received]:
        """Consume `queue` (accepting each message) until `count` arrived or `timeout_s` passed without one."""
        options = [_AnycastQueue(), *([Selector(selector)] if selector else [])]
        receiver = self._connection.create_receiver(queue, credit=min(max(count, 1), 1000), options=options)
        received: list[Received] = []
        try:
            while len(received) < count:
                try:
                    message = receiver.receive(timeout=timeout_s)
                except Timeout:
                    break
                received.append(Received(str(message.body), dict(message.properties or {})))
                receiver.accept()
        finally:
            receiver.close()
        return received


class _Consumer:
    def __init__(self, receiver) -> None:
        self._receiver = receiver

    def next(self, timeout_s: float) -> Received | None:
        """The next message (accepted), or None if none came within `timeout_s`."""
        try:
            message = self._receiver.receive(timeout=timeout_s)
        except Timeout:
            return None
        self._receiver.accept()
        return Received(str(message.body), dict(message.properties or {}))

    def close(self) -> None:
        try:
            self._receiver.close()
        except Exception:  # noqa: BLE001
            pass


class _Sender:
    def __init__(self, session: AmqpSession, link, queue: str):
        self._session, self._link, self._queue = session, link, queue

    def send(self, body: str, properties: dict[str, Any] | None = None) -> None:
        try:
            message = Message(body=body, properties=properties or {}, durable=True, creation_time=time.time())
            self._link.send(message, timeout=self._session.timeout_s)
        except Timeout:
            raise UnreachableError(f"{self._session.where} did not take a message to {self._queue} within "
                                   f"{self._session.timeout_s:g}s (an address with policy BLOCK holds it)") from None
        except (SendException, LinkDetached) as exc:
            raise BrokerError(f"{self._session.where} refused a message to {self._queue}: {exc}") from None

    def send_many(self, messages: Iterable[tuple[str, dict[str, Any]]], window: int = 1000) -> int:
        """Send (body, properties) pairs pipelined, up to `window` unsettled at a time (as the broker's
        credit allows); returns once Artemis accepted every one, how many. A refused message raises
        BrokerError naming how many were accepted before it; a stall of `timeout_s` raises UnreachableError."""
        link, connection = self._link.link, self._session._connection
        unsettled: deque[Delivery] = deque()
        accepted = 0

        def settle_answered() -> int:  # the oldest deliveries Artemis answered; how many are still open
            nonlocal accepted
            while unsettled and (unsettled[0].settled or unsettled[0].remote_state):
                delivery = unsettled.popleft()
                if delivery.remote_state in (Delivery.REJECTED, Delivery.RELEASED, Delivery.MODIFIED):
                    raise BrokerError(f"{self._session.where} refused a message to {self._queue} after {accepted} "
                                      f"accepted ({delivery.remote_state})")
                delivery.settle()
                accepted += 1
            return len(unsettled)

        try:
            for body, properties in messages:
                connection.wait(lambda: settle_answered() < window and link.credit > 0, timeout=self._session.timeout_s)
                unsettled.append(link.send(Message(body=body, properties=properties, durable=True,
                                                   creation_time=time.time())))
            connection.wait(lambda: settle_answered() == 0, timeout=self._session.timeout_s)
        except Timeout:
            raise UnreachableError(f"{self._session.where} took no message to {self._queue} for "
                                   f"{self._session.timeout_s:g}s after {accepted} accepted (an address with policy "
                                   "BLOCK holds them)") from None
        except (ConnectionException, LinkDetached) as exc:
            raise BrokerError(f"{self._session.where} dropped the sender to {self._queue} after {accepted} "
                              f"accepted: {exc}") from None
        return accepted

    def close(self) -> None:
        try:
            self._link.close()
        except Exception:  # noqa: BLE001
            pass
