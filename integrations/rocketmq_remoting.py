"""RocketMQ's remoting protocol, the one its name servers and brokers speak to `mqadmin` and every Java
client: what integrations/rocketmq.py needs to send admin requests without a JVM.

A frame is `int32 length | int32 (serialize type << 24 | header length) | header | body`, big-endian;
the header is JSON (`code`, `opaque`, `flag`, `extFields`, ...), the body JSON or binary (messages).
A response has flag bit 0 set, the request's opaque, `code` 0 for success and a `remark` otherwise.
The brokers' JSON comes from fastjson, which writes maps keyed by objects with those objects as keys
(`{{"brokerName":"b","queueId":0,"topic":"t"}:{...}}`) and numbers as bare keys: `loads` reads that.
Messages in a pull or view answer are in the store's binary layout: `decode_messages`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from mq_runbooks.base.errors import BrokerError, UnreachableError

__all__ = ["Connection", "Response", "RemotingError", "StoredMessage", "decode_messages", "loads",
           "encode_properties", "decode_properties"]

# Response codes (org.apache.rocketmq.remoting.protocol.ResponseCode) the admin requests answer with.
SUCCESS = 0
TOPIC_NOT_EXIST = 17
PULL_NOT_FOUND = 19
PULL_RETRY_IMMEDIATELY = 20
PULL_OFFSET_MOVED = 21
QUERY_NOT_FOUND = 22
SUBSCRIPTION_GROUP_NOT_EXIST = 26
CONSUMER_NOT_ONLINE = 206

_NAME_VALUE = "\x01"
_PROPERTY = "\x02"
_MAGIC_V1 = -626843481  # topic length in 1 byte
_MAGIC_V2 = -626843477  # topic length in 2 bytes
_BORNHOST_V6 = 1 << 4
_STOREHOST_V6 = 1 << 5
_COMPRESSED = 1


class RemotingError(BrokerError):
    """A name server or broker answered a request with an error code."""

    def __init__(self, code: int, remark: str, request: str):
        super().__init__(f"{request}: {remark or 'error'} (code {code})")
        self.code = code
        self.remark = remark


@dataclass(frozen=True)
class Response:
    code: int
    remark: str
    fields: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return loads(self.body) if self.body else None


@dataclass(frozen=True)
class StoredMessage:
    """A message as the store holds it (a pull or view-by-offset answer)."""

    topic: str
    queue_id: int
    queue_offset: int
    commitlog_offset: int
    store_host: str
    born_ms: int
    stored_ms: int
    reconsume_times: int
    body: bytes
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def offset_msg_id(self) -> str:
        """The broker's id of it (`queryMsgById` takes it): store host, port and commit log offset in hex."""
        host, _, port = self.store_host.rpartition(":")
        packed = socket.inet_aton(host) + struct.pack(">iq", int(port), self.commitlog_offset)
        return packed.hex().upper()

    @property
    def msg_id(self) -> str:
        """The client's id (UNIQ_KEY), what consumers and the dashboard show; the broker's id without one."""
        return self.properties.get("UNIQ_KEY") or self.offset_msg_id

    @property
    def keys(self) -> str:
        return self.properties.get("KEYS", "")

    @property
    def tag(self) -> str:
        return self.properties.get("TAGS", "")


class Connection:
    """One TCP connection to a name server or broker; `call` sends a request and waits for its answer.
    ACL (access key and secret) signs each request like RocketMQ's ACL 1.0 clients do."""

    def __init__(self, address: str, timeout_s: float, tls: ssl.SSLContext | None = None,
                 access_key: str | None = None, secret_key: str | None = None):
        host, _, port = address.rpartition(":")
        self.address = address
        self._opaque = 0
        self._keys = (access_key, secret_key) if access_key and secret_key else None
        try:
            raw = socket.create_connection((host, int(port)), timeout=timeout_s)
        except OSError as exc:
            raise UnreachableError(f"RocketMQ at {address} does not answer ({exc.strerror or exc})") from None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket = tls.wrap_socket(raw, server_hostname=host) if tls else raw

    def close(self) -> None:
        self._socket.close()

    def call(self, code: int, fields: dict[str, Any] | None = None, body: bytes = b"",
             what: str = "request", accept: tuple[int, ...] = (SUCCESS,)) -> Response:
        """Send request `code` with header fields and body; RemotingError unless the answer's code is in `accept`."""
        self._opaque += 1
        ext = {k: _text(v) for k, v in (fields or {}).items() if v is not None}
        if self._keys:
            ext["AccessKey"] = self._keys[0]
            signed = "".join(ext[k] for k in sorted(ext)).encode() + body
            ext["Signature"] = base64.b64encode(hmac.new(self._keys[1].encode(), signed, hashlib.sha1).digest()).decode()
        header = json.dumps({"code": code, "language": "PYTHON", "version": 0, "opaque": self._opaque, "flag": 0,
                             "extFields": ext, "serializeTypeCurrentRPC": "JSON"}).encode()
        try:
            self._socket.sendall(struct.pack(">ii", 4 + len(header) + len(body), len(header)) + header + body)
            while True:
                (length,) = struct.unpack(">i", self._read(4))
                frame = self._read(length)
                header_length = struct.unpack(">i", frame[:4])[0] & 0xFFFFFF
                answer = json.loads(frame[4:4 + header_length])
                if answer.get("opaque") == self._opaque:
                    break
        except (OSError, struct.error) as exc:
            raise UnreachableError(f"RocketMQ at {self.address} stopped answering {what} ({exc})") from None
        response = Response(code=answer.get("code", -1), remark=answer.get("remark") or "",
                            fields=answer.get("extFields") or {}, body=frame[4 + header_length:])
        if response.code not in accept:
            raise RemotingError(response.code, response.remark, f"{what} at {self.address}")
        return response

    def _read(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self._socket.recv(size - len(chunks))
            if not chunk:
                raise OSError("connection closed")
            chunks += chunk
        return bytes(chunks)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- fastjson's JSON ------------------------------------------------------------------------------

class _Key(tuple):
    """An object used as a map key, as sorted (name, value) pairs; `dict(key)` gives it back."""


def loads(data: bytes | str) -> Any:
    """Parse fastjson output: standard JSON plus objects and bare numbers as keys (keys that are objects
    come back as `_Key` tuples of their sorted items, numbers as ints)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    value, end = _value(text, _skip(text, 0))
    return value


_DECODER = json.JSONDecoder()


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _value(text: str, at: int) -> tuple[Any, int]:
    if text[at] == "{":
        result: dict[Any, Any] = {}
        at = _skip(text, at + 1)
        if text[at] == "}":
            return result, at + 1
        while True:
            key, at = _value(text, at)
            if isinstance(key, dict):
                key = _Key(sorted(key.items()))
            at = _skip(text, at)
            if text[at] != ":":
                raise ValueError(f"expected ':' at {at}")
            item, at = _value(text, _skip(text, at + 1))
            result[key] = item
            at = _skip(text, at)
            if text[at] == ",":
                at = _skip(text, at + 1)
            elif text[at] == "}":
                return result, at + 1
            else:
                raise ValueError(f"expected ',' or '}}' at {at}")
    if text[at] == "[":
        items: list[Any] = []
        at = _skip(text, at + 1)
        if text[at] == "]":
            return items, at + 1
        while True:
            item, at = _value(text, at)
            items.append(item)
            at = _skip(text, at)
            if text[at] == ",":
                at = _skip(text, at + 1)
            elif text[at] == "]":
                return items, at + 1
            else:
                raise ValueError(f"expected ',' or ']' at {at}")
    return _DECODER.raw_decode(text, at)


# --- messages ------------------------------------------------------------------------------------

def encode_properties(properties: dict[str, str]) -> str:
    return "".join(f"{k}{_NAME_VALUE}{v}{_PROPERTY}" for k, v in properties.items())


def decode_properties(text: str) -> dict[str, str]:
    pairs = (item.split(_NAME_VALUE, 1) for item in text.split(_PROPERTY) if _NAME_VALUE in item)
    return {name: value for name, value in pairs}


def decode_messages(data: bytes) -> list[StoredMessage]:
    """The messages of a pull or view answer, in the store's layout (MessageDecoder's order)."""
    messages = []
    at = 0
    while at + 8 <= len(data):
        size, magic = struct.unpack_from(">ii", data, at)
        record = memoryview(data)[at:at + size]
        at += size
        pos = 12
        queue_id, _flag, queue_offset, commitlog_offset, sys_flag, born_ms = struct.unpack_from(">iiqqiq", record, pos)
        pos += 4 + 4 + 8 + 8 + 4 + 8
        pos += (16 if sys_flag & _BORNHOST_V6 else 4) + 4
        (stored_ms,) = struct.unpack_from(">q", record, pos)
        pos += 8
        host_length = 16 if sys_flag & _STOREHOST_V6 else 4
        host = socket.inet_ntop(socket.AF_INET6 if host_length == 16 else socket.AF_INET, bytes(record[pos:pos + host_length]))
        (store_port,) = struct.unpack_from(">i", record, pos + host_length)
        pos += host_length + 4
        reconsume_times, _prepared, body_length = struct.unpack_from(">iqi", record, pos)
        pos += 4 + 8 + 4
        body = bytes(record[pos:pos + body_length])
        pos += body_length
        if sys_flag & _COMPRESSED:
            body = zlib.decompress(body)
        if magic == _MAGIC_V2:
            (topic_length,) = struct.unpack_from(">h", record, pos)
            pos += 2
        else:
            topic_length = record[pos]
            pos += 1
        topic = bytes(record[pos:pos + topic_length]).decode()
        pos += topic_length
        (properties_length,) = struct.unpack_from(">h", record, pos)
        pos += 2
        properties = decode_properties(bytes(record[pos:pos + properties_length]).decode())
        messages.append(StoredMessage(topic=topic, queue_id=queue_id, queue_offset=queue_offset,
                                      commitlog_offset=commitlog_offset, store_host=f"{host}:{store_port}",
                                      born_ms=born_ms, stored_ms=stored_ms, reconsume_times=reconsume_times,
                                      body=body, properties=properties))
    return messages
