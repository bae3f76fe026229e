"""integrations/redis_streams.py against the real Redis primary (and its replica) of the local stack."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from mq_runbooks.base.clusters import RedisCluster
from mq_runbooks.base.errors import NotFoundError, PreconditionError, UnreachableError, UsageError
from mq_runbooks.integrations.redis_streams import (
    PROVENANCE_FIELDS, RedisStreams, UnknownGroupError, UnknownStreamError,
)
from tests.integrations.test_rabbitmq import eventually


@pytest.fixture
def primary(clusters):
    with RedisStreams.from_cluster(clusters.redis_cluster("primary")) as streams:
        yield streams


@pytest.fixture
def raw(clusters):
    """A plain redis-py client of the primary, to play the applications' part (XADD, XREADGROUP)."""
    client = clusters.redis_cluster("primary").client()
    yield client
    client.close()


@pytest.fixture
def stream(raw, unique):
    """A fresh stream name; the stream, its dead-letter stream and marker are deleted afterwards."""
    name = unique("orders")
    yield name
    raw.delete(name, f"{name}:dlq", f"{name}:dlq:copies")


def add(raw, stream: str, count: int, **fields: str) -> list[str]:
    pipe = raw.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {"n": str(i), **fields})
    return [entry_id.decode() for entry_id in pipe.execute()]


def read(raw, stream: str, group: str, consumer: str, count: int) -> list[str]:
    """What `consumer` gets from XREADGROUP '>' (and never acknowledges)."""
    reply = raw.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [entry_id.decode() for _, entries in reply for entry_id, _ in entries]


def test_pending_entries_of_a_consumer_that_read_and_never_acked(primary, raw, stream):
    ids = add(raw, stream, 2500)  # more than one XPENDING page
    raw.xgroup_create(stream, "billing", id="0")
    assert read(raw, stream, "billing", "billing-1", 2400) == ids[:2400]

    pending = primary.pending(stream, "billing", consumer="billing-1")
    assert [p.id for p in pending] == ids[:2400]
    assert {(p.consumer, p.delivery_count) for p in pending} == {("billing-1", 1)}
    assert len(primary.pending(stream, "billing", limit=1500)) == 1500
    group = primary.group(stream, "billing")
    assert (group.pending, group.lag, group.last_delivered_id, group.entries_read) == (2400, 100, ids[2399], 2400)
    [consumer] = primary.consumers(stream, "billing")
    assert (consumer.name, consumer.pending) == ("billing-1", 2400)
    info = primary.stream_info(stream)
    assert (info.length, info.first_entry_id, info.last_entry_id, info.entries_added, info.groups) == (
        2500, ids[0], ids[-1], 2500, 1)

    # The idle filter: billing-1's entries age while billing-2 just read its own.
    eventually(lambda: len(primary.pending(stream, "billing", min_idle_ms=1000)) == 2400 or None,
               "billing-1's 2,400 entries idle for 1 s", timeout_s=10)
    fresh = read(raw, stream, "billing", "billing-2", 100)
    idle = primary.pending(stream, "billing", min_idle_ms=1000)
    assert [p.id for p in idle] == ids[:2400] and not set(fresh) & {p.id for p in idle}
    assert len(primary.pending(stream, "billing")) == 2500
    with pytest.raises(UsageError, match="min_idle_ms"):
        primary.pending(stream, "billing", min_idle_ms=-1)


def test_claim_200_pending_entries_to_another_consumer(primary, raw, stream):
    ids = add(raw, stream, 200)
    raw.xgroup_create(stream, "billing", id="0")
    read(raw, stream, "billing", "dead-1", 200)

    # An entry must be idle at least min_idle_ms: none is idle for a day, so nothing moves.
    untouched = primary.claim(stream, "billing", ids, "healthy-1", min_idle_ms=86_400_000)
    assert untouched.claimed == [] and untouched.not_claimed == ids

    result = primary.claim(stream, "billing", ids + ["1-1"], "healthy-1", batch_size=64)
    assert result.claimed == ids and result.not_claimed == ["1-1"]
    owned = primary.pending(stream, "billing", consumer="healthy-1")
    assert [p.id for p in owned] == ids
    assert {p.delivery_count for p in owned} == {1}  # a claim is not a delivery
    by_name = {c.name: c.pending for c in primary.consumers(stream, "billing")}
    assert by_name == {"dead-1": 0, "healthy-1": 200}
    # The healthy consumer reads them from its pending list, then acknowledges.
    history = raw.xreadgroup("billing", "healthy-1", {stream: "0"}, count=500)
    assert [i.decode() for i, _ in history[0][1]] == ids
    assert primary.ack(stream, "billing", ids) == 200
    assert primary.group(stream, "billing").pending == 0


def test_dead_letter_copy_is_made_exactly_once_and_reaches_the_replica(primary, raw, stream, clusters):
    raw.xgroup_create(stream, "billing", id="0", mkstream=True)
    # binary value and a repeated field name: the copy must keep both exactly
    poison = raw.execute_command("XADD", stream, "*", "body", b"\xff\x00poison", "body", "again").decode()
    read(raw, stream, "billing", "billing-1", 1)

    first = primary.dead_letter(stream, "billing", poison, consumer="billing-1", delivery_count=7)
    second = primary.dead_letter(stream, "billing", poison, consumer="billing-1", delivery_count=8)
    assert first.created and not second.created
    assert first.copy_id == second.copy_id and first.dead_letter_stream == f"{stream}:dlq"
    assert first.replicas_confirmed == 1 and second.replicas_confirmed == 1  # the stack's replica

    dead_letters = f"{stream}:dlq"
    assert primary.count_between(dead_letters) == 1
    copy = primary.entries(dead_letters, [first.copy_id])[first.copy_id]
    provenance = [stream, poison, "billing", "billing-1", "7"]
    expected = [(b"body", b"\xff\x00poison"), (b"body", b"again")]
    expected += [(name.encode(), value.encode()) for name, value in zip(PROVENANCE_FIELDS, provenance)]
    assert list(copy.fields) == expected
    # WAIT confirmed it: the replica has it now, not eventually.
    with RedisStreams.from_cluster(clusters.redis_cluster("replica")) as replica:
        assert replica.entries(dead_letters, [first.copy_id])[first.copy_id] == copy
    # The source entry is untouched (acknowledging it is the caller's next step).
    assert primary.group(stream, "billing").pending == 1
    with pytest.raises(PreconditionError, match="no longer in stream"):
        primary.dead_letter(stream, "billing", "1-1", consumer="billing-1", delivery_count=1)


def test_delete_consumer_is_refused_while_it_holds_entries(primary, raw, stream):
    ids = add(raw, stream, 3)
    raw.xgroup_create(stream, "billing", id="0")
    read(raw, stream, "billing", "dead-1", 3)
    with pytest.raises(PreconditionError, match="'dead-1'.* still holds 3 pending entries"):
        primary.delete_consumer(stream, "billing", "dead-1")
    assert [c.name for c in primary.consumers(stream, "billing")] == ["dead-1"]
    with pytest.raises(NotFoundError, match="no consumer 'dead-2'; did you mean 'dead-1'"):
        primary.delete_consumer(stream, "billing", "dead-2")

    primary.claim(stream, "billing", ids, "healthy-1")
    primary.delete_consumer(stream, "billing", "dead-1")
    assert [c.name for c in primary.consumers(stream, "billing")] == ["healthy-1"]
    assert primary.group(stream, "billing").pending == 3  # the claimed entries stay with healthy-1


def test_set_last_delivered_by_id_and_by_time(primary, raw, stream):
    ids = [raw.xadd(stream, {"n": str(t)}, id=f"{t}-0").decode() for t in (1000, 2000, 3000, 4000, 5000)]
    raw.xgroup_create(stream, "billing", id="$")
    assert read(raw, stream, "billing", "c", 10) == []

    group = primary.set_last_delivered(stream, "billing", "3000-0")
    assert (group.last_delivered_id, group.entries_read, group.lag) == ("3000-0", 3, 2)
    assert read(raw, stream, "billing", "c", 10) == ["4000-0", "5000-0"]

    # By time: everything from 2000 ms on is delivered again.
    assert primary.last_id_before(stream, 2000) == "1000-0"
    assert primary.last_id_before(stream, 1000) == "0-0"
    assert primary.entry_id_at(stream, 2500) == "3000-0" and primary.entry_id_at(stream, 9000) is None
    assert primary.count_between(stream, "(1000-0", "+") == 4 and primary.count_between(stream) == 5
    group = primary.set_last_delivered(stream, "billing", primary.last_id_before(stream, 2000))
    assert (group.last_delivered_id, group.entries_read, group.lag) == ("1000-0", 1, 4)
    assert read(raw, stream, "billing", "c", 10) == ids[1:]

    group = primary.set_last_delivered(stream, "billing", "$")
    assert (group.last_delivered_id, group.lag) == ("5000-0", 0)
    with pytest.raises(UsageError, match="'yesterday' is not a stream entry id"):
        primary.set_last_delivered(stream, "billing", "yesterday")


def test_unknown_stream_and_group_name_what_exists(primary, raw, stream):
    raw.xgroup_create(stream, "billing", id="0", mkstream=True)
    with pytest.raises(UnknownStreamError) as missing:
        primary.stream_info(stream + "x")
    assert f"no stream '{stream}x'; did you mean '{stream}'" in str(missing.value)
    assert stream in missing.value.known
    with pytest.raises(UnknownStreamError):
        primary.pending(stream + "x", "billing")
    for call in (lambda: primary.entries(stream + "x", ["1-1"]), lambda: primary.count_between(stream + "x"),
                 lambda: primary.count_between(stream + "x", "(1-1", "+"), lambda: primary.entry_id_at(stream + "x", 0),
                 lambda: primary.last_id_before(stream + "x", 0)):
        with pytest.raises(UnknownStreamError):
            call()
    assert primary.count_between(stream) == 0 and primary.entry_id_at(stream, 0) is None  # empty, but there

    with pytest.raises(UnknownGroupError) as wrong:
        primary.consumers(stream, "biling")
    assert "no consumer group 'biling'; did you mean 'billing'? (groups: billing)" in str(wrong.value)
    assert wrong.value.known == ["billing"]
    for call in (lambda: primary.pending(stream, "biling"), lambda: primary.group(stream, "biling"),
                 lambda: primary.claim(stream, "biling", ["1-1"], "c"),
                 lambda: primary.set_last_delivered(stream, "biling", "0-0")):
        with pytest.raises(UnknownGroupError, match="did you mean 'billing'"):
            call()

    raw.set(stream + ":text", "not a stream")
    try:
        with pytest.raises(PreconditionError, match="is a string, not a stream"):
            primary.pending(stream + ":text", "billing")
    finally:
        raw.delete(stream + ":text")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_redis_down_is_one_line_within_the_timeout():
    port = closed_port()
    cluster = RedisCluster(name="gone", url=SecretStr(f"redis://:hunter2@127.0.0.1:{port}/0"), socket_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(UnreachableError) as down, RedisStreams.from_cluster(cluster) as streams:
        streams.health()
    message = str(down.value)
    assert time.monotonic() - started < 5  # one attempt, no retries with backoff
    assert "\n" not in message and "hunter2" not in message
    assert message.startswith(f"redis 'gone' (redis://:***@127.0.0.1:{port}/0) is unreachable (timeout 1s)")


def test_a_server_that_never_answers_times_out_as_unreachable():
    with socket.socket() as silent:  # accepts connections (the backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        cluster = RedisCluster(name="mute", url=SecretStr(f"redis://127.0.0.1:{port}/0"), socket_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="is unreachable .timeout 0.5s.") as down:
            with RedisStreams.from_cluster(cluster) as streams:
                streams.pending("orders", "billing")
        assert time.monotonic() - started < 5 and "\n" not in str(down.value)


def test_an_unknown_stream_suggests_only_streams_sharing_its_prefix(primary, raw, unique):
    """Issue 27 (frictions): a server is shared; an unknown stream names close streams of its own
    namespace, never a server-wide list of other teams' streams."""
    team, other = unique("teamb"), unique("secret-team")
    mine, theirs = f"{team}:orders", f"{other}:payments"
    for name in (mine, theirs):
        raw.xadd(name, {"k": "v"})
    try:
        with pytest.raises(UnknownStreamError) as missing:
            primary.stream_info(f"{team}:ordres")
        message = str(missing.value)
        assert f"did you mean '{mine}'" in message and f"(streams named {team}:*: {mine})" in message
        assert other not in message and missing.value.known == [mine]
        with pytest.raises(UnknownStreamError) as bare:
            primary.stream_info(unique("nosuchstream").replace("-", ""))
        assert other not in str(bare.value) and team not in str(bare.value) and bare.value.known == []
    finally:
        raw.delete(mine, theirs)


def test_plain_keys_with_their_ttl(primary, raw, unique):
    key = unique("runbook-flag")
    try:
        assert primary.key(key) is None
        assert primary.set_key(key, "on", ttl_ms=600_000) is None, "nothing was there before"
        now = primary.key(key)
        assert now.value == b"on" and 0 < now.ttl_ms <= 600_000
        before = primary.set_key(key, "off")
        assert (before.value, before.ttl_ms is not None) == (b"on", True), "what it replaced, for a snapshot"
        assert primary.key(key).ttl_ms is None, "no ttl_ms: it never expires"
        assert primary.delete_key(key).value == b"off" and primary.key(key) is None
        assert primary.delete_key(key) is None, "deleting what is gone is no error"
        with pytest.raises(UsageError):
            primary.set_key(key, "x", ttl_ms=0)
    finally:
        raw.delete(key)


def test_the_readme_states_how_redis_counts_idle_time(primary, raw, stream):
    """The README's caveat is what the stack's Redis does: before 7.2 a read that returns nothing
    leaves a consumer's idle time growing (only idle times that grow are compared: no timing)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "Before Redis 7.2 (the stack runs 7.0) a read that returns nothing" in readme
    if primary.server_version() >= (7, 2):
        pytest.skip("the stack's Redis is 7.2 or later: every attempted read resets idle there")
    raw.xgroup_create(stream, "billing", id="$", mkstream=True)
    raw.xgroup_createconsumer(stream, "billing", "quiet")
    eventually(lambda: primary.consumers(stream, "billing")[0].idle_ms >= 300 or None, "idle 300 ms")
    raw.xreadgroup("billing", "quiet", {stream: ">"}, count=1)  # an empty read
    assert primary.consumers(stream, "billing")[0].idle_ms >= 300, "an empty read did not reset it"
