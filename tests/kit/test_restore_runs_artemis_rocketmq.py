"""`runbook restore RUN` for the Artemis and RocketMQ runbooks, end to end on the stack: the conformance
round trip (snapshot -> act -> `runbook restore` with approval -> every value declared restorable reads
back as the snapshot saved it) after a run that succeeded, with a value someone moved since the run
(the restore's plan says so); and a runbook that cannot undo what it did is refused naming what."""
from __future__ import annotations

import json
import uuid

import pytest

from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.integrations.artemis import ArtemisManagement
from mq_runbooks.integrations.rocketmq import RocketMQAdmin
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.artemis_support import dead_letter, ids_in, produce, purge_dlq, remove_queues
from mq_runbooks.app import runs
from tests.flows.runbook_harness import finished, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.flows.test_artemis_address_full import FULL_AT, full_address, settings_of  # noqa: F401 (a fixture)
from tests.flows.test_artemis_failover import private_pair  # noqa: F401 (a fixture)
from tests.kit.test_restore_runs import restored
from tests.rocketmq_support import consume, consumer_progress, make_group, make_topic, rocketmq_primary
from tests.rocketmq_support import produce as produce_rocketmq

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


@pytest.fixture
def primary(clusters):
    return clusters.artemis_cluster("primary")


APPROVERS = {"artemis": "grace", "rocketmq": "ivan"}  # teams.yaml: @artemis-oncall, @rocketmq-oncall


def approved_run(settings, catalog, runbook_id: str, **params):
    """A run of `runbook_id` approved by its on-call team, ended, and succeeded."""
    run_id = start_runbook(settings, catalog, runbook_id, **params)
    wait_until(run_id, paused, timeout=120)
    runs.answer_gate(settings, catalog, run_id, True, APPROVERS[runbook_id.split("-")[0]], "go")
    view = wait_until(run_id, finished, timeout=180)
    assert view.succeeded, (view.message, view.entries[-4:])
    return view


def preview(run_id: str) -> dict:
    """`runbook restore RUN --plan --json`: the restore's plan, changing nothing."""
    shown = runbook("restore", run_id, "--plan", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_rocketmq_reset_offset_round_trip_puts_every_saved_offset_back(unique, runbook_env):
    cluster = rocketmq_primary()
    topic, group = unique("orders"), unique("billing")
    make_topic(cluster, topic, 4)
    make_group(cluster, group)
    produce_rocketmq(cluster, topic, [f"m-{i}" for i in range(20)])
    consume(cluster, group, topic)
    before = {key: consumer for key, (_, consumer, _) in consumer_progress(group).items()}
    assert len(before) == 4 and sum(before.values()) == 20, before
    settings, catalog = runbook_env("rocketmq-reset-offset")
    view = approved_run(settings, catalog, "rocketmq-reset-offset", group=group, topic=[topic], to_earliest="true")
    assert set(consumer_progress(group)[key][1] for key in before) == {0}
    moved = min(key for key, offset in before.items() if offset > 1)
    with RocketMQAdmin.from_cluster(cluster) as admin:  # someone moved one queue after the run
        admin.reset_offset(group, *moved, 1)
    assert consumer_progress(group)[moved][1] == 1

    plan = preview(view.id)
    rows = {row["what"]: row for row in plan["rows"]}
    name = ":".join(map(str, moved))
    assert len(rows) == 4 and plan["moved_since"] == [name]
    assert (rows[name]["now"], rows[name]["restore to"], rows[name]["the run set"]) == (1, before[moved], 0)
    assert rows[name]["since the run"] == "moved since the run: 0 -> 1"
    assert any("had no offset" in line for line in plan["cannot_undo"])
    assert consumer_progress(group)[moved][1] == 1, "--plan changes nothing"

    restore = restored(settings, catalog, view.id, approver="judy")
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert {key: consumer for key, (_, consumer, _) in consumer_progress(group).items()} == before, \
        "every offset the snapshot saved is back"
    assert journal.last(restore.entries, "verification").data["not_restored"] == []
    assert journal.last(restore.entries, "plan").data["moved_since"] == [name]
    assert "cannot be undone" in journal.last(restore.entries, "outcome").summary


def test_artemis_address_full_round_trip_puts_the_settings_back_after_someone_changed_them(
        primary, full_address, runbook_env):
    address = full_address
    settings, catalog = runbook_env("artemis-address-full")
    view = approved_run(settings, catalog, "artemis-address-full", address=address, max_size_bytes="10485760",
                        address_full_policy="PAGE", verify_window_s="0")
    assert settings_of(primary, address) == (10485760, "PAGE")
    with ArtemisManagement.from_cluster(primary) as artemis:  # someone raised it again after the run
        artemis.set_address_settings(address, {"maxSizeBytes": 20971520, "pageSizeBytes": 10_000,
                                               "addressFullMessagePolicy": "PAGE"})
    assert settings_of(primary, address) == (20971520, "PAGE")

    plan = preview(view.id)
    rows = {row["what"]: row for row in plan["rows"]}
    size, policy = f"max-size-bytes of {address}", f"address-full-policy of {address}"
    assert (rows[size]["now"], rows[size]["restore to"], rows[size]["the run set"]) == (20971520, FULL_AT, 10485760)
    assert rows[size]["since the run"] == "moved since the run: 10485760 -> 20971520"
    assert (rows[policy]["now"], rows[policy]["restore to"], rows[policy]["since the run"]) == \
        ("PAGE", "BLOCK", "as the run left it")
    assert plan["moved_since"] == [size]

    restore = restored(settings, catalog, view.id, approver="heidi")
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert settings_of(primary, address) == (FULL_AT, "BLOCK"), "the settings before the run are back"
    assert journal.last(restore.entries, "verification").data["not_restored"] == []


def test_artemis_failover_round_trip_puts_the_switch_back_and_says_the_hand_over_stays(private_pair, runbook_env):
    config, switch_file, _ = private_pair
    settings, catalog = runbook_env("artemis-failover", RUNBOOK_CLUSTERS=str(config))
    view = approved_run(settings, catalog, "artemis-failover")
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61728"
    # someone pointed the clients elsewhere after the run
    switch_file.write_text(json.dumps({"artemis": {"endpoint": "127.0.0.1:61729"}}))

    plan = preview(view.id)
    [row] = plan["rows"]
    assert row == {"what": "switch artemis-clients", "now": "127.0.0.1:61729", "restore to": "127.0.0.1:61727",
                   "the run set": "127.0.0.1:61728", "since the run": "moved since the run: 127.0.0.1:61728 -> "
                                                                       "127.0.0.1:61729"}
    assert any(line.startswith("the hand-over: the broker that took over stays active") for line in plan["cannot_undo"])

    restore = restored(settings, catalog, view.id, approver="heidi")
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61727", "the switch is back"
    outcome = journal.last(restore.entries, "outcome").summary
    assert "cannot be undone: the hand-over" in outcome, outcome
    with ArtemisManagement.from_cluster(artemis_of(config, "backup")) as artemis:
        assert artemis.broker().active, "what cannot be undone is left as it is: the backup stays active"


def artemis_of(config, name: str):
    """An Artemis cluster of the private pair's clusters.yaml."""
    return load_clusters(config).artemis_cluster(name)


def test_a_restore_of_artemis_dlq_redeliver_is_refused_naming_what_cannot_be_undone(primary, unique, runbook_env):
    tag, orders = uuid.uuid4().hex[:12], unique("orders")
    try:
        produce(primary, orders, ["a", "b", "c"], test_tag=tag)
        assert dead_letter(primary, orders) == 3
        settings, catalog = runbook_env("artemis-dlq-redeliver")
        view = approved_run(settings, catalog, "artemis-dlq-redeliver", filter=f"test_tag = '{tag}'",
                            id_property="msg_id")
        assert sorted(ids_in(primary, orders)) == ["a", "b", "c"]

        refused = runbook("restore", view.id, "--plan")
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert "artemis-dlq-redeliver has nothing a restore run can put back: it cannot undo the " \
               "messages sent back to their queues" in refused.stderr, refused.stderr
        assert "the poison parked in the parking queue stays there" in refused.stderr and "Traceback" not in refused.stderr
        assert sorted(ids_in(primary, orders)) == ["a", "b", "c"], "nothing is touched"
    finally:
        purge_dlq(primary, f"test_tag = '{tag}'")
        remove_queues(primary, orders)


@pytest.mark.timeout(900)  # a failover, the old primary started again and synced, a failback, then the restore
def test_artemis_failback_round_trip_puts_the_switch_back_and_says_the_hand_back_stays(private_pair, runbook_env):
    config, switch_file, pair_stack = private_pair
    settings, catalog = runbook_env("artemis-failover", RUNBOOK_CLUSTERS=str(config))
    approved_run(settings, catalog, "artemis-failover")
    started = pair_stack("up", "artemis-primary")  # the old primary syncs from the active backup as its backup
    assert started.returncode == 0, started.stdout + started.stderr
    settings, catalog = runbook_env("artemis-failback", RUNBOOK_CLUSTERS=str(config))
    view = approved_run(settings, catalog, "artemis-failback")
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61727"

    [row] = preview(view.id)["rows"]
    assert (row["now"], row["restore to"], row["since the run"]) == ("127.0.0.1:61727", "127.0.0.1:61728",
                                                                    "as the run left it")
    restore = restored(settings, catalog, view.id, approver="heidi")
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61728", "the switch is back"
    assert "cannot be undone: the hand-back" in journal.last(restore.entries, "outcome").summary
    with ArtemisManagement.from_cluster(artemis_of(config, "primary")) as artemis:
        assert artemis.broker().active, "the primary stays active, as declared"
