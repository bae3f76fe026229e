"""mq_runbooks.integrations.rabbitmq_amqp against the real `primary` node of the local stack, a closed
port and a port that never answers."""
from __future__ import annotations

import time

import pytest

from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_amqp import amqp_check


@pytest.fixture(scope="module")
def primary(clusters):
    return clusters.rabbit_cluster("primary")


@pytest.fixture(scope="module")
def rabbit(primary):
    with RabbitManagement.from_cluster(primary) as client:
        yield client


def test_amqp_check_names_the_server(primary, rabbit):
    answer = amqp_check(primary.amqp_url.get_secret_value(), 5, name="primary")
    assert answer == f"RabbitMQ {rabbit.overview().rabbitmq_version}"


@pytest.mark.parametrize("port_kind", ["closed", "silent"])
def test_amqp_check_fails_cleanly_without_echoing_the_password(port_kind, silent_port):
    port = 1 if port_kind == "closed" else silent_port
    started = time.monotonic()
    with pytest.raises(UnreachableError, match=r"rabbitmq cluster 'primary' \(amqp://127\.0\.0\.1:\d+/\)") as failed:
        amqp_check(f"amqp://guest:s3cret-pw@127.0.0.1:{port}/", 1, name="primary")
    assert "s3cret-pw" not in str(failed.value)
    assert time.monotonic() - started < 2.5


def test_amqp_check_reports_a_refused_login_as_broker_error(primary):
    url = primary.amqp_url.get_secret_value().replace("guest@", "wrong%2Dpw@", 1)
    with pytest.raises(BrokerError, match="refused the connection") as refused:
        amqp_check(url, 5, name="primary")
    assert not isinstance(refused.value, UnreachableError)
    assert "wrong" not in str(refused.value)
