"""The management client sends each endpoint the headers it accepts (DELETE of a queue's contents
answers 406 to `Accept: application/json`), and names that do not exist are bad input."""
from __future__ import annotations

import time
import uuid

import pika
import pytest

from mq_runbooks.base.errors import BrokerError, NotFoundError
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from tests.app.test_cli import runbook


@pytest.fixture
def rabbit(clusters):
    with RabbitManagement.from_cluster(clusters.rabbit_cluster("primary")) as management:
        yield management


def test_purge_empties_a_queue(rabbit, clusters):
    queue = f"purge-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(clusters.rabbit_cluster("primary").amqp_url.get_secret_value()))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, auto_delete=False)
        for number in range(5):
            channel.basic_publish("", queue, f"m{number}".encode())
        deadline = time.monotonic() + 10
        while channel.queue_declare(queue, passive=True).method.message_count < 5:
            assert time.monotonic() < deadline, "the messages did not arrive"
            time.sleep(0.1)
        rabbit.purge("/", queue)  # answered 406 while every request sent Accept: application/json
        assert channel.queue_declare(queue, passive=True).method.message_count == 0
        with pytest.raises(NotFoundError, match=r"queue 'no-such-queue-x' does not exist in vhost '/'"):
            rabbit.purge("/", "no-such-queue-x")
    finally:
        connection.channel().queue_delete(queue)
        connection.close()


def test_an_unknown_vhost_is_a_not_found_broker_error(rabbit):
    with pytest.raises(BrokerError) as raised:
        rabbit.queues("no-such-vhost")
    assert isinstance(raised.value, NotFoundError)


def test_an_unknown_vhost_on_the_cli_is_bad_input_like_an_unknown_queue(clusters):
    vhost = runbook("plan", "rabbitmq-drain-stuck", "-p", "cluster=primary", "-p", "vhost=no-such-vhost")
    assert vhost.returncode == 2, vhost.stdout + vhost.stderr
    assert "no vhost 'no-such-vhost'" in vhost.stderr and "vhosts there:" in vhost.stderr
    assert "Traceback" not in vhost.stderr
    queue = runbook("plan", "rabbitmq-drain-stuck", "-p", "cluster=primary", "-p", "queue=no-such-queue-x")
    assert queue.returncode == 2
