"""integrations/artemis*.py against the real Artemis pair of the local stack: Jolokia reads and
operations, paged listing past Artemis' 200-message browse limit, moves by id and by filter, the
AMQP client, and every error kind (unknown names, a rejected filter, a refused login, a dead port)."""
from __future__ import annotations

import pytest

from mq_runbooks.base.errors import BrokerError, NotFoundError, UnreachableError
from mq_runbooks.integrations.artemis import ArtemisManagement, ArtemisNotFound
from mq_runbooks.integrations.artemis_messages import InvalidFilter, count, list_messages, move, move_matching, retry
from mq_runbooks.integrations.artemis_amqp import AmqpSession
from tests.artemis_support import consume_all, dead_letter, ids_in, produce, purge_dlq, remove_queues, wait_for


@pytest.fixture
def primary(clusters):
    return clusters.artemis_cluster("primary")


@pytest.fixture
def queues(primary, unique):
    """unique queue names for a test; the queues and their dead letters are removed afterwards."""
    made = []

    def make(prefix):
        made.append(unique(prefix))
        return made[-1]

    yield make
    for queue in made:
        purge_dlq(primary, f"_AMQ_ORIG_QUEUE = '{queue}'")
    remove_queues(primary, *made)


def test_the_pair_reports_its_ha_roles(clusters):
    with ArtemisManagement.from_cluster(clusters.artemis_cluster("primary")) as artemis:
        primary = artemis.broker()
    with ArtemisManagement.from_cluster(clusters.artemis_cluster("backup")) as artemis:
        backup = artemis.broker()
    assert (primary.name, primary.version, primary.active, primary.backup) == ("artemis-primary", "2.40.0", True, False)
    assert primary.replica_sync and primary.role == "active, backup in sync"
    assert (backup.name, backup.active, backup.backup, backup.replica_sync) == ("artemis-backup", False, True, True)
    assert backup.role == "backup, in sync" and "Replication" in backup.ha_policy


def test_queue_address_settings_and_consumers(primary, queues):
    queue = queues("orders")
    produce(primary, queue, [f"m{i}" for i in range(30)])
    with ArtemisManagement.from_cluster(primary) as artemis, AmqpSession.from_cluster(primary, "slow") as consumer:
        state = artemis.queue(queue)
        assert (state.address, state.routing_type, state.message_count, state.consumer_count) == (queue, "ANYCAST", 30, 0)
        assert state.messages_added == 30 and state.dead_letter_address == "DLQ"
        address = artemis.address(queue)
        assert address.queue_names == (queue,) and address.number_of_messages == 30 and not address.paging
        assert address.size_bytes > 0
        settings = artemis.address_settings(queue)
        assert settings.address_full_policy == "PAGE" and settings.max_size_bytes == -1
        assert settings.dead_letter_address == "DLQ"
        consumer.subscribe(queue)  # takes all 30, settles none
        assert consumer.held(at_least=30, wait_s=20) == 30
        seen = wait_for(lambda: [c for c in artemis.consumers(queue) if c.delivering_count == 30],
                        what="the consumer holding 30 deliveries")
        assert seen[0].protocol == "AMQP" and "127.0.0.1" in (seen[0].remote_address or "")
        assert seen[0].session_id and seen[0].client_id.startswith("slow-") and seen[0].user == "admin"
        assert artemis.queue(queue).delivering_count == 30
    # its session closed without acking: Artemis put all 30 back
    assert sorted(consume_all(primary, queue, 30)) == sorted(f"m{i}" for i in range(30))


def test_listing_pages_past_the_browse_limit_and_moves_each_message_once(primary, queues):
    orders, billing = queues("orders"), queues("billing")
    produce(primary, orders, [f"o{i}" for i in range(450)])
    produce(primary, billing, [f"b{i}" for i in range(50)])
    assert dead_letter(primary, orders) == 450 and dead_letter(primary, billing) == 50
    with ArtemisManagement.from_cluster(primary) as artemis:
        dead = list_messages(artemis, "DLQ", f"_AMQ_ORIG_QUEUE = '{orders}'")
        assert len(dead) == 450, "more than Artemis' 200-message browse page"
        assert {m.original_queue for m in dead} == {orders} and {m.original_address for m in dead} == {orders}
        assert sorted(m.properties["msg_id"] for m in dead) == sorted(f"o{i}" for i in range(450))
        assert count(artemis, "DLQ", f"_AMQ_ORIG_QUEUE = '{orders}'") == 450

        ids = [m.message_id for m in dead[:10]]
        assert set(retry(artemis, "DLQ", ids).values()) == {True}
        assert set(retry(artemis, "DLQ", ids).values()) == {False}, "a retried id is gone: never moved twice"
        moved = move_matching(artemis, "DLQ", f"_AMQ_ORIG_QUEUE = '{orders}'", orders, limit=300)
        assert moved == 300 and artemis.queue(orders).message_count == 310
        parking = queues("parking")
        assert artemis.create_queue(parking) and not artemis.create_queue(parking)
        billing_ids = [m.message_id for m in list_messages(artemis, "DLQ", f"_AMQ_ORIG_QUEUE = '{billing}'")]
        assert sum(move(artemis, "DLQ", billing_ids, parking).values()) == 50
    assert len(ids_in(primary, "DLQ", f"_AMQ_ORIG_QUEUE = '{orders}'")) == 140
    received = consume_all(primary, orders, 310)
    assert len(received) == len(set(received)) == 310
    assert sorted(ids_in(primary, parking)) == sorted(f"b{i}" for i in range(50))


def test_errors_are_the_projects_kinds(primary, clusters, silent_port):
    with ArtemisManagement.from_cluster(primary) as artemis:
        with pytest.raises(ArtemisNotFound, match="has no queue named 'no-such-queue'") as caught:
            artemis.queue("no-such-queue")
        assert isinstance(caught.value, NotFoundError)
        with pytest.raises(ArtemisNotFound, match="has no address named 'no-such-address'"):
            artemis.address("no-such-address")
        with pytest.raises(InvalidFilter, match="Artemis rejects the filter 'colour = = 1'"):
            list_messages(artemis, "DLQ", "colour = = 1")
    wrong = primary.model_copy(update={"password": primary.password.__class__("wrong")})
    with ArtemisManagement.from_cluster(wrong) as artemis, pytest.raises(BrokerError, match="refused the request"):
        artemis.broker()
    with pytest.raises(BrokerError, match="refused the connection"):
        AmqpSession.from_cluster(wrong)
    dead = primary.model_copy(update={"management_url": "http://127.0.0.1:1/console/jolokia", "request_timeout_s": 2})
    with ArtemisManagement.from_cluster(dead) as artemis, pytest.raises(UnreachableError) as down:
        artemis.broker()
    assert "\n" not in str(down.value) and "artemis cluster 'primary'" in str(down.value)
    silent = primary.model_copy(update={"management_url": f"http://127.0.0.1:{silent_port}/console/jolokia",
                                        "request_timeout_s": 1})
    with ArtemisManagement.from_cluster(silent) as artemis, pytest.raises(UnreachableError, match="within 1s"):
        artemis.broker()
