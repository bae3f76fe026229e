"""RabbitMQ's management HTTP API as runbooks see it: observe queues, consumers, channels and
connections, close a connection, and the raw API for the integrations built on it (definitions, shovels).

    with RabbitManagement.from_cluster(clusters.rabbit_cluster("primary")) as rabbit:
        orders = rabbit.queue("/", "orders")
        stuck = [c for c in rabbit.channels() if c.prefetch_count and c.messages_unacknowledged >= c.prefetch_count]

Every call answers within about `timeout_s` or raises `UnreachableError`; a refusal by the API raises
`BrokerError` with the HTTP status and RabbitMQ's reason. Statistics (depths, rates, unacked counts)
come from the management database, which RabbitMQ refreshes every few seconds (5 s by default):
a value read right after a change may be one refresh old. AMQP (the reachability check, connections
to a vhost) is mq_runbooks.integrations.rabbitmq_amqp.
"""
from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from mq_runbooks.base.errors import BrokerError, NotFoundError, UnreachableError
from mq_runbooks.integrations.rabbitmq_amqp import without_userinfo

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import RabbitCluster

__all__ = ["Channel", "Connection", "Consumer", "Overview", "Policy", "Queue", "RabbitManagement"]


@dataclass(frozen=True, slots=True)
class Overview:
    cluster_name: str
    rabbitmq_version: str
    erlang_version: str
    node: str
    messages_ready: int
    messages_unacknowledged: int
    connections: int
    channels: int
    consumers: int
    queues: int


@dataclass(frozen=True, slots=True)
class Queue:
    vhost: str
    name: str
    type: str
    durable: bool
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    consumer_utilisation: float | None
    idle_since: str | None
    publish_rate: float
    deliver_rate: float
    ack_rate: float
    redeliver_rate: float
    policy: str | None = None  # the name of the policy that applies to the queue, if any


@dataclass(frozen=True, slots=True)
class Consumer:
    queue: str
    vhost: str
    consumer_tag: str
    prefetch_count: int
    ack_required: bool
    channel_name: str
    connection_name: str
    peer_host: str | None
    peer_port: int | None


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    connection_name: str
    number: int
    messages_unacknowledged: int
    prefetch_count: int
    consumer_count: int
    idle_since: str | None
    ack_rate: float
    deliver_rate: float
    user: str
    peer_host: str | None


@dataclass(frozen=True, slots=True)
class Connection:
    name: str
    client_provided_name: str | None
    user: str
    vhost: str
    peer_host: str | None
    peer_port: int | None
    channels: int
    state: str
    connected_at: datetime | None


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy of a vhost, as `rabbitmqctl list_policies` shows it: the queues (or exchanges) whose
    name matches `pattern` take `definition` (e.g. {"max-length": 1000}); of several that match, the
    one of highest `priority` applies."""

    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any]
    apply_to: str = "all"  # "queues", "exchanges", "all" (also "classic_queues", "quorum_queues", "streams")
    priority: int = 0

    def body(self) -> dict[str, Any]:
        """The management API's PUT body for this policy."""
        return {"pattern": self.pattern, "definition": self.definition, "apply-to": self.apply_to,
                "priority": self.priority}


class RabbitNotFound(BrokerError, NotFoundError):
    """The cluster has no vhost, queue or connection of that name: bad input where a person named it
    (the CLI exits 2), and still a BrokerError for code that handles broker answers."""


class _NotFound(Exception):
    """A 404 the caller said it expects (send(..., missing_ok=True))."""


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """httpx's default (verifying) TLS context, built once per process: building one loads the CA bundle,
    ~0.1-0.2 s, which every RabbitManagement paid, even for plain-HTTP management URLs."""
    return httpx.create_ssl_context()


class RabbitManagement:
    """A client of one cluster's management HTTP API (sync, one pooled connection; use as a context manager).

    Each request sends the headers its endpoint needs: `Accept: application/json` where JSON comes
    back (GET); none for PUT/POST/DELETE, some of which answer 406 to it (e.g. DELETE of a queue's
    contents)."""

    def __init__(
        self, management_url: str, username: str, password: str, *, name: str = "rabbitmq", timeout_s: float = 10.0
    ):
        self.name = name
        self.timeout_s = timeout_s
        self._username = username
        self._where = f"rabbitmq cluster {name!r} ({without_userinfo(management_url)})"
        self._http = httpx.Client(
            base_url=management_url.rstrip("/"),
            auth=(username, password),
            timeout=httpx.Timeout(timeout_s),
            verify=_tls_context(),
        )

    @classmethod
    def from_cluster(cls, cluster: RabbitCluster) -> RabbitManagement:
        """The client for a cluster of clusters.yaml, with its credentials and request timeout."""
        username, password = cluster.management_credentials()
        return cls(cluster.management_url, username, password, name=cluster.name, timeout_s=cluster.request_timeout_s)

    def __enter__(self) -> RabbitManagement:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection (idempotent)."""
        self._http.close()

    # --- observe -------------------------------------------------------------------------------

    def overview(self) -> Overview:
        """Versions, the node that answered, and cluster-wide totals of messages and clients."""
        data = self._get("/api/overview")
        totals, objects = data.get("queue_totals") or {}, data.get("object_totals") or {}
        return Overview(
            cluster_name=data.get("cluster_name", ""),
            rabbitmq_version=data.get("rabbitmq_version", ""),
            erlang_version=data.get("erlang_version", ""),
            node=data.get("node", ""),
            # queue_totals is {} while the cluster has no queues
            messages_ready=totals.get("messages_ready", 0),
            messages_unacknowledged=totals.get("messages_unacknowledged", 0),
            connections=objects.get("connections", 0),
            channels=objects.get("channels", 0),
            consumers=objects.get("consumers", 0),
            queues=objects.get("queues", 0),
        )

    def queues(self, vhost: str | None = None) -> list[Queue]:
        """Every queue of the cluster, or of one vhost (BrokerError if that vhost does not exist)."""
        if vhost is None:
            return [_queue(item) for item in self._get("/api/queues")]
        path = f"/api/queues/{_segment(vhost)}"
        return [_queue(item) for item in self._get(path, not_found=f"vhost {vhost!r} does not exist")]

    def queue(self, vhost: str, name: str) -> Queue:
        """One queue; BrokerError naming the vhost and the queue if it does not exist."""
        path = f"/api/queues/{_segment(vhost)}/{_segment(name)}"
        return _queue(self._get(path, not_found=f"queue {name!r} does not exist in vhost {vhost!r}"))

    def consumers(self, vhost: str | None = None, queue: str | None = None) -> list[Consumer]:
        """Consumers of the cluster, narrowed to a vhost and/or a queue name."""
        if vhost is None:
            items = self._get("/api/consumers")
        else:
            items = self._get(f"/api/consumers/{_segment(vhost)}", not_found=f"vhost {vhost!r} does not exist")
        found = [_consumer(item) for item in items]
        return [c for c in found if queue is None or c.queue == queue]

    def channels(self) -> list[Channel]:
        """Every open channel, with what it holds unacknowledged and its prefetch."""
        return [_channel(item) for item in self._get("/api/channels")]

    def connections(self) -> list[Connection]:
        """Every open client connection."""
        return [_connection(item) for item in self._get("/api/connections")]

    # --- act -----------------------------------------------------------------------------------

    def close_connection(self, name: str, reason: str) -> None:
        """Close a client connection; the client sees `reason`, and its unacked messages go back to
        their queues (redelivered). BrokerError if no connection has that name."""
        self._request(
            "DELETE",
            f"/api/connections/{_segment(name)}",
            headers={"X-Reason": reason},
            not_found=f"connection {name!r} does not exist (closed already?)",
        )

    def purge(self, vhost: str, queue: str) -> None:
        """Delete every ready message of a queue (DELETE .../contents); RabbitNotFound if it does not exist."""
        self._request("DELETE", f"/api/queues/{_segment(vhost)}/{_segment(queue)}/contents",
                      not_found=f"queue {queue!r} does not exist in vhost {vhost!r}")

    # --- policies ------------------------------------------------------------------------------

    def policies(self, vhost: str) -> list[Policy]:
        """The policies of a vhost, sorted by name; RabbitNotFound if the vhost does not exist."""
        path = f"/api/policies/{_segment(vhost)}"
        found = self._get(path, not_found=f"vhost {vhost!r} does not exist")
        return sorted((_policy(item) for item in found), key=lambda policy: policy.name)

    def policy(self, vhost: str, name: str) -> Policy | None:
        """One policy of a vhost, or None when it has no policy of that name."""
        return next((policy for policy in self.policies(vhost) if policy.name == name), None)

    def put_policy(self, policy: Policy) -> Policy | None:
        """Create or replace a policy (like `rabbitmqctl set_policy`); returns the policy of that
        name as it was before (None: there was none), for a snapshot. Restore with `put_policy(before)`,
        or `delete_policy(vhost, name)` when it was None."""
        before = self.policy(policy.vhost, policy.name)
        self._request("PUT", f"/api/policies/{_segment(policy.vhost)}/{_segment(policy.name)}", json=policy.body(),
                      not_found=f"vhost {policy.vhost!r} does not exist")
        return before

    def delete_policy(self, vhost: str, name: str) -> Policy | None:
        """Delete a policy (like `rabbitmqctl clear_policy`); returns it as it was, or None when
        there was no such policy (deleting one that is gone is no error, so a retry is safe)."""
        before = self.policy(vhost, name)
        if before is not None:
            self.send("DELETE", f"/api/policies/{_segment(vhost)}/{_segment(name)}", missing_ok=True)
        return before

    # --- HTTP ----------------------------------------------------------------------------------

    def _get(self, path: str, *, not_found: str | None = None) -> Any:
        response = self._request("GET", path, not_found=not_found)
        try:
            return response.json()
        except ValueError:
            raise BrokerError(
                f"{self._where} answered GET {path} with something that is not JSON: is this the management API?"
            ) from None

    def _request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, not_found: str | None = None,
        json: Any = None,
    ) -> httpx.Response:
        if method == "GET":
            headers = {"Accept": "application/json", **(headers or {})}
        try:
            response = self._http.request(method, path, headers=headers, json=json)
        except httpx.TransportError as exc:
            raise UnreachableError(
                f"{self._where} did not answer within {self.timeout_s:g}s: {str(exc) or type(exc).__name__}"
            ) from None
        if response.is_success:
            return response
        reason = _reason(response)
        if response.status_code == 401:
            raise BrokerError(
                f"{self._where} refused the credentials of user {self._username!r} ({reason}): "
                "check the management user and password in clusters.yaml"
            )
        if response.status_code == 404 and not_found == "":
            raise _NotFound(path)
        if response.status_code == 404 and not_found is not None:
            raise RabbitNotFound(f"{self._where}: {not_found}")
        raise BrokerError(f"{self._where} answered {method} {path} with HTTP {response.status_code}: {reason}")

    # --- the raw API, for integrations built on this client (definitions, shovels) ---------------

    def get_json(self, path: str, *, not_found: str | None = None) -> Any:
        """GET an API path (e.g. `/api/definitions`) as JSON; BrokerError(not_found) on a 404."""
        return self._get(path, not_found=not_found)

    def send(self, method: str, path: str, body: Any = None, *, not_found: str | None = None,
             missing_ok: bool = False) -> bool:
        """PUT/POST/DELETE an API path with a JSON body; errors as for every other call. With
        `missing_ok`, a 404 (e.g. deleting what is already gone) is no error: returns False then."""
        try:
            self._request(method, path, json=body, not_found="" if missing_ok else not_found)
        except _NotFound:
            return False
        return True

    def where(self) -> str:
        """'rabbitmq cluster NAME (URL without credentials)', for messages."""
        return self._where

    def channel_activity(self) -> list[ChannelActivity]:
        """Every open channel with its cumulative counters (acks, deliveries), to compare two samples."""
        return [_channel_activity(item) for item in self._get("/api/channels")]


# --- JSON -> dataclasses ----------------------------------------------------------------------------


def _queue(data: dict[str, Any]) -> Queue:
    stats = data.get("message_stats") or {}
    return Queue(
        vhost=data["vhost"],
        name=data["name"],
        type=data.get("type", "classic"),
        durable=data.get("durable", False),
        # a queue that has just been declared has no statistics yet: no key rather than 0
        messages_ready=data.get("messages_ready", 0),
        messages_unacknowledged=data.get("messages_unacknowledged", 0),
        consumers=data.get("consumers", 0),
        consumer_utilisation=data.get("consumer_utilisation"),
        idle_since=data.get("idle_since"),
        publish_rate=_rate(stats, "publish"),
        deliver_rate=_rate(stats, "deliver_get"),
        ack_rate=_rate(stats, "ack"),
        redeliver_rate=_rate(stats, "redeliver"),
        policy=data.get("policy") or None,
    )


def _consumer(data: dict[str, Any]) -> Consumer:
    channel = data.get("channel_details") or {}
    queue = data.get("queue") or {}
    return Consumer(
        queue=queue.get("name", ""),
        vhost=queue.get("vhost", ""),
        consumer_tag=data["consumer_tag"],
        prefetch_count=data.get("prefetch_count", 0),
        ack_required=data.get("ack_required", True),
        channel_name=channel.get("name", ""),
        connection_name=channel.get("connection_name", ""),
        peer_host=channel.get("peer_host"),
        peer_port=channel.get("peer_port"),
    )


def _channel(data: dict[str, Any]) -> Channel:
    connection = data.get("connection_details") or {}
    stats = data.get("message_stats") or {}
    return Channel(
        name=data["name"],
        connection_name=connection.get("name", ""),
        number=data.get("number", 0),
        messages_unacknowledged=data.get("messages_unacknowledged", 0),
        prefetch_count=data.get("prefetch_count", 0),
        consumer_count=data.get("consumer_count", 0),
        idle_since=data.get("idle_since"),
        ack_rate=_rate(stats, "ack"),
        deliver_rate=_rate(stats, "deliver_get"),
        user=data.get("user", ""),
        peer_host=connection.get("peer_host"),
    )


def _connection(data: dict[str, Any]) -> Connection:
    client = data.get("client_properties") or {}
    connected_at = data.get("connected_at")  # milliseconds since the epoch
    return Connection(
        name=data["name"],
        client_provided_name=data.get("user_provided_name") or client.get("connection_name"),
        user=data.get("user", ""),
        vhost=data.get("vhost", ""),
        peer_host=data.get("peer_host"),
        peer_port=data.get("peer_port"),
        channels=data.get("channels", 0),
        state=data.get("state", ""),
        connected_at=datetime.fromtimestamp(connected_at / 1000, timezone.utc) if connected_at else None,
    )


# --- small helpers ----------------------------------------------------------------------------------


def _policy(data: dict[str, Any]) -> Policy:
    return Policy(vhost=data["vhost"], name=data["name"], pattern=data.get("pattern", ""),
                  definition=dict(data.get("definition") or {}), apply_to=data.get("apply-to", "all"),
                  priority=int(data.get("priority", 0)))


def _rate(stats: dict[str, Any], name: str) -> float:
    """message_stats.<name>_details.rate; 0.0 when there was no such traffic (or rates are off)."""
    return float((stats.get(f"{name}_details") or {}).get("rate", 0.0))


def _segment(value: str) -> str:
    """One URL path segment: '/' -> '%2F', ' ' -> '%20' (the API's vhost and names may hold both)."""
    return quote(value, safe="")


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or response.text[:200]
    if isinstance(body, dict):
        return str(body.get("reason") or body.get("error") or body)
    return str(body)[:200]


@dataclass(frozen=True, slots=True)
class ChannelActivity:
    """A channel's state and cumulative counters; `prefetch_count` is the per-consumer limit, or the
    channel-wide one (`global_prefetch_count`) when only that is set."""

    name: str
    connection_name: str
    messages_unacknowledged: int
    prefetch_count: int
    consumer_count: int
    idle_since: datetime | None
    acks: int
    delivered: int


def _channel_activity(data: dict[str, Any]) -> ChannelActivity:
    stats = data.get("message_stats") or {}
    idle_since = data.get("idle_since")  # '2026-11-27T05:51:13.365+00:00' (3.10); older: '2026-11-27 05:51:13'
    return ChannelActivity(
        name=data["name"],
        connection_name=(data.get("connection_details") or {}).get("name", ""),
        messages_unacknowledged=data.get("messages_unacknowledged", 0),
        prefetch_count=data.get("prefetch_count") or data.get("global_prefetch_count") or 0,
        consumer_count=data.get("consumer_count", 0),
        idle_since=_timestamp(idle_since) if idle_since else None,
        acks=stats.get("ack", 0),
        delivered=stats.get("deliver_get", 0),
    )


def _timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace(" ", "T"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
