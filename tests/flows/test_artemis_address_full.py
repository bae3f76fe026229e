"""artemis-address-full end to end on the real Artemis primary: a real AMQP producer blocked by an address
at its max-size-bytes (policy BLOCK), a real run answered through the gate, the producer unblocked,
and the settings put back by the snapshot's restore command (a run too) and by a failed verify."""
from __future__ import annotations

import shlex
import threading
import time

import pytest

from mq_runbooks.app import runs
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.artemis_address_full import dry_run
from mq_runbooks.integrations.artemis import ArtemisManagement
from mq_runbooks.integrations.artemis_amqp import AmqpSession
from mq_runbooks.kit import journal
from tests.artemis_support import consume_all, remove_queues, wait_for
from tests.flows.runbook_harness import finished, paused, runbook_env, start_runbook, wait_until  # noqa: F401

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "artemis-address-full"
FULL_AT = 20_000  # bytes


@pytest.fixture
def primary(clusters):
    return clusters.artemis_cluster("primary")


@pytest.fixture
def full_address(primary, unique):
    """A queue whose address blocks producers past 20,000 bytes; its settings and messages are removed after."""
    address = unique("orders-full")
    with ArtemisManagement.from_cluster(primary) as artemis:
        artemis.set_address_settings(address, {"maxSizeBytes": FULL_AT, "pageSizeBytes": 10_000,
                                               "addressFullMessagePolicy": "BLOCK"})
        artemis.create_queue(address)
    yield address
    with ArtemisManagement.from_cluster(primary) as artemis:
        artemis.remove_address_settings(address)
    remove_queues(primary, address)


class Producer(threading.Thread):
    """Sends `count` 1 KB messages over AMQP, each confirmed; blocks where Artemis withholds credit."""

    def __init__(self, cluster, address, count):
        super().__init__(daemon=True)
        self.cluster, self.address, self.count = cluster, address, count
        self.sent = 0
        self.error: Exception | None = None

    def run(self):
        try:
            with AmqpSession.from_cluster(self.cluster, "blocked-producer", timeout_s=120) as amqp:
                sender = amqp.sender(self.address)
                for i in range(self.count):
                    sender.send("x" * 1000, {"msg_id": f"m{i}"})
                    self.sent += 1
        except Exception as exc:  # noqa: BLE001  (the test reads it)
            self.error = exc


def settings_of(cluster, address):
    with ArtemisManagement.from_cluster(cluster) as artemis:
        settings = artemis.address_settings(address)
    return settings.max_size_bytes, settings.address_full_policy


def blocked(producer, address, cluster):
    """The producer has sent nothing for 2 s while the address is past its limit."""
    before = producer.sent
    with ArtemisManagement.from_cluster(cluster) as artemis:
        full = artemis.address(address).size_bytes >= FULL_AT
    time.sleep(2.0)
    return full and producer.sent == before and producer.is_alive()


def test_a_blocked_producer_is_unblocked_and_the_settings_are_restored(primary, full_address, runbook_env):
    producer = Producer(primary, full_address, 1500)
    producer.start()
    wait_for(lambda: blocked(producer, full_address, primary), timeout=60, what="the producer blocked")
    stuck_at = producer.sent
    assert 0 < stuck_at < 1500
    settings, catalog = runbook_env(RUNBOOK)

    run_id = start_runbook(settings, catalog, RUNBOOK, address=full_address, max_size_bytes="10485760",
                           verify_window_s="1")
    view = wait_until(run_id, paused, timeout=60)
    plan = journal.last(view.entries, "plan")
    assert plan.data["rows"] == [["max-size-bytes", FULL_AT, 10485760]]
    assert "producers are blocked" in plan.summary and "policy BLOCK" in plan.summary
    assert producer.sent == stuck_at, "nothing changes before approval"

    runs.answer_gate(settings, catalog, run_id, True, "heidi", "raise it for the backlog")
    view = wait_until(run_id, finished, timeout=60)
    assert view.succeeded, view.message
    producer.join(60)
    assert producer.error is None and producer.sent == 1500, "the producer went on and finished"
    assert settings_of(primary, full_address) == (10485760, "BLOCK")
    snapshot = journal.last(view.entries, "snapshot")
    assert snapshot.data["before"] == {"max-size-bytes": FULL_AT, "address-full-policy": "BLOCK"}

    # The consumers catch up (nothing the blocked producer sent was lost) ...
    received = consume_all(primary, full_address, 1500)
    assert sorted(received) == sorted(f"m{i}" for i in range(1500))
    # ... and the snapshot's restore command, a run of this runbook with the values before, puts them back.
    words = shlex.split(snapshot.data["restore_command"])
    assert words[:3] == ["runbook", "run", RUNBOOK]
    restore = dict(word.split("=", 1) for word in words[4::2])
    back = start_runbook(settings, catalog, RUNBOOK, **{**restore, "verify_window_s": "1"})
    view = wait_until(back, paused, timeout=60)
    assert journal.last(view.entries, "plan").data["rows"] == [["max-size-bytes", 10485760, FULL_AT]]
    runs.answer_gate(settings, catalog, back, True, "heidi", "incident over")
    view = wait_until(back, finished, timeout=60)
    assert view.succeeded, view.message
    assert settings_of(primary, full_address) == (FULL_AT, "BLOCK")


def test_a_failed_verify_puts_the_settings_back(primary, full_address, runbook_env):
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="verify")
    run_id = start_runbook(settings, catalog, RUNBOOK, address=full_address, address_full_policy="PAGE",
                           max_size_bytes="40000", verify_window_s="0")
    wait_until(run_id, paused, timeout=60)
    runs.answer_gate(settings, catalog, run_id, True, "grace", "")
    view = wait_until(run_id, finished, timeout=60)
    assert not view.succeeded
    outcome = journal.last(view.entries, "outcome")
    assert "rolled back" in outcome.summary and f"settings of {full_address} restored" in outcome.summary, outcome.summary
    assert settings_of(primary, full_address) == (FULL_AT, "BLOCK")
    changed = [e for e in view.entries if e.kind == "action"][0]
    assert changed.data["changed"] == {"max-size-bytes": 40000, "address-full-policy": "PAGE"}


def test_bad_input_is_refused_before_a_run_exists(clusters, unique, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    runbook = catalog.get(RUNBOOK)
    with pytest.raises(ParameterError, match="address: 'no-such-address-"):
        dry_run(runbook.validate_parameters({"cluster": "primary", "address": unique("no-such-address"),
                                             "address_full_policy": "PAGE"}), clusters, settings)
    for raw, field in [({"address": "x"}, "give max_size_bytes and/or address_full_policy"),
                       ({"address": "x", "max_size_bytes": "-5"}, "max_size_bytes"),
                       ({"address": "x", "address_full_policy": "SPILL"}, "address_full_policy")]:
        with pytest.raises(ParameterError, match=field):
            runbook.validate_parameters({"cluster": "primary", **raw})
