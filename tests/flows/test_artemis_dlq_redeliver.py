"""artemis-dlq-redeliver end to end on the real Artemis primary: messages dead-lettered by Artemis
itself, real runs answered through the gate, every message id counted on the way back."""
from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest

from mq_runbooks.app import runs
from mq_runbooks.base.errors import ParameterError, UnknownClusterError, UnreachableError
from mq_runbooks.flows.artemis_dlq_redeliver import dry_run
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook as runbook_cli
from tests.artemis_support import consume_all, dead_letter, ids_in, produce, purge_dlq, remove_queues
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, start_runbook, wait_until  # noqa: F401

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "artemis-dlq-redeliver"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def primary(clusters):
    return clusters.artemis_cluster("primary")


@pytest.fixture
def tagged(primary, unique):
    """(tag, queue maker): every message of the test carries test_tag=tag; its queues, parking queue and
    dead letters are removed afterwards."""
    tag = uuid.uuid4().hex[:12]
    made = []

    def make(prefix):
        made.append(unique(prefix))
        return made[-1]

    yield tag, make
    purge_dlq(primary, f"test_tag = '{tag}'")
    remove_queues(primary, *made)


def approve_and_finish(settings, catalog, run_id, timeout=120):
    runs.answer_gate(settings, catalog, run_id, True, "grace", "downstream is back")
    return wait_until(run_id, finished, timeout=timeout)


def test_5000_dead_letters_from_two_queues_go_back_exactly_once_and_the_poison_is_parked(primary, tagged, runbook_env):
    tag, make = tagged
    orders, billing, parking = make("orders"), make("billing"), make("parking")
    settings, catalog = runbook_env(RUNBOOK)
    common = {"filter": f"test_tag = '{tag}'", "id_property": "msg_id", "parking_queue": parking}

    # The poison message died once, was sent back by this runbook, and died again.
    produce(primary, orders, ["poison"], test_tag=tag)
    assert dead_letter(primary, orders) == 1
    first = start_runbook(settings, catalog, RUNBOOK, queue=orders, poison_after="1", **common)
    wait_until(first, paused)
    assert approve_and_finish(settings, catalog, first).succeeded
    assert ids_in(primary, orders) == ["poison"]
    assert dead_letter(primary, orders) == 1

    order_ids = [f"o{i}" for i in range(3000)]
    billing_ids = [f"b{i}" for i in range(1999)]
    produce(primary, orders, order_ids, test_tag=tag)
    produce(primary, billing, billing_ids, test_tag=tag)
    assert dead_letter(primary, orders) == 3000 and dead_letter(primary, billing) == 1999

    run_id = start_runbook(settings, catalog, RUNBOOK, poison_after="1", batch_size="1000", **common)
    view = wait_until(run_id, paused, timeout=120)
    plan = journal.last(view.entries, "plan")
    rows = {row[0]: dict(zip(plan.data["columns"], row)) for row in plan.data["rows"]}
    assert rows[orders]["in DLQ"] == 3001 and rows[orders]["send back"] == 3000 and rows[orders]["poison"] == 1
    assert rows[orders]["poison goes to"] == parking
    assert rows[billing]["in DLQ"] == 1999 and rows[billing]["send back"] == 1999 and rows[billing]["poison"] == 0
    assert rows[orders]["oldest"] <= rows[orders]["newest"]
    assert len(ids_in(primary, "DLQ", f"test_tag = '{tag}'")) == 5000, "nothing moves before approval"

    view = approve_and_finish(settings, catalog, run_id)
    assert view.succeeded, view.message
    steps = [e for e in view.entries if e.kind == "action"]
    assert [e.data["step"] for e in steps][0] == "park-poison" and len(steps) == 1 + 3 + 2
    assert sum(e.data.get("moved", 0) for e in steps[1:]) == 4999
    snapshot = journal.last(view.entries, "snapshot")
    lines = Path(snapshot.data["path"]).read_text().splitlines()
    assert len(lines) == 1 + 5000 and lines[0].startswith("dlq_message_id,original_message_id,identity")
    went = {line.split(",")[2]: line.split(",")[4] for line in lines[1:]}
    assert went["poison"] == parking and went["o17"] == orders and went["b5"] == billing
    order = kinds(view)
    assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")

    assert ids_in(primary, "DLQ", f"test_tag = '{tag}'") == []
    assert ids_in(primary, parking) == ["poison"]
    received_orders = consume_all(primary, orders, 3000)
    received_billing = consume_all(primary, billing, 1999)
    assert sorted(received_orders) == sorted(order_ids), "each order message back exactly once, the poison not"
    assert sorted(received_billing) == sorted(billing_ids), "each billing message back exactly once"

    # A rerun finds nothing to send: what went back is not in the DLQ any more.
    again = start_runbook(settings, catalog, RUNBOOK, poison_after="1", **common)
    view = wait_until(again, finished, timeout=60)
    assert journal.last(view.entries, "outcome").data["outcome"] == "unchanged"


def test_a_fault_after_the_first_batch_says_exactly_what_moved_and_a_rerun_sends_the_rest(primary, tagged, runbook_env):
    tag, make = tagged
    orders = make("orders")
    ids = [f"m{i}" for i in range(1200)]
    produce(primary, orders, ids, test_tag=tag)
    assert dead_letter(primary, orders) == 1200
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="fail-after:send-back:*")
    run_id = start_runbook(settings, catalog, RUNBOOK, filter=f"test_tag = '{tag}'", batch_size="500")
    wait_until(run_id, paused, timeout=60)
    view = approve_and_finish(settings, catalog, run_id)
    assert not view.succeeded
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "failed"
    assert "injected fault: step send-back:" in outcome.summary and "was applied, then the run failed" in outcome.summary
    assert f"sent back 500 of 500 message(s) to {orders}" in outcome.summary, outcome.summary
    assert "to send the rest: runbook run artemis-dlq-redeliver" in outcome.summary
    assert len(ids_in(primary, orders)) == 500 and len(ids_in(primary, "DLQ", f"test_tag = '{tag}'")) == 700

    # The printed way on (the snapshot's restore command) sends the rest: a run with the same parameters.
    command = journal.last(view.entries, "snapshot").data["restore_command"].split("to send the rest: ", 1)[1]
    words = shlex.split(command)
    assert words[:3] == ["runbook", "run", RUNBOOK]
    printed = dict(word.split("=", 1) for word in words[4::2])
    assert printed["filter"] == f"test_tag = '{tag}'" and printed["batch_size"] == "500"
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="")
    rerun = start_runbook(settings, catalog, RUNBOOK, **printed)
    view = wait_until(rerun, paused, timeout=60)
    assert journal.last(view.entries, "plan").data["rows"][0][5] == 700
    assert approve_and_finish(settings, catalog, rerun).succeeded
    assert sorted(consume_all(primary, orders, 1200)) == sorted(ids), "each of the 1,200 exactly once"


def test_bad_input_is_refused_before_a_run_exists(primary, clusters, tagged, runbook_env):
    tag, make = tagged
    settings, catalog = runbook_env(RUNBOOK)
    runbook = catalog.get(RUNBOOK)
    cases = [({"cluster": "primary", "limit": "-1"}, "limit"), ({"cluster": "primary", "dlq": "NO-SUCH-DLQ"}, "dlq"),
             ({"cluster": "primary", "queue": make("never-made")}, "queue"),
             ({"cluster": "primary", "filter": "colour = = 'red'"}, "filter")]
    for raw, field in cases:
        with pytest.raises(ParameterError) as caught:
            dry_run(runbook.validate_parameters(raw), clusters, settings)
        assert [f for f, _ in caught.value.problems] == [field], caught.value
    with pytest.raises(UnknownClusterError, match="no artemis cluster named 'tertiary'"):
        dry_run(runbook.validate_parameters({"cluster": "tertiary"}), clusters, settings)
    before = len(runs.list_runs(limit=1000, runbook_id=RUNBOOK))
    cli = runbook_cli("run", RUNBOOK, "-p", "cluster=primary", "-p", "filter=colour = = 'red'")
    assert cli.returncode == 2 and "filter: Artemis rejects the filter" in cli.stderr, cli
    cli = runbook_cli("run", RUNBOOK, "-p", "cluster=primary", "-p", "limit=-3")
    assert cli.returncode == 2 and "limit: Input should be greater than or equal to 1" in cli.stderr, cli
    assert len(runs.list_runs(limit=1000, runbook_id=RUNBOOK)) == before, "no run was created"


def test_artemis_down_is_one_clear_line(clusters, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    down = clusters.model_copy(update={"artemis": {"primary": clusters.artemis_cluster("primary").model_copy(
        update={"management_url": "http://127.0.0.1:1/console/jolokia"})}})
    with pytest.raises(UnreachableError) as caught:
        dry_run(catalog.get(RUNBOOK).validate_parameters({"cluster": "primary"}), down, settings)
    assert str(caught.value).count("\n") == 0 and "artemis cluster 'primary'" in str(caught.value)
