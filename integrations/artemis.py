"""ActiveMQ Artemis' management API (Jolokia over HTTP) as runbooks see it: the broker and its HA state,
addresses and queues with their counts, consumers, address settings. Messages (count, list, retry,
move) are mq_runbooks.integrations.artemis_messages; AMQP messaging is .artemis_amqp.

    with ArtemisManagement.from_cluster(clusters.artemis_cluster("primary")) as artemis:
        artemis.broker().replica_sync          # True: the backup is in sync
        artemis.queue("DLQ").message_count
        artemis.address_settings("orders").address_full_policy   # 'PAGE'

Every call answers within about `timeout_s` or raises `UnreachableError`; a refused login or origin
raises `BrokerError`; a queue or address that does not exist raises `ArtemisNotFound` (a NotFoundError
too, so a name a person typed is bad input). Jolokia answers HTTP 200 even when the operation failed:
its per-request `status` and `error` are what count, and are mapped here once.
"""
from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from mq_runbooks.base.errors import BrokerError, NotFoundError, UnreachableError

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import ArtemisCluster

__all__ = ["AddressSettings", "AddressState", "ArtemisManagement", "ArtemisNotFound", "BrokerState",
           "ConsumerInfo", "JolokiaFailure", "QueueState"]

DOMAIN = "org.apache.activemq.artemis"


class ArtemisNotFound(BrokerError, NotFoundError):
    """No queue, address or broker of that name: bad input where a person named it (the CLI exits 2)."""


class JolokiaFailure(BrokerError):
    """One Jolokia request failed on the broker: `error_type` is the Java exception's class."""

    def __init__(self, message: str, error_type: str = ""):
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True, slots=True)
class BrokerState:
    name: str
    version: str
    active: bool  # serving clients (a primary, or a backup after failover)
    backup: bool  # configured as a backup (stays True after it took over)
    replica_sync: bool  # active: its backup is in sync; backup: it is in sync with its primary
    ha_policy: str
    address_memory_usage: int  # bytes of messages in memory, over all addresses
    global_max_size: int
    disk_store_usage: float  # fraction of the disk the journal's volume uses (0..1)
    max_disk_usage: int  # percent at which Artemis blocks producers

    @property
    def role(self) -> str:
        if self.active:
            return "active, backup in sync" if self.replica_sync else "active, no backup in sync"
        return f"backup, {'in sync' if self.replica_sync else 'not in sync'}"


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    address: str
    routing_type: str  # ANYCAST or MULTICAST
    message_count: int  # waiting + delivering
    delivering_count: int  # delivered, not acknowledged
    consumer_count: int
    messages_added: int  # since the broker started
    messages_acknowledged: int
    paused: bool
    dead_letter_address: str | None


@dataclass(frozen=True, slots=True)
class AddressState:
    name: str
    routing_types: tuple[str, ...]
    queue_names: tuple[str, ...]
    size_bytes: int  # AddressSize: bytes of its messages in memory
    limit_percent: int  # of max-size-bytes (0 when unlimited)
    paging: bool
    number_of_pages: int
    number_of_messages: int
    paused: bool


@dataclass(frozen=True, slots=True)
class AddressSettings:
    """The settings that apply to an address (Artemis merges every match), as Artemis reports them.
    `raw` is Artemis' JSON, which `set_address_settings` takes back."""

    match: str
    max_size_bytes: int  # -1: only global-max-size limits it
    max_size_messages: int
    address_full_policy: str  # PAGE, BLOCK, FAIL or DROP
    page_size_bytes: int
    page_limit_bytes: int
    page_limit_messages: int
    dead_letter_address: str | None
    max_delivery_attempts: int | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    consumer_id: str
    session_id: str
    queue: str
    client_id: str | None
    user: str | None
    remote_address: str | None
    protocol: str | None
    delivering_count: int  # delivered, not yet acknowledged
    messages_delivered: int
    messages_acknowledged: int
    last_delivered_time: int | None
    last_acknowledged_time: int | None


class ArtemisManagement:
    """A Jolokia client of one Artemis broker (sync, one pooled connection; use it as a context manager)."""

    def __init__(self, management_url: str, user: str, password: str, *, origin: str, name: str = "artemis",
                 timeout_s: float = 10.0, verify: bool | str = True):
        self.name = name
        self.timeout_s = timeout_s
        self._url = management_url.rstrip("/")
        self._where = f"artemis cluster {name!r} ({self._url})"
        self._broker: str | None = None
        self._http = httpx.Client(
            auth=(user, password), timeout=httpx.Timeout(timeout_s),
            headers={"Origin": origin, "Content-Type": "application/json"},
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
        )

    @classmethod
    def from_cluster(cls, cluster: ArtemisCluster) -> ArtemisManagement:
        verify: bool | str = cluster.ssl_ca_location or True if cluster.ssl_verify else False
        return cls(cluster.management_url, cluster.user, cluster.password.get_secret_value(),
                   origin=cluster.jolokia_origin, name=cluster.name, timeout_s=cluster.request_timeout_s,
                   verify=verify)

    def __enter__(self) -> ArtemisManagement:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- Jolokia ---------------------------------------------------------------------------------

    def bulk(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Several Jolokia requests in one HTTP round trip; each answer's value, or a JolokiaFailure
        instance (not raised) for one that failed. Raises for the HTTP exchange itself only."""
        answers = self._post(requests)
        if not isinstance(answers, list) or len(answers) != len(requests):
            raise BrokerError(f"{self._where}: Jolokia answered {len(answers) if isinstance(answers, list) else 1} "
                              f"result(s) to {len(requests)} request(s)")
        return [answer.get("value") if answer.get("status") == 200 else _failure(answer) for answer in answers]

    def request(self, request: dict[str, Any]) -> Any:
        """One Jolokia request; its value, or the failure raised (ArtemisNotFound for a missing MBean)."""
        answer = self._post(request)
        if answer.get("status") != 200:
            failure = _failure(answer)
            if failure.error_type.endswith("InstanceNotFoundException"):
                raise ArtemisNotFound(f"{self._where}: {failure}")
            raise failure
        return answer.get("value")

    def read(self, mbean: str, *attributes: str) -> dict[str, Any]:
        value = self.request({"type": "read", "mbean": mbean, "attribute": list(attributes)})
        return value if isinstance(value, dict) else {attributes[0]: value}

    def exec(self, mbean: str, operation: str, *arguments: Any) -> Any:
        """Call an operation; give overloaded ones with their signature, e.g. 'countMessages(java.lang.String)'."""
        return self.request(exec_request(mbean, operation, *arguments))

    def _post(self, body: Any) -> Any:
        try:
            response = self._http.post(self._url + "/", content=json.dumps(body))
        except httpx.TimeoutException:
            raise UnreachableError(f"{self._where} did not answer within {self.timeout_s:g}s") from None
        except httpx.TransportError as exc:
            raise UnreachableError(f"{self._where} is unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code in (401, 403):
            raise BrokerError(f"{self._where} refused the request (HTTP {response.status_code}): check the user, "
                              "the password and the origin (Jolokia's CORS policy, etc/jolokia-access.xml)")
        if response.status_code != 200:
            raise BrokerError(f"{self._where} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError:
            raise BrokerError(f"{self._where} answered something that is not JSON: is it Jolokia?") from None
        if isinstance(answer, dict) and answer.get("status") == 403:  # a refused origin comes back in the body
            raise BrokerError(f"{self._where} refused the request: {answer.get('error')}")
        return answer

    # --- names -----------------------------------------------------------------------------------

    @property
    def broker_mbean(self) -> str:
        """The broker's MBean name; the broker's name is read once (one broker answers a Jolokia URL)."""
        if self._broker is None:
            found = self.request({"type": "search", "mbean": f"{DOMAIN}:broker=*"})
            if not found:
                raise BrokerError(f"{self._where}: Jolokia answers, but no Artemis broker is registered (starting?)")
            self._broker = found[0]
        return self._broker

    def address_mbean(self, address: str) -> str:
        return f'{self.broker_mbean},component=addresses,address={_quote(address)}'

    def queue_mbean(self, queue: str, address: str | None = None, routing_type: str | None = None) -> str:
        """The MBean of a queue; its address and routing type are looked up when not given."""
        if address is None or routing_type is None:
            found = self.request({"type": "search", "mbean": f"{self.broker_mbean},component=addresses,address=*,"
                                                            f"subcomponent=queues,routing-type=*,queue={_quote(queue)}"})
            if not found:
                raise ArtemisNotFound(f"{self._where} has no queue named {queue!r}")
            return found[0]
        return (f"{self.address_mbean(address)},subcomponent=queues,routing-type={_quote(routing_type.lower())},"
                f"queue={_quote(queue)}")

    # --- observe ---------------------------------------------------------------------------------

    def broker(self) -> BrokerState:
        """Who answered, and its HA state."""
        values = self.read(self.broker_mbean, "Name", "Version", "Active", "Backup", "ReplicaSync", "HAPolicy",
                           "AddressMemoryUsage", "GlobalMaxSize", "DiskStoreUsage", "MaxDiskUsage")
        return BrokerState(
            name=values.get("Name") or "", version=values.get("Version") or "", active=bool(values.get("Active")),
            backup=bool(values.get("Backup")), replica_sync=bool(values.get("ReplicaSync")),
            ha_policy=values.get("HAPolicy") or "", address_memory_usage=int(values.get("AddressMemoryUsage") or 0),
            global_max_size=int(values.get("GlobalMaxSize") or 0),
            disk_store_usage=float(values.get("DiskStoreUsage") or 0.0),
            max_disk_usage=int(values.get("MaxDiskUsage") or 0))

    def queue_names(self) -> list[str]:
        return sorted(self.read(self.broker_mbean, "QueueNames")["QueueNames"] or [])

    def address_names(self) -> list[str]:
        return sorted(self.read(self.broker_mbean, "AddressNames")["AddressNames"] or [])

    def queue(self, name: str) -> QueueState:
        """One queue with its counts; ArtemisNotFound naming it if there is none."""
        values = self.read(self.queue_mbean(name), "Name", "Address", "RoutingType", "MessageCount",
                           "DeliveringCount", "ConsumerCount", "MessagesAdded", "MessagesAcknowledged", "Paused",
                           "DeadLetterAddress")
        return QueueState(
            name=values["Name"], address=values["Address"], routing_type=values["RoutingType"],
            message_count=int(values["MessageCount"]), delivering_count=int(values["DeliveringCount"]),
            consumer_count=int(values["ConsumerCount"]), messages_added=int(values["MessagesAdded"]),
            messages_acknowledged=int(values["MessagesAcknowledged"]), paused=bool(values["Paused"]),
            dead_letter_address=values.get("DeadLetterAddress") or None)

    def address(self, name: str) -> AddressState:
        """One address with its size and paging state; ArtemisNotFound naming it if there is none."""
        try:
            values = self._read_address(name)
        except ArtemisNotFound:
            raise ArtemisNotFound(f"{self._where} has no address named {name!r}") from None
        return AddressState(
            name=values["Address"], routing_types=tuple(values.get("RoutingTypes") or ()),
            queue_names=tuple(values.get("QueueNames") or ()), size_bytes=int(values["AddressSize"]),
            limit_percent=int(values.get("AddressLimitPercent") or 0), paging=bool(values["Paging"]),
            number_of_pages=int(values["NumberOfPages"]), number_of_messages=int(values["NumberOfMessages"]),
            paused=bool(values["Paused"]))

    def _read_address(self, name: str) -> dict[str, Any]:
        return self.read(self.address_mbean(name), "Address", "RoutingTypes", "QueueNames", "AddressSize",
                         "AddressLimitPercent", "Paging", "NumberOfPages", "NumberOfMessages", "Paused")

    def address_settings(self, address: str) -> AddressSettings:
        """The settings Artemis applies to `address` (every matching address-setting merged)."""
        raw = json.loads(self.exec(self.broker_mbean, "getAddressSettingsAsJSON", address))
        return AddressSettings(
            match=address, max_size_bytes=int(raw.get("maxSizeBytes", -1)),
            max_size_messages=int(raw.get("maxSizeMessages", -1)),
            address_full_policy=str(raw.get("addressFullMessagePolicy", "PAGE")),
            page_size_bytes=int(raw.get("pageSizeBytes", 0)), page_limit_bytes=int(raw.get("pageLimitBytes", -1)),
            page_limit_messages=int(raw.get("pageLimitMessages", -1)),
            dead_letter_address=raw.get("deadLetterAddress") or None,
            max_delivery_attempts=raw.get("maxDeliveryAttempts"), raw=raw)

    def consumers(self, queue: str | None = None) -> list[ConsumerInfo]:
        """Every consumer of the broker (or of one queue), with its session, client id, remote address
        and delivering count (messages delivered and not acknowledged)."""
        options = json.dumps({"field": "queue", "operation": "EQUALS", "value": queue} if queue else {})
        found: list[ConsumerInfo] = []
        page = 1
        while True:
            answer = json.loads(self.exec(self.broker_mbean, "listConsumers", options, page, 500) or "{}")
            found += [_consumer(item) for item in answer.get("data") or []]
            if len(found) >= int(answer.get("count") or 0) or not answer.get("data"):
                return found
            page += 1

    def session_connection(self, session_id: str) -> str | None:
        """The id of the connection a session belongs to (None once the session is gone)."""
        options = json.dumps({"field": "id", "operation": "EQUALS", "value": session_id})
        answer = json.loads(self.exec(self.broker_mbean, "listSessions(java.lang.String,int,int)", options, 1, 10) or "{}")
        found = answer.get("data") or []
        return str(found[0]["connectionID"]) if found else None

    # --- change ----------------------------------------------------------------------------------

    def set_address_settings(self, match: str, settings: dict[str, Any]) -> None:
        """Add (or replace) the address-setting for `match`, given as Artemis' own JSON names
        (e.g. {"maxSizeBytes": 1048576, "addressFullMessagePolicy": "PAGE"})."""
        self.exec(self.broker_mbean, "addAddressSettings(java.lang.String,java.lang.String)", match,
                  json.dumps(settings))

    def remove_address_settings(self, match: str) -> None:
        self.exec(self.broker_mbean, "removeAddressSettings", match)

    def create_queue(self, name: str, address: str | None = None, routing_type: str = "ANYCAST") -> bool:
        """Create a durable queue (and its address) unless it exists; whether it was created."""
        if name in self.queue_names():
            return False
        configuration = {"name": name, "address": address or name, "routing-type": routing_type, "durable": True,
                         "auto-create-address": True}
        self.exec(self.broker_mbean, "createQueue(java.lang.String,boolean)", json.dumps(configuration), True)
        return True

    def destroy_queue(self, name: str) -> None:
        self.exec(self.broker_mbean, "destroyQueue(java.lang.String,boolean)", name, True)

    def close_connection(self, connection_id: str) -> None:
        """Close a client connection; Artemis redelivers what its consumers held unacknowledged."""
        self.exec(self.broker_mbean, "closeConnectionWithID", connection_id)

    def force_failover(self) -> None:
        self.exec(self.broker_mbean, "forceFailover")


def exec_request(mbean: str, operation: str, *arguments: Any) -> dict[str, Any]:
    return {"type": "exec", "mbean": mbean, "operation": operation, "arguments": list(arguments)}


def _quote(value: str) -> str:
    """An ObjectName value quoted as Artemis registers it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*").replace("?", "\\?") + '"'


def _failure(answer: dict[str, Any]) -> JolokiaFailure:
    error = str(answer.get("error") or f"status {answer.get('status')}")
    return JolokiaFailure(error, str(answer.get("error_type") or ""))


def _consumer(item: dict[str, Any]) -> ConsumerInfo:
    return ConsumerInfo(
        consumer_id=str(item.get("id", "")), session_id=str(item.get("session", "")), queue=str(item.get("queue", "")),
        client_id=item.get("clientID") or None, user=item.get("user") or None,
        remote_address=item.get("remoteAddress") or None, protocol=item.get("protocol") or None,
        delivering_count=int(item.get("messagesInTransit") or 0),
        messages_delivered=int(item.get("messagesDelivered") or 0),
        messages_acknowledged=int(item.get("messagesAcknowledged") or 0),
        last_delivered_time=int(item.get("lastDeliveredTime") or 0) or None,
        last_acknowledged_time=int(item.get("lastAcknowledgedTime") or 0) or None)
