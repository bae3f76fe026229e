"""A restart of the Prefect server (a private one on SQLite, started by dev/stack on free ports: the
shared server on 4200 is never restarted) while a run waits at its gate holding its target's lock:
the lock survives (dev/stack keeps Prefect's concurrency leases on disk), the run is not crashed for
its missing heartbeats, and once approved it acts exactly once and frees the lock."""
from __future__ import annotations

import os
import signal
import time
from uuid import UUID

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit.crashes import HEARTBEAT_S, ZOMBIE_AFTER_S
from tests.app.test_durable_runs import executors_of, slot_taken, wait_for
from tests.kafka_groups import group_at_end
from tests.private_prefect import private_prefect, run_env, runbook, start_replay, status, wait_state

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


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


def crash_automations() -> dict[str, str]:
    """The crash automations on the server: name -> the id of its trigger (Prefect gives an updated
    trigger a new one; its client's models leave it out)."""
    from prefect.client.orchestration import get_client

    from mq_runbooks.kit.crashes import AUTOMATION_NAME

    with get_client(sync_client=True) as client:
        stored = client.request("POST", "/automations/filter", json={})
        stored.raise_for_status()
    found = [a for a in stored.json() if a["name"].startswith(AUTOMATION_NAME)]
    assert len({a["name"] for a in found}) == len(found), f"duplicates: {[a['name'] for a in found]}"
    return {a["name"]: a["trigger"]["id"] for a in found}


def test_another_window_is_another_automation_and_the_older_goes_once_covered(sqlite_prefect, monkeypatch):
    from mq_runbooks.kit import crashes

    with temporary_settings(updates={PREFECT_API_URL: sqlite_prefect.api_url}):
        crashes.ensure_zombie_automation()
        ours = crashes.automation_name()
        before = crash_automations()
        assert list(before) == [ours]
        with monkeypatch.context() as other:  # another version's window: 10 s
            other.setattr(crashes, "ZOMBIE_AFTER_S", 10)
            assert crashes.ensure_zombie_automation() is True
            assert crashes.ensure_zombie_automation() is False, "created once"
        both = crash_automations()
        assert set(both) == {ours, crashes.automation_name(10)}
        assert both[ours] == before[ours], "ours was not updated (an update forgets what it has pending)"
        # Ours has watched longer than 10 s plus a heartbeat: the other one goes (at once, or soon
        # when ours was created by this test).
        wait_for(lambda: crashes.ensure_zombie_automation() is False and list(crash_automations()) == [ours], 120,
                 "the covered automation deleted", every=5)
        assert crash_automations()[ours] == before[ours]


@pytest.mark.timeout(900)
def test_a_run_killed_just_before_the_window_changes_is_still_crashed(sqlite_prefect, clusters, unique, tmp_path,
                                                                     monkeypatch):
    """An upgrade that changes the window brings an automation of its own; a run whose process died
    just before must still be marked Crashed. (Updating the automation would forget it: Prefect keys
    what a trigger has pending by the trigger's id, and gives an updated trigger a new one.)"""
    from mq_runbooks.kit import crashes

    api = sqlite_prefect.api_url
    env = {**run_env(api, tmp_path, run_on="local"), "RUNBOOK_INJECT_FAULT": "stall-after:alter-offsets"}
    config, topic, group = group_at_end(clusters, unique, "rewindow")
    run_id = start_replay(env, group)
    wait_state(env, run_id, {"Suspended"}, 180, "the run at its gate")
    answered = runbook(env, "approve", run_id, "--as", "bob")
    assert answered.returncode == 0, answered.stderr
    wait_for(lambda: "action" in kinds(status(env, run_id)), 180, "the change applied", every=1)
    for pid in wait_for(lambda: executors_of(run_id), 30, "the executor applying the change"):
        os.kill(int(pid), signal.SIGKILL)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        try:
            with monkeypatch.context() as newer:  # the next version's window, set while the run is dead
                newer.setattr(crashes, "ZOMBIE_AFTER_S", crashes.ZOMBIE_AFTER_S + 30)
                crashes.ensure_zombie_automation()
            wait_for(lambda: "CRASHED" in state_types(api, run_id), crashes.ZOMBIE_AFTER_S + 30 + HEARTBEAT_S + 60,
                     "the killed run marked Crashed", every=2)
        finally:
            crashes.ensure_zombie_automation()  # this version's window again
