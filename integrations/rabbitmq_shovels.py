"""Moving a queue's backlog between clusters with dynamic shovels, and counting what arrived.

    move = QueueMove(vhost="/", queue="orders", shovel="runbook-move-orders-1a2b")
    before = queue_depth(standby_amqp_url, "/", "orders")
    start_shovel(standby_api, move, src_uri=vhost_uri(primary_amqp_url, "/"), dest_uri=local_uri("/"))
    states = wait_for_shovels(standby_api, [move], timeout_s=600, stall_s=30)
    moved = queue_depth(standby_amqp_url, "/", "orders") - before

The shovel is declared on the destination cluster (PUT /api/parameters/shovel/{vhost}/{name}),
reading the source over AMQP: if the source dies mid-move the shovel survives it and can be
stopped and counted. It acks each message at the source only once the destination confirmed it
(`ack-mode: on-confirm`), so nothing is lost; it stops after the queue length it measured when it
started (`src-delete-after: queue-length`) and then deletes itself, which is how "done" is seen.
A message confirmed by the destination whose ack never reached a dying source is delivered twice:
at most the shovel's prefetch per queue. Counts are exact: an AMQP passive declare, not the
management statistics (which are up to 5 s old).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions

from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_amqp import open_amqp

__all__ = ["PREFETCH", "QueueMove", "delete_shovel", "local_uri", "queue_depth", "shovel_state", "start_shovel",
           "wait_for_shovels", "close_counters"]

PREFETCH = 1000  # messages the shovel holds unconfirmed: also the most a dying source can duplicate
# How often a move looks whether its shovels are done: the end of a move is seen at most this late.
# One GET /api/shovels/{vhost} a poll (a few ms of the management API) while the shovels run.
POLL_S = 0.1


@dataclass(frozen=True)
class QueueMove:
    """One queue's backlog to move: from `queue` on the source to `dest_queue` (default: the same name)."""

    vhost: str
    queue: str
    shovel: str
    dest_queue: str | None = None

    @property
    def destination(self) -> str:
        return self.dest_queue or self.queue


def local_uri(vhost: str) -> str:
    """A shovel's URI for the node it runs on (a direct connection, no credentials), in `vhost`."""
    return "amqp:///" + quote(vhost, safe="")


def _path(move: QueueMove) -> str:
    return f"/api/parameters/shovel/{quote(move.vhost, safe='')}/{quote(move.shovel, safe='')}"


def start_shovel(host: RabbitManagement, move: QueueMove, *, src_uri: str, dest_uri: str,
                 prefetch: int = PREFETCH) -> None:
    """Declare the dynamic shovel on `host` (the cluster that runs it). The URIs may hold credentials:
    they go to the broker only, never into messages."""
    value = {
        "src-protocol": "amqp091", "src-uri": src_uri, "src-queue": move.queue,
        "dest-protocol": "amqp091", "dest-uri": dest_uri, "dest-queue": move.destination,
        "src-delete-after": "queue-length", "ack-mode": "on-confirm", "src-prefetch-count": prefetch,
        "reconnect-delay": 1,
    }
    host.send("PUT", _path(move), {"value": value})


def shovel_state(host: RabbitManagement, move: QueueMove) -> str | None:
    """'running', 'starting', 'terminated' (with its reason) as GET /api/shovels/{vhost} says; 'declared'
    when the parameter exists but the shovel is not listed yet; None when it is gone (done or deleted)."""
    listed = host.get_json(f"/api/shovels/{quote(move.vhost, safe='')}")
    for shovel in listed:
        if shovel.get("name") == move.shovel:
            state = shovel.get("state", "unknown")
            reason = shovel.get("reason")
            return f"{state}: {reason}" if state == "terminated" and reason else state
    declared = host.get_json(f"/api/parameters/shovel/{quote(move.vhost, safe='')}")
    return "declared" if any(p.get("name") == move.shovel for p in declared) else None


def delete_shovel(host: RabbitManagement, move: QueueMove) -> bool:
    """Delete the shovel; False if it was already gone."""
    try:
        host.send("DELETE", _path(move), not_found="gone")
    except BrokerError as exc:
        if str(exc).endswith(": gone"):
            return False
        raise
    return True


def wait_for_shovels(host: RabbitManagement, moves: list[QueueMove], *, timeout_s: float, stall_s: float,
                     progress: Callable[[], int] | None = None, poll_s: float = POLL_S) -> dict[str, str]:
    """Wait until every shovel has finished (deleted itself) and return {queue: outcome}:
    'done', or why it was given up: 'timed out after Ns' or 'stalled Ns: <last state>'. It returns as
    soon as the last shovel is seen gone (looking every `poll_s`), not one poll later.

    The shovels stall when none is running (e.g. the source died: they keep reconnecting) and
    `progress()` (a count that grows while messages arrive, e.g. the destination depth) has not
    grown for `stall_s`; given-up shovels are deleted, so nothing moves behind the caller's back.
    """
    outcomes: dict[str, str] = {}
    pending = {move.queue: move for move in moves}
    started = last_change = time.monotonic()
    last_count = progress() if progress else None
    states: dict[str, str | None] = {}
    while True:
        for queue, move in list(pending.items()):
            states[queue] = shovel_state(host, move)
            if states[queue] is None:
                outcomes[queue] = "done"
                del pending[queue]
        if not pending:
            break
        now = time.monotonic()
        running = any(states.get(q) == "running" for q in pending)
        if running:
            last_change = now  # a running shovel is moving or idle at its end; the timeout bounds the rest
        elif progress:
            count = progress()
            if count != last_count:
                last_count, last_change = count, now
        give_up = None
        if now - started > timeout_s:
            give_up = f"timed out after {timeout_s:g}s"
        elif not running and now - last_change > stall_s:
            give_up = f"stalled {stall_s:g}s"
        if give_up:
            for queue, move in pending.items():
                delete_shovel(host, move)
                outcomes[queue] = f"{give_up}: {states.get(queue)}"
            break
        time.sleep(poll_s)
    return outcomes


def queue_depth(amqp_url: str, vhost: str, queue: str, timeout_s: float = 10.0) -> int:
    """The exact number of ready messages in the queue now (AMQP passive declare).

    The connection is kept and reused by the next count on the same cluster and vhost within
    REUSE_S seconds (a move counts each queue several times), so counting costs one round trip, not
    a new connection. UnreachableError if the cluster does not answer; BrokerError if it refuses the
    vhost or has no such queue.
    """
    host = f"{urlsplit(amqp_url).hostname}:{urlsplit(amqp_url).port}"
    with _counters_lock:
        for attempt in (1, 2):  # a kept connection the broker has since closed is opened again, once
            connection = _counter(amqp_url, vhost, timeout_s, fresh=attempt == 2)
            try:
                channel = connection.channel()
                try:
                    return channel.queue_declare(queue, passive=True).method.message_count
                finally:
                    if channel.is_open:
                        channel.close()
            except pika.exceptions.ChannelClosedByBroker as exc:
                raise BrokerError(f"queue {queue!r} in vhost {vhost!r} at {host}: {exc.reply_text}") from None
            except (pika.exceptions.AMQPError, OSError) as exc:
                _forget_counter(amqp_url, vhost)
                if attempt == 2:
                    raise UnreachableError(f"rabbitmq at {host} did not answer: {type(exc).__name__}") from None
    raise AssertionError("unreachable")  # pragma: no cover


REUSE_S = 20.0  # well under the heartbeat timeout: a kept connection does not service heartbeats
_counters: dict[tuple[str, str], pika.BlockingConnection] = {}
_counters_used: dict[tuple[str, str], float] = {}
_counters_lock = threading.Lock()


def _counter(amqp_url: str, vhost: str, timeout_s: float, fresh: bool) -> pika.BlockingConnection:
    """The kept counting connection to (cluster, vhost), or a new one, marked as used now; connections
    idle past REUSE_S are closed first. Called with _counters_lock held."""
    now = time.monotonic()
    for key in [k for k, used in _counters_used.items() if now - used > REUSE_S]:
        _forget_counter(*key)
    key = (amqp_url, vhost)
    if fresh or key not in _counters or not _counters[key].is_open:
        _forget_counter(amqp_url, vhost)
        _counters[key] = open_amqp(amqp_url, vhost, "mq-runbooks queue_depth", timeout_s)
    _counters_used[key] = now
    return _counters[key]


def _forget_counter(amqp_url: str, vhost: str) -> None:
    """Close a kept connection, quietly: the broker may have closed it already (e.g. the vhost was
    deleted), which pika would log as an error although nothing is lost."""
    connection = _counters.pop((amqp_url, vhost), None)
    _counters_used.pop((amqp_url, vhost), None)
    if connection is not None and connection.is_open:
        pika_log = logging.getLogger("pika")
        level = pika_log.level
        pika_log.setLevel(logging.CRITICAL)
        try:
            connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass  # it was only kept for reuse
        finally:
            pika_log.setLevel(level)


def _drop_inherited_counters() -> None:
    """In a forked child: the parent's connections are the parent's (closing them would close its sockets)."""
    global _counters_lock
    _counters.clear()
    _counters_used.clear()
    _counters_lock = threading.Lock()


os.register_at_fork(after_in_child=_drop_inherited_counters)


@atexit.register
def close_counters() -> None:
    """Close the kept counting connections (at exit, or by a caller that is done counting)."""
    with _counters_lock:
        for key in list(_counters):
            _forget_counter(*key)
