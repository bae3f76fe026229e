"""A restart of the Prefect server (a private one on SQLite, started by dev/stack on free ports: the
shared server on 4200 is never restarted) while a run waits at its gate holding its target's lock:
the lock survives (dev/stack keeps Prefect's concurrency leases on disk), the run is not crashed for
its missing heartbeats, and once approved it acts exactly once and frees the lock."""
from __future__ import annotations

import time
from uuid import UUID

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit.crashes import HEARTBEAT_S, ZOMBIE_AFTER_S
from tests.engine.test_durable_runs import slot_taken, wait_for
from tests.kafka_groups import group_at_end
from tests.private_prefect import private_prefect, run_env, runbook, start_replay, status, wait_state

ENDED = {"Completed", "Failed", "Crashed", "Cancelled"}


@pytest.fixture(scope="module")
def sqlite_prefect():
    with private_prefect("sqlite") as server:
        yield server


def kinds(shown: dict) -> list[str]:
    return [entry["kind"] for entry in shown["journal"]]


def state_types(api_url: str, run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return [state.type.value for state in client.read_flow_run_states(UUID(run_id))]


def lock_held(api_url: str, key: str) -> bool:
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return slot_taken(key)


@pytest.mark.timeout(900)  # it waits out a crash window (ZOMBIE_AFTER_S + a heartbeat) after the restart
def test_a_lock_held_at_a_gate_survives_a_restart_of_the_prefect_server(sqlite_prefect, clusters, unique, tmp_path):
    api = sqlite_prefect.api_url
    env = {**run_env(api, tmp_path, run_on="local", timeout="10m"), "RUNBOOK_LOCK_WAIT_S": "5"}
    config, topic, group = group_at_end(clusters, unique, "restart")
    key = f"kafka:primary:group:{group}"

    first = start_replay(env, group)
    wait_state(env, first, {"Suspended"}, 180, "the first run at its gate")
    assert lock_held(api, key)
    leases = sqlite_prefect.home / "prefect" / "concurrency_leases"
    assert any(path.name != "expirations.json" for path in leases.glob("*.json")), "the lease is kept on disk"

    stopped = sqlite_prefect.stack("down", "prefect")  # SIGTERM to the server's process group
    assert "stopped prefect" in stopped.stdout and "killing it" not in stopped.stdout, stopped.stdout
    restarted = sqlite_prefect.stack("up", "prefect")
    assert "is up" in restarted.stdout
    restarted_at = time.monotonic()
    assert status(env, first)["state"] == "Suspended", "the run still waits at its gate"
    assert lock_held(api, key), "the lock is still held after the restart"

    second = start_replay(env, group)
    refused = wait_state(env, second, ENDED, 180, "the second run refused")
    assert refused["state"] == "Failed" and "another run holds the lock" in refused["message"], refused
    assert first in refused["message"], "the refusal names the run that holds the lock"
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 2}, "the refused run changed nothing"

    # The run waited through the restart with no process and no heartbeats: the crash automation
    # (window ZOMBIE_AFTER_S) must not have given it a Crashed state.
    wait_for(lambda: time.monotonic() - restarted_at > ZOMBIE_AFTER_S + HEARTBEAT_S, ZOMBIE_AFTER_S + HEARTBEAT_S + 5,
             "a crash window past the restart", every=5)
    assert "CRASHED" not in state_types(api, first)
    assert status(env, first)["state"] == "Suspended"

    answered = runbook(env, "approve", first, "--as", "bob")
    assert answered.returncode == 0, answered.stderr
    done = wait_state(env, first, ENDED, 180, "the approved run finished")
    assert done["state"] == "Completed", done
    journal = kinds(done)
    assert journal.count("approval") == 1 and journal.count("outcome") == 1 and journal.count("action") == 1, journal
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 0}, "offsets as planned"
    assert "CRASHED" not in state_types(api, first)
    assert not lock_held(api, key), "the lock is freed when the run ends"

    third = start_replay(env, group)  # the lock can be taken again (the group is at its earliest now: nothing to do)
    again = wait_state(env, third, ENDED, 180, "a new run on the target")
    assert again["state"] == "Completed" and "lock" in kinds(again), again
    assert not lock_held(api, key)


def test_the_crash_automation_of_an_older_window_is_updated_not_duplicated(sqlite_prefect, monkeypatch):
    from prefect.client.orchestration import get_client

    from mq_runbooks.kit import crashes

    def automations() -> list:
        with get_client(sync_client=True) as client:
            return client.read_automations_by_name(crashes.AUTOMATION_NAME)

    with temporary_settings(updates={PREFECT_API_URL: sqlite_prefect.api_url}):
        with monkeypatch.context() as older:  # what an older version made: a 120 s window
            older.setattr(crashes, "ZOMBIE_AFTER_S", 120)
            crashes.ensure_zombie_automation()
            assert [a.trigger.within.total_seconds() for a in automations()] == [120]
        assert crashes.ensure_zombie_automation() is False, "brought up to date, not created again"
        made = automations()
        assert [a.trigger.within.total_seconds() for a in made] == [crashes.ZOMBIE_AFTER_S]
        assert f"{crashes.ZOMBIE_AFTER_S}s" in made[0].actions[0].message
        assert crashes.ensure_zombie_automation() is False and len(automations()) == 1
