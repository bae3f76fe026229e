"""The confirmed move survives a RabbitMQ node restarting in the middle of it: every message is
still in the source or confirmed in the destination, and the report says exactly what moved and how
many may be in both. Runs against a node of its own (a second dev/stack on free ports), so the
shared stack is never disturbed."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from mq_runbooks.integrations.rabbitmq_moves import move_messages
from tests.rabbitmq_messages import publish, taken_ids

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
MESSAGES = 20_000


def free_port_pair() -> tuple[int, int]:
    """An AMQP port whose +20000 (Erlang distribution) is free too, and a management port."""
    while True:
        with socket.socket() as amqp, socket.socket() as mgmt:
            amqp.bind(("127.0.0.1", 0))
            mgmt.bind(("127.0.0.1", 0))
            port = amqp.getsockname()[1]
            if port + 20000 < 65535:
                with socket.socket() as dist:
                    try:
                        dist.bind(("127.0.0.1", port + 20000))
                    except OSError:
                        continue
                return port, mgmt.getsockname()[1]


@pytest.fixture
def node(tmp_path):
    amqp_port, mgmt_port = free_port_pair()
    env = {**os.environ, "STACK_DIR": str(tmp_path / "stack"), "STACK_RABBIT_PRIMARY_PORT": str(amqp_port),
           "STACK_RABBIT_PRIMARY_MGMT_PORT": str(mgmt_port)}

    def stack(command: str) -> None:
        subprocess.run([str(REPO / "dev" / "stack"), command, "rabbitmq-primary"], env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=180)

    stack("up")
    yield f"amqp://guest:guest@127.0.0.1:{amqp_port}/", stack
    stack("down")


def test_node_restart_during_a_move_loses_nothing_and_reports_what_moved(node):
    url, stack = node
    publish(url, "backlog", [str(number) for number in range(MESSAGES)], body=b"x" * 1024)
    publish(url, "parking", [])
    reports = []
    reached, resume = threading.Event(), threading.Event()
    seen = iter(range(MESSAGES))

    def select(_properties) -> bool:
        """Holds the move at its 5,000th message until the node is down: the window (1,000) means
        at least 4,000 are confirmed and acknowledged by then, and most of the backlog is left."""
        if next(seen) == 5_000:
            reached.set()
            resume.wait(timeout=180)
        return True

    mover = threading.Thread(target=lambda: reports.append(
        move_messages(url, "/", "backlog", "parking", select=select, idle_s=2.0)))
    mover.start()
    assert reached.wait(timeout=120), "the move never reached its 5,000th message"
    stack("down")    # the node stops in the middle of the move ...
    resume.set()
    mover.join(timeout=60)
    stack("up")      # ... and comes back
    assert not mover.is_alive()
    report = reports[0]
    assert report.error, "the move must say it was interrupted"
    assert 0 < report.moved < MESSAGES, report

    in_source, in_destination = taken_ids(url, "backlog"), taken_ids(url, "parking")
    everywhere = set(in_source) | set(in_destination)
    assert everywhere == {str(n) for n in range(MESSAGES)}, f"lost: {MESSAGES - len(everywhere)}"
    assert len(in_destination) >= report.moved, "every confirmed copy survived the restart"
    in_both = set(in_source) & set(in_destination)
    # In both: the copies in flight, and copies whose source ack was sent but not yet applied when
    # the node stopped. Only ids the move had copied can be there.
    assert len(in_both - set(report.moved_ids)) <= report.in_flight, "duplicates beyond the moved and in-flight ones"
    assert len(in_destination) == len(set(in_destination)), "no copy landed twice in the destination"
    print(f"moved {report.moved} confirmed before the restart, in flight {report.in_flight}, "
          f"in both afterwards {len(in_both)}, error: {report.error}")
