"""Definitions copied from the real primary RabbitMQ to the real standby, and read back there."""
from __future__ import annotations

import uuid

import pytest

from mq_runbooks.base.errors import BrokerError, PreconditionError
from mq_runbooks.integrations.rabbitmq_amqp import amqp_check, vhost_uri
from mq_runbooks.integrations.rabbitmq_definitions import (
    compare, export_definitions, import_definitions, read_definitions, verify_definitions,
)
from tests.rabbitmq_failover_support import FULL, amqp_url, api, scratch_vhost


@pytest.fixture
def pair(clusters):
    return clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")


def declare_orders(rabbit, vhost):
    """A topic exchange, a durable queue with arguments, a binding and a policy."""
    rabbit.send("PUT", f"/api/exchanges/{vhost}/events", {"type": "topic", "durable": True})
    rabbit.send("PUT", f"/api/queues/{vhost}/orders", {"durable": True, "arguments": {"x-max-length": 5000}})
    rabbit.send("POST", f"/api/bindings/{vhost}/e/events/q/orders", {"routing_key": "orders.eu.#"})
    rabbit.send("PUT", f"/api/policies/{vhost}/orders-ttl",
                {"pattern": "^orders$", "definition": {"message-ttl": 600000}, "apply-to": "queues"})


def test_definitions_are_copied_and_verified_on_the_standby(pair):
    primary, standby = pair
    with scratch_vhost(primary, standby) as vhost, api(primary) as source, api(standby) as target:
        declare_orders(source, vhost)
        definitions = export_definitions(source, [vhost])
        assert sorted(item.label for item in definitions.items) == [
            "binding events -> queue orders (orders.eu.#)", "exchange events", "policy orders-ttl", "queue orders"]
        assert read_definitions(target, [vhost]) == [], "the vhost does not exist on the standby yet"
        assert {c.action for c in compare(definitions, [])} == {"create"}
        assert verify_definitions(target, definitions) == [
            f"{item.label} in vhost {vhost!r} is missing" for item in definitions.items]

        import_definitions(target, definitions)

        assert verify_definitions(target, definitions) == []
        assert {c.action for c in compare(definitions, read_definitions(target, [vhost]))} == {"present"}
        exchange = target.get_json(f"/api/exchanges/{vhost}/events")
        assert exchange["type"] == "topic" and exchange["durable"] is True
        queue = target.get_json(f"/api/queues/{vhost}/orders")
        assert queue["arguments"] == {"x-max-length": 5000} and queue["durable"] is True
        assert target.get_json(f"/api/policies/{vhost}/orders-ttl")["definition"] == {"message-ttl": 600000}
        # guest's permissions came along with the new vhost, so clients can use it at once
        assert "RabbitMQ" in amqp_check(vhost_uri(amqp_url(standby), vhost))


def test_a_changed_policy_is_an_update_and_a_different_queue_is_refused(pair):
    primary, standby = pair
    with scratch_vhost(primary, standby, create_on=2) as vhost, api(primary) as source, api(standby) as target:
        declare_orders(source, vhost)
        target.send("PUT", f"/api/policies/{vhost}/orders-ttl", {"pattern": "^orders$", "definition": {"message-ttl": 1}})
        definitions = export_definitions(source, [vhost])
        changes = {c.item.label: c.action for c in compare(definitions, read_definitions(target, [vhost]))}
        assert changes["policy orders-ttl"] == "update" and changes["queue orders"] == "create"

        target.send("PUT", f"/api/queues/{vhost}/orders", {"durable": False})
        with pytest.raises(PreconditionError, match=r"queue orders in vhost .* source .*x-max-length"):
            compare(definitions, read_definitions(target, [vhost]))


def test_users_are_copied_only_when_asked_and_their_hash_never_shows(pair):
    primary, standby = pair
    user, password = f"svc-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    with scratch_vhost(primary, standby) as vhost, api(primary) as source, api(standby) as target:
        source.send("PUT", f"/api/users/{user}", {"password": password, "tags": "monitoring"})
        try:
            source.send("PUT", f"/api/permissions/{vhost}/{user}", FULL)
            password_hash = source.get_json(f"/api/users/{user}")["password_hash"]
            assert export_definitions(source, [vhost]).users == ()
            definitions = export_definitions(source, [vhost], include_users=True)
            assert definitions.users == ("guest", user)
            for shown in (repr(definitions), str(definitions.items), definitions.digest()):
                assert password_hash not in shown
            import_definitions(target, definitions)
            assert verify_definitions(target, definitions) == []
            standby_url = vhost_uri(f"amqp://{user}:{password}@127.0.0.1:{amqp_url(standby).rsplit(':', 1)[1]}", vhost)
            assert "RabbitMQ" in amqp_check(standby_url), "the user logs in on the standby with its own password"
        finally:
            for rabbit in (source, target):
                try:
                    rabbit.send("DELETE", f"/api/users/{user}")
                except BrokerError:
                    pass


def test_an_unknown_vhost_is_named(pair):
    with api(pair[0]) as source, pytest.raises(BrokerError, match="vhost\\(s\\) 'no-such-vhost' do not exist"):
        export_definitions(source, ["no-such-vhost"])
