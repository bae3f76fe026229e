"""RocketMQ admin reads and writes the runbooks need, as the broker's own admin requests (the remoting
protocol of integrations/rocketmq_remoting.py): topic routes and queues, a group's consumer
connections and per-queue offsets (`consumerProgress`), offsets by time, offset resets, the messages
of `%DLQ%<group>` and sending. Errors are the project's kinds: UnreachableError when a name server or
broker does not answer, NotFoundError for a topic or group RocketMQ does not know, BrokerError for
the rest. Nothing of Prefect.

Why admin requests and not `mqadmin`: there is no Python admin client, and `mqadmin` is a JVM per
call. Measured in one run of bench/rocketmq_reset.py (bench/results/rocketmq_reset.md: 2 shared
cores at load average ~15, the stack's broker, a group with 64 queues on one topic, medians of 5):

    mqadmin consumerProgress (what an operator plans with)        19.3 s   (one JVM)
    mqadmin resetOffsetByTime of the 64 queues                     19.9 s   (one JVM)
    admin requests: the reset plan, in process                    0.042 s  (route, consume stats, min/max
                                                                            and offset-by-time per queue)
    admin requests: plan + reset + read-back, fresh process        3.2 s    (0.16x mqadmin's reset;
                                                                            interpreter start and imports)

A plan must answer in 2 s: only admin requests do (a JVM alone takes seconds to start here, and a plan
would need two: consumerProgress, then the offsets by time). The requests are the ones `mqadmin` sends
(GET_CONSUME_STATS, SEARCH_OFFSET_BY_TIMESTAMP, INVOKE_BROKER_TO_RESET_OFFSET, PULL_MESSAGE,
SEND_MESSAGE ...), so what they read and write is what it reads and writes.
"""
from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mq_runbooks.base.errors import BrokerError, NotFoundError, UnreachableError
from mq_runbooks.integrations.rocketmq_remoting import (
    CONSUMER_NOT_ONLINE, PULL_NOT_FOUND, PULL_OFFSET_MOVED, PULL_RETRY_IMMEDIATELY, QUERY_NOT_FOUND, SUCCESS,
    SUBSCRIPTION_GROUP_NOT_EXIST, TOPIC_NOT_EXIST, Connection, StoredMessage, decode_messages,
    encode_properties)

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import RocketMQCluster

__all__ = ["RocketMQAdmin", "QueueProgress", "ConsumerClient", "SentMessage", "StoredMessage", "dlq_topic",
           "retry_topic"]

# Request codes (org.apache.rocketmq.remoting.protocol.RequestCode)
_PULL_MESSAGE = 11
_SEND_MESSAGE = 10
_QUERY_CONSUMER_OFFSET = 14
_UPDATE_CONSUMER_OFFSET = 15
_UPDATE_AND_CREATE_TOPIC = 17
_SEARCH_OFFSET_BY_TIMESTAMP = 29
_GET_BROKER_RUNTIME_INFO = 28
_GET_MAX_OFFSET = 30
_GET_MIN_OFFSET = 31
_VIEW_MESSAGE_BY_ID = 33
_CONSUMER_SEND_MSG_BACK = 36
_GET_ROUTEINFO_BY_TOPIC = 105
_GET_BROKER_CLUSTER_INFO = 106
_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200
_GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201
_GET_CONSUMER_CONNECTION_LIST = 203
_GET_CONSUME_STATS = 208
_INVOKE_BROKER_TO_RESET_OFFSET = 222

_PERM_READ_WRITE = 6
ADMIN_GROUP = "mq_runbooks_admin"  # the group our reads of a DLQ pull as (it commits nothing)


def dlq_topic(group: str) -> str:
    return f"%DLQ%{group}"


def retry_topic(group: str) -> str:
    return f"%RETRY%{group}"


@dataclass(frozen=True)
class QueueProgress:
    """One queue of a group, as `mqadmin consumerProgress` prints it."""

    topic: str
    broker: str
    queue_id: int
    broker_offset: int  # the queue's max offset (the next message's)
    consumer_offset: int  # the group's committed offset
    last_timestamp_ms: int  # store time of the last consumed message (0: none)

    @property
    def diff(self) -> int:
        return max(0, self.broker_offset - self.consumer_offset)


@dataclass(frozen=True)
class ConsumerClient:
    client_id: str
    address: str
    language: str
    version: int


@dataclass(frozen=True)
class SentMessage:
    msg_id: str
    offset_msg_id: str
    broker: str
    queue_id: int
    queue_offset: int


class RocketMQAdmin:
    """Admin requests to one RocketMQ cluster (use it in a `with`; connections are opened on first use)."""

    def __init__(self, name: str, namesrv: list[str], timeout_s: float = 10.0, tls: ssl.SSLContext | None = None,
                 access_key: str | None = None, secret_key: str | None = None):
        self.name = name
        self._namesrv = namesrv
        self._timeout_s = timeout_s
        self._tls = tls
        self._keys = (access_key, secret_key)
        self._connections: dict[str, Connection] = {}
        self._brokers: dict[str, str] | None = None

    @classmethod
    def from_cluster(cls, cluster: RocketMQCluster) -> "RocketMQAdmin":
        tls = None
        if cluster.tls:
            tls = ssl.create_default_context(cafile=cluster.ssl_ca_location)
        secret = cluster.secret_key.get_secret_value() if cluster.secret_key else None
        return cls(cluster.name, cluster.namesrv_addresses, cluster.request_timeout_s, tls, cluster.access_key, secret)

    def __enter__(self) -> "RocketMQAdmin":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    # --- connections ----------------------------------------------------------------------------

    def _connection(self, address: str) -> Connection:
        if address not in self._connections:
            self._connections[address] = Connection(address, self._timeout_s, self._tls, *self._keys)
        return self._connections[address]

    def _namesrv_call(self, code: int, fields: dict[str, Any] | None = None, what: str = "",
                      accept: tuple[int, ...] = (SUCCESS,)):
        problems = []
        for address in self._namesrv:
            try:
                return self._connection(address).call(code, fields, what=what, accept=accept)
            except UnreachableError as exc:
                self._connections.pop(address, None)
                problems.append(str(exc))
        raise UnreachableError(f"no name server of rocketmq cluster {self.name!r} answers: " + "; ".join(problems))

    def _broker_call(self, broker: str, code: int, fields: dict[str, Any] | None = None, body: bytes = b"",
                     what: str = "", accept: tuple[int, ...] = (SUCCESS,)):
        address = self.brokers().get(broker)
        if address is None:
            raise BrokerError(f"broker {broker!r} of rocketmq cluster {self.name!r} has no master online "
                              f"(online: {', '.join(sorted(self.brokers())) or 'none'})")
        connection = self._connection(address)
        try:
            return connection.call(code, fields, body, what=what, accept=accept)
        except UnreachableError:
            self._connections.pop(address, None)
            raise

    # --- cluster and topics ---------------------------------------------------------------------

    def brokers(self) -> dict[str, str]:
        """Broker name -> its master's address, from the name server (cached for this client)."""
        if self._brokers is None:
            info = self._namesrv_call(_GET_BROKER_CLUSTER_INFO, what="cluster info").json() or {}
            self._brokers = {name: data["brokerAddrs"][0] for name, data in (info.get("brokerAddrTable") or {}).items()
                             if 0 in (data.get("brokerAddrs") or {})}
        return self._brokers

    def broker_version(self, broker: str) -> str:
        """The broker's version, e.g. V5_3_3 (its runtime info)."""
        table = self._broker_call(broker, _GET_BROKER_RUNTIME_INFO, what="runtime info").json() or {}
        return (table.get("table") or {}).get("brokerVersionDesc", "unknown version")

    def queues(self, topic: str) -> list[tuple[str, int]]:
        """(broker, queue id) of each readable queue of a topic, from its route; NotFoundError if unknown."""
        response = self._namesrv_call(_GET_ROUTEINFO_BY_TOPIC, {"topic": topic}, what=f"route of {topic}",
                                      accept=(SUCCESS, TOPIC_NOT_EXIST))
        if response.code == TOPIC_NOT_EXIST:
            raise NotFoundError(f"topic {topic!r} does not exist in rocketmq cluster {self.name!r}")
        route = response.json() or {}
        return sorted((q["brokerName"], i) for q in route.get("queueDatas") or [] for i in range(q["readQueueNums"]))

    def topic_exists(self, topic: str) -> bool:
        try:
            self.queues(topic)
        except NotFoundError:
            return False
        return True

    def create_topic(self, topic: str, queues: int = 4, perm: int = _PERM_READ_WRITE) -> None:
        """Create (or update) a topic with `queues` read and write queues on every broker."""
        for broker in self.brokers():
            self._broker_call(broker, _UPDATE_AND_CREATE_TOPIC, {
                "topic": topic, "defaultTopic": "TBW102", "readQueueNums": queues, "writeQueueNums": queues,
                "perm": perm, "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0, "order": False},
                what=f"create topic {topic}")

    # --- groups ---------------------------------------------------------------------------------

    def groups(self) -> set[str]:
        """The subscription groups the brokers know (created by a consumer, or by updateSubGroup)."""
        names: set[str] = set()
        for broker in self.brokers():
            table = self._broker_call(broker, _GET_ALL_SUBSCRIPTIONGROUP_CONFIG, what="subscription groups").json()
            names.update((table or {}).get("subscriptionGroupTable") or {})
        return names

    def create_group(self, group: str, retry_max_times: int = 16) -> None:
        """Create (or update) a subscription group on every broker, like `mqadmin updateSubGroup`."""
        body = json.dumps({"groupName": group, "consumeEnable": True, "consumeFromMinEnable": True,
                           "consumeBroadcastEnable": True, "retryQueueNums": 1, "retryMaxTimes": retry_max_times,
                           "brokerId": 0, "whichBrokerWhenConsumeSlowly": 1, "notifyConsumerIdsChangedEnable": True,
                           "groupSysFlag": 0, "consumeTimeoutMinute": 15}).encode()
        for broker in self.brokers():
            self._broker_call(broker, _UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=body, what=f"create group {group}")

    def consumer_clients(self, group: str) -> list[ConsumerClient]:
        """The group's online consumers (their heartbeats reach the brokers); [] when none is online."""
        clients: dict[str, ConsumerClient] = {}
        for broker in self.brokers():
            response = self._broker_call(broker, _GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": group},
                                         what=f"consumers of {group}", accept=(SUCCESS, CONSUMER_NOT_ONLINE))
            for c in ((response.json() or {}).get("connectionSet") or []) if response.code == SUCCESS else []:
                clients[c["clientId"]] = ConsumerClient(c["clientId"], c.get("clientAddr", ""), c.get("language", ""),
                                                        c.get("version", 0))
        return sorted(clients.values(), key=lambda c: c.client_id)

    def progress(self, group: str, topic: str | None = None) -> list[QueueProgress]:
        """Per queue of the topics the group has offsets on (or of `topic`): broker offset, consumer
        offset, diff, as `mqadmin consumerProgress -g GROUP` reads them (GET_CONSUME_STATS)."""
        rows = []
        for broker in self.brokers():
            response = self._broker_call(broker, _GET_CONSUME_STATS, {"consumerGroup": group, "topic": topic or ""},
                                         what=f"consume stats of {group}",
                                         accept=(SUCCESS, SUBSCRIPTION_GROUP_NOT_EXIST, TOPIC_NOT_EXIST))
            if response.code != SUCCESS:
                continue
            for key, wrapper in ((response.json() or {}).get("offsetTable") or {}).items():
                queue = dict(key)
                rows.append(QueueProgress(queue["topic"], queue["brokerName"], int(queue["queueId"]),
                                          int(wrapper.get("brokerOffset", 0)), int(wrapper.get("consumerOffset", 0)),
                                          int(wrapper.get("lastTimestamp", 0))))
        return sorted(rows, key=lambda r: (r.topic, r.broker, r.queue_id))

    def consumer_offset(self, group: str, topic: str, broker: str, queue_id: int) -> int | None:
        """The group's committed offset of one queue, None when it has none."""
        response = self._broker_call(broker, _QUERY_CONSUMER_OFFSET,
                                     {"consumerGroup": group, "topic": topic, "queueId": queue_id},
                                     what=f"offset of {group} on {topic}:{queue_id}", accept=(SUCCESS, QUERY_NOT_FOUND))
        return int(response.fields["offset"]) if response.code == SUCCESS else None

    def reset_offset(self, group: str, topic: str, broker: str, queue_id: int, offset: int) -> None:
        """Reset the group's offset of one queue, as `mqadmin resetOffsetByTime` does on a 5.x broker (its
        server-side reset, INVOKE_BROKER_TO_RESET_OFFSET with the queue and offset): the broker then ignores
        consumers' commits of older positions until they pull from the new one, so online pull and pop
        consumers follow it. A plain commit (update_offset) after such a reset would be ignored."""
        self._broker_call(broker, _INVOKE_BROKER_TO_RESET_OFFSET,
                          {"topic": topic, "group": group, "queueId": queue_id, "offset": offset, "timestamp": -1,
                           "isForce": True}, what=f"reset offset of {group} on {topic}:{queue_id}")

    def update_offset(self, group: str, topic: str, broker: str, queue_id: int, offset: int) -> None:
        """Commit `offset` for the group on one queue, as a consumer commits what it consumed."""
        self._broker_call(broker, _UPDATE_CONSUMER_OFFSET,
                          {"consumerGroup": group, "topic": topic, "queueId": queue_id, "commitOffset": offset},
                          what=f"update offset of {group} on {topic}:{queue_id}")

    # --- queues ---------------------------------------------------------------------------------

    def max_offset(self, topic: str, broker: str, queue_id: int) -> int:
        return int(self._broker_call(broker, _GET_MAX_OFFSET, {"topic": topic, "queueId": queue_id},
                                     what=f"max offset of {topic}:{queue_id}").fields["offset"])

    def min_offset(self, topic: str, broker: str, queue_id: int) -> int:
        return int(self._broker_call(broker, _GET_MIN_OFFSET, {"topic": topic, "queueId": queue_id},
                                     what=f"min offset of {topic}:{queue_id}").fields["offset"])

    def offset_by_time(self, topic: str, broker: str, queue_id: int, timestamp_ms: int) -> int:
        """The offset of the queue's first message stored at or after the time (the max offset when none
        is), as the store answers `resetOffsetByTime`."""
        return int(self._broker_call(broker, _SEARCH_OFFSET_BY_TIMESTAMP,
                                     {"topic": topic, "queueId": queue_id, "timestamp": timestamp_ms},
                                     what=f"offset of {topic}:{queue_id} by time").fields["offset"])

    # --- messages -------------------------------------------------------------------------------

    def pull(self, topic: str, broker: str, queue_id: int, offset: int, count: int = 32,
             group: str = ADMIN_GROUP) -> tuple[list[StoredMessage], int]:
        """Up to `count` messages of a queue from `offset` (nothing is committed), and the next offset."""
        # sysFlag 4: the subscription is in the request (no consumer of the group needs to be online)
        response = self._broker_call(broker, _PULL_MESSAGE, {
            "consumerGroup": group, "topic": topic, "queueId": queue_id, "queueOffset": offset,
            "maxMsgNums": count, "sysFlag": 4, "commitOffset": 0, "suspendTimeoutMillis": 0,
            "subscription": "*", "subVersion": 0, "expressionType": "TAG"},
            what=f"pull {topic}:{queue_id}@{offset}",
            accept=(SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY, PULL_OFFSET_MOVED))
        next_offset = int(response.fields.get("nextBeginOffset", offset))
        if response.code != SUCCESS:
            return [], next_offset
        return decode_messages(response.body), next_offset

    def read_queue(self, topic: str, broker: str, queue_id: int, start: int, end: int,
                   group: str = ADMIN_GROUP) -> list[StoredMessage]:
        """Every message of a queue in [start, end) (pulled as `group`; nothing committed)."""
        messages: list[StoredMessage] = []
        offset, empty_answers = start, 0
        while offset < end and empty_answers < 2:
            batch, next_offset = self.pull(topic, broker, queue_id, offset, min(32, end - offset), group)
            messages.extend(m for m in batch if m.queue_offset < end)
            # The group's first pull after a server-side reset answers only where to go (once): ask again.
            empty_answers = empty_answers + 1 if not batch and next_offset <= offset else 0
            offset = max(offset, next_offset)
        return messages

    def read_message(self, topic: str, broker: str, queue_id: int, offset: int) -> StoredMessage | None:
        batch, _ = self.pull(topic, broker, queue_id, offset, 1)
        return next((m for m in batch if m.queue_offset == offset), None)

    def send(self, topic: str, body: bytes, properties: dict[str, str], broker: str | None = None,
             queue_id: int = 0, producer_group: str = ADMIN_GROUP, reconsume_times: int = 0) -> SentMessage:
        """Send one message to a queue of a topic (properties as RocketMQ names them: KEYS, TAGS, UNIQ_KEY...)."""
        broker = broker or sorted(self.brokers())[0]
        properties = {"WAIT": "true", **properties}
        response = self._broker_call(broker, _SEND_MESSAGE, {
            "producerGroup": producer_group, "topic": topic, "defaultTopic": "TBW102", "defaultTopicQueueNums": 4,
            "queueId": queue_id, "sysFlag": 0, "bornTimestamp": int(time.time() * 1000), "flag": 0,
            "properties": encode_properties(properties), "reconsumeTimes": reconsume_times, "unitMode": False,
            "batch": False}, body=body, what=f"send to {topic}")
        offset_id = response.fields.get("msgId", "")
        return SentMessage(msg_id=properties.get("UNIQ_KEY", offset_id), offset_msg_id=offset_id, broker=broker,
                           queue_id=int(response.fields.get("queueId", queue_id)),
                           queue_offset=int(response.fields.get("queueOffset", -1)))

    def send_to_dead_letters(self, group: str, message: StoredMessage, broker: str) -> None:
        """What a consumer does with a message it gives up on: CONSUMER_SEND_MSG_BACK with no more
        retries, so the broker stores it in %DLQ%<group> (keeping its id, topic and properties)."""
        self._broker_call(broker, _CONSUMER_SEND_MSG_BACK, {
            "offset": message.commitlog_offset, "group": group, "delayLevel": -1, "originMsgId": message.msg_id,
            "originTopic": message.topic, "unitMode": False, "maxReconsumeTimes": 0},
            what=f"send back to the dead letters of {group}")
