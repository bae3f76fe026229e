"""rabbitmq-failover and rabbitmq-failback end to end: real runs through the gate, real RabbitMQ
nodes, real endpoint switches (a file, and an HTTP endpoint served by the test that records calls).

The fault test (the primary dying mid-move) runs on a second stack of its own (.stack-rmqfail,
other ports), never on the shared stack's nodes."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mq_runbooks.app import runs, starts
from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.base.errors import BrokerError, ParameterError, PreconditionError
from mq_runbooks.kit import journal
from mq_runbooks.app.cli_runs import parse_parameters
from mq_runbooks.flows.rabbitmq_failover import dry_run as dry_run_failover
from mq_runbooks.flows.rabbitmq_failover_plan import RabbitFailoverParameters
from mq_runbooks.integrations.rabbitmq_shovels import queue_depth
from tests.app.test_cli import runbook as runbook_cli
from tests.flows.runbook_harness import (  # noqa: F401
    asked_again, at_second_gate, drift_after_one_approval, finished, kinds, paused, runbook_env, wait_until,
)
from tests.flows.steady_traffic import writer
from tests.rabbitmq_failover_support import amqp_url, api, drain_ids, publish_ids, scratch_vhost
from tests.rabbitmq_messages import publish, taken_ids
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
FAULT_STACK = {"STACK_DIR": str(REPO / ".stack-rmqfail"), "STACK_RABBIT_PRIMARY_PORT": "5683",
               "STACK_RABBIT_PRIMARY_MGMT_PORT": "15683", "STACK_RABBIT_STANDBY_PORT": "5684",
               "STACK_RABBIT_STANDBY_MGMT_PORT": "15684"}


def clusters_yaml(tmp_path, ports: tuple[int, int, int, int], switches: str) -> Path:
    """A clusters.yaml for RabbitMQ nodes at (amqp, mgmt) x (primary, standby) and the given switches."""
    amqp_p, mgmt_p, amqp_s, mgmt_s = ports
    path = tmp_path / "clusters.yaml"
    path.write_text(f"""\
rabbitmq:
  primary: {{amqp_url: "amqp://guest:guest@127.0.0.1:{amqp_p}/", management_url: "http://127.0.0.1:{mgmt_p}"}}
  standby: {{amqp_url: "amqp://guest:guest@127.0.0.1:{amqp_s}/", management_url: "http://127.0.0.1:{mgmt_s}",
             standby_of: primary}}
{switches}""")
    return path


# The main stack's ports, as dev/stack reads them (CI may move them).
MAIN_PORTS = tuple(int(os.environ.get(name, default)) for name, default in (
    ("STACK_RABBIT_PRIMARY_PORT", 5673), ("STACK_RABBIT_PRIMARY_MGMT_PORT", 15673),
    ("STACK_RABBIT_STANDBY_PORT", 5674), ("STACK_RABBIT_STANDBY_MGMT_PORT", 15674)))
PRIMARY_ENDPOINT, STANDBY_ENDPOINT = f"127.0.0.1:{MAIN_PORTS[0]}", f"127.0.0.1:{MAIN_PORTS[2]}"


def file_switch(path: Path, primary: str = PRIMARY_ENDPOINT, standby: str = STANDBY_ENDPOINT) -> str:
    return f"""\
switches:
  orders-clients:
    kind: file
    path: {path}
    key: rabbitmq.endpoint
    values: {{primary: "{primary}", standby: "{standby}"}}
"""


def http_switch(url: str, state_file: Path) -> str:
    return f"""\
switches:
  orders-clients:
    kind: http
    method: PUT
    url: {url}
    initial: "{PRIMARY_ENDPOINT}"
    state_file: {state_file}
    body: '{{"endpoint": "{{{{ value }}}}"}}'
    values: {{primary: "{PRIMARY_ENDPOINT}", standby: "{STANDBY_ENDPOINT}"}}
"""


@pytest.fixture
def env(runbook_env, monkeypatch):
    """configure(clusters_path, **env) -> (settings, catalog) with both runbooks."""
    def configure(clusters_path: Path, **extra: str):
        monkeypatch.setenv("RUNBOOK_CLUSTERS", str(clusters_path))
        runbook_env("rabbitmq-failback")
        return runbook_env("rabbitmq-failover", **extra)
    return configure


def start(settings, catalog, runbook_id, **raw) -> str:
    runbook = catalog.get(runbook_id)
    return starts.start_run(settings, runbook, runbook.validate_parameters(raw), requested_by="alice")


def start_command(settings, catalog, command: str) -> str:
    """Start the run a `runbook run ID -p k=v ...` command (e.g. a snapshot's restore command) names."""
    words = shlex.split(command)
    assert words[:2] == ["runbook", "run"] and all(w == "-p" for w in words[3::2]), command
    return start(settings, catalog, words[2], **parse_parameters(tuple(words[4::2])))


def approve(settings, catalog, run_id) -> object:
    wait_until(run_id, paused)
    runs.answer_gate(settings, catalog, run_id, True, "erin", "standby is ready")
    return wait_until(run_id, finished, timeout=90)


def declare_orders(rabbit, vhost):
    rabbit.send("PUT", f"/api/exchanges/{vhost}/events", {"type": "topic", "durable": True})
    rabbit.send("PUT", f"/api/queues/{vhost}/orders", {"durable": True})
    rabbit.send("POST", f"/api/bindings/{vhost}/e/events/q/orders", {"routing_key": "orders.#"})
    rabbit.send("PUT", f"/api/policies/{vhost}/orders-limit",
                {"pattern": "^orders$", "definition": {"max-length": 100000}, "apply-to": "queues"})


def test_failover_then_failback_moves_everything_and_restores_the_file_switch(clusters, tmp_path, env):
    primary, standby = clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(json.dumps({"rabbitmq": {"endpoint": PRIMARY_ENDPOINT}}))
    settings, catalog = env(clusters_yaml(tmp_path, MAIN_PORTS, file_switch(endpoint_file)))
    with scratch_vhost(primary, standby) as vhost, api(primary) as source, api(standby) as target:
        declare_orders(source, vhost)
        sent = publish_ids(primary, vhost, "orders", 300)

        run_id = start(settings, catalog, "rabbitmq-failover", vhost=vhost, switch="orders-clients")
        plan = journal.last(wait_until(run_id, paused).entries, "plan").data
        assert plan["queues"] == [{"name": "orders", "depth_at_plan": 300}]
        assert {(d["kind"], d["action"]) for d in plan["definitions"]} == {
            ("exchange", "create"), ("queue", "create"), ("binding", "create"), ("policy", "create")}
        assert plan["switch"] == {"name": "orders-clients", "old": PRIMARY_ENDPOINT, "new": STANDBY_ENDPOINT}
        assert vhost not in {v["name"] for v in target.get_json("/api/vhosts")}, "nothing changes before approval"

        view = approve(settings, catalog, run_id)
        assert view.succeeded, (view.message, view.entries[-3:])
        assert target.get_json(f"/api/exchanges/{vhost}/events")["type"] == "topic"
        assert target.get_json(f"/api/policies/{vhost}/orders-limit")["definition"] == {"max-length": 100000}
        assert [b["routing_key"] for b in target.get_json(f"/api/bindings/{vhost}/e/events/q/orders")] == ["orders.#"]
        assert queue_depth(amqp_url(standby), vhost, "orders") == 300
        assert queue_depth(amqp_url(primary), vhost, "orders") == 0
        assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == STANDBY_ENDPOINT
        verified = journal.last(view.entries, "verification").data
        assert verified["moved"] == 300 and verified["seen_at_plan"] == 300
        assert verified["cluster_name"] == target.overview().cluster_name
        assert "300 message(s) moved" in journal.last(view.entries, "outcome").summary
        order = kinds(view)
        assert order.index("approval") < order.index("snapshot") < order.index("action")
        snapshot = journal.last(view.entries, "snapshot")
        assert snapshot.data["switch"] == "orders-clients" and snapshot.data["value"] == PRIMARY_ENDPOINT
        assert snapshot.data["queues"] == [{"name": "orders", "depth_at_plan": 300}]
        assert f"failover_run={run_id}" in snapshot.data["restore_command"]

        publish_ids(standby, vhost, "orders", 20, prefix="during")  # produced on the standby meanwhile
        back = start_command(settings, catalog, snapshot.data["restore_command"])  # the restore it printed
        plan = journal.last(wait_until(back, paused).entries, "plan").data
        assert plan["switch"]["new"] == PRIMARY_ENDPOINT and plan["queues"][0]["depth_at_plan"] == 320
        view = approve(settings, catalog, back)
        assert view.succeeded, (view.message, view.entries[-3:])
        assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == PRIMARY_ENDPOINT
        arrived = drain_ids(primary, vhost, "orders")
        assert sorted(arrived) == sorted(sent + [f"during-{i}" for i in range(20)]), "nothing lost, nothing twice"
        assert journal.last(view.entries, "verification").data["moved"] == 320


class Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, str]] = []

    def do_PUT(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.calls.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.calls = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/endpoints/orders", Recorder.calls
    server.shutdown()


def test_failover_switches_over_http_and_a_failed_verification_switches_back(clusters, tmp_path, env, recorder):
    url, calls = recorder
    primary, standby = clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")
    with scratch_vhost(primary, standby) as vhost, api(primary) as source:
        declare_orders(source, vhost)
        settings, catalog = env(clusters_yaml(tmp_path, MAIN_PORTS, http_switch(url, tmp_path / "http-switch.json")))
        view = approve(settings, catalog, start(settings, catalog, "rabbitmq-failover", vhost=vhost,
                                                switch="orders-clients"))
        assert view.succeeded, (view.message, view.entries[-3:])
        assert calls[-1] == ("PUT", "/v1/endpoints/orders", json.dumps({"endpoint": STANDBY_ENDPOINT}))
        assert journal.last(view.entries, "plan").data["queues"] == [], "no backlog: only the switch moves"

        calls.clear()
        settings, catalog = env(clusters_yaml(tmp_path, MAIN_PORTS, http_switch(url, tmp_path / "http-switch.json")), RUNBOOK_INJECT_FAULT="verify")
        view = approve(settings, catalog, start(settings, catalog, "rabbitmq-failback", vhost=vhost,
                                                switch="orders-clients", copy_definitions="false"))
        assert not view.succeeded
        assert [json.loads(body)["endpoint"] for _, _, body in calls] == [PRIMARY_ENDPOINT, STANDBY_ENDPOINT]
        assert journal.last(view.entries, "rollback").data["restored"] is True


def test_bad_input_and_an_unreachable_standby_are_refused_before_any_change(clusters, tmp_path):
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text("{}")
    good = load_clusters(clusters_yaml(tmp_path, MAIN_PORTS, file_switch(endpoint_file)))
    with pytest.raises(ParameterError, match="queues: 'no-such-queue' is not a queue in vhost '/'"):
        dry_run_failover(RabbitFailoverParameters(switch="orders-clients", queues=["no-such-queue"]), good)
    with pytest.raises(ParameterError, match="vhost: no vhost 'no-such-vhost' on RabbitMQ cluster primary "
                                             r"\(vhosts there: .*/"):
        dry_run_failover(RabbitFailoverParameters(switch="orders-clients", vhost="no-such-vhost"), good)
    dead = load_clusters(clusters_yaml(tmp_path, (MAIN_PORTS[0], MAIN_PORTS[1], 1, 2), file_switch(endpoint_file)))
    with pytest.raises(PreconditionError, match="the destination standby cannot take the clients: .*did not answer"):
        dry_run_failover(RabbitFailoverParameters(switch="orders-clients"), dead)
    assert endpoint_file.read_text() == "{}"


@pytest.mark.parametrize("runbook_id", ["rabbitmq-failover", "rabbitmq-failback"])
def test_an_unknown_vhost_or_queue_exits_2_before_a_run_exists(tmp_path, runbook_id):
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(json.dumps({"rabbitmq": {"endpoint": PRIMARY_ENDPOINT}}))
    env = {**os.environ, "RUNBOOK_CLUSTERS": str(clusters_yaml(tmp_path, MAIN_PORTS, file_switch(endpoint_file)))}
    source = "primary" if runbook_id == "rabbitmq-failover" else "standby"
    for bad, expected in ((["-p", "vhost=no-such-vhost"], f"vhost: no vhost 'no-such-vhost' on RabbitMQ cluster {source}"),
                          (["-p", "queues=no-such-queue"], "queues: 'no-such-queue' is not a queue in vhost '/'")):
        result = subprocess.run([str(Path(sys.executable).parent / "runbook"), "run", runbook_id,
                                 "-p", "switch=orders-clients", *bad], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert expected in result.stderr and "started run" not in result.stdout
    assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == PRIMARY_ENDPOINT


def test_with_the_primary_down_the_plan_moves_only_the_switch_and_says_so(tmp_path):
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(json.dumps({"rabbitmq": {"endpoint": PRIMARY_ENDPOINT}}))
    down = load_clusters(clusters_yaml(tmp_path, (1, 2, MAIN_PORTS[2], MAIN_PORTS[3]), file_switch(endpoint_file)))
    plan = dry_run_failover(RabbitFailoverParameters(switch="orders-clients", queues=["orders"]), down)
    assert not plan.source_reachable and plan.definitions is None
    assert [(q.name, q.depth_at_plan) for q in plan.queues] == [("orders", None)]
    assert "the source primary does not answer" in plan.warnings[0] and "stay there" in plan.warnings[0]
    assert "| orders | unknown |" in plan.markdown()
    assert (plan.switch_old, plan.switch_new) == (PRIMARY_ENDPOINT, STANDBY_ENDPOINT)


@pytest.fixture(scope="module")
def fault_stack():
    """The second stack's RabbitMQ nodes, started if needed (and then stopped after the module)."""
    environment = {**os.environ, **FAULT_STACK}

    def command(verb: str) -> list[str]:
        return [str(REPO / "dev" / "stack"), verb, "rabbitmq-primary", "rabbitmq-standby"]

    already_up = subprocess.run(command("status"), env=environment, stdout=subprocess.DEVNULL).returncode == 0
    subprocess.run(command("up"), check=True, env=environment, stdout=subprocess.DEVNULL)
    yield environment
    if not already_up:
        subprocess.run(command("down"), check=True, env=environment, stdout=subprocess.DEVNULL)


def test_primary_dying_mid_move_reports_exactly_what_moved_and_loses_nothing(fault_stack, tmp_path, env):
    """The standby's shovel reads the primary through a relay that holds the move at a known point
    (~500 of the 3,000 messages) until the primary is down, whatever the machine's speed."""
    primary_endpoint, standby_endpoint = "127.0.0.1:5683", "127.0.0.1:5684"
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(json.dumps({"rabbitmq": {"endpoint": primary_endpoint}}))
    relay = TcpRelay("127.0.0.1", 5683)
    path = clusters_yaml(tmp_path, (relay.port, 15683, 5684, 15684),
                         file_switch(endpoint_file, primary_endpoint, standby_endpoint))
    fault = load_clusters(path)
    primary, standby = fault.rabbit_cluster("primary"), fault.rabbit_cluster("standby")
    settings, catalog = env(path)
    stack = [str(REPO / "dev" / "stack")]
    body = b"x" * 1024
    direct_primary = "amqp://guest:guest@127.0.0.1:5683/"  # the test's own messages go around the relay
    with scratch_vhost(primary, standby) as vhost, api(primary) as source:
        source.send("PUT", f"/api/queues/{vhost}/orders", {"durable": True})
        sent = publish(direct_primary, "orders", [f"m-{i}" for i in range(3000)], vhost=vhost, body=body,
                       create=False, confirm=True)
        run_id = start(settings, catalog, "rabbitmq-failover", vhost=vhost, switch="orders-clients",
                       shovel_prefetch="1", stall_s="3")
        wait_until(run_id, paused)
        # The shovel's connection gets ~600 KB of deliveries (about 500 messages of 1 KB), then waits.
        relay.hold_after(600 * 1024)
        runs.answer_gate(settings, catalog, run_id, True, "erin", "")
        assert relay.held.wait(timeout=120), "the move never reached its 500th message"
        subprocess.run([*stack, "down", "rabbitmq-primary"], check=True, env=fault_stack, stdout=subprocess.DEVNULL)
        relay.cut()  # the primary is gone: its connections drop, new ones are refused
        try:
            view = wait_until(run_id, finished, timeout=90)
            assert not view.succeeded
            moved = journal.last(view.entries, "action").data
            on_standby = queue_depth(amqp_url(standby), vhost, "orders")
            assert 300 <= moved["moved"] == on_standby < 3000, "the report says exactly what arrived"
            error = journal.last(view.entries, "error").summary
            assert f"orders: {on_standby} arrived on standby" in error and "clients were NOT switched" in error
            outcome = journal.last(view.entries, "outcome").summary
            assert "nothing was restored" in outcome and "rabbitmq-failback" in outcome and \
                f"failover_run={run_id}" in outcome, "how to move the messages back"
            assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == primary_endpoint
        finally:
            subprocess.run([*stack, "up", "rabbitmq-primary"], check=True, env=fault_stack, stdout=subprocess.DEVNULL)
        relay.close()
        arrived, left = drain_ids(standby, vhost, "orders"), taken_ids(direct_primary, "orders", vhost=vhost)
        assert set(arrived) | set(left) == set(sent), "nothing lost"
        assert len(arrived) == len(set(arrived)) and len(left) == len(set(left))
        assert len(set(arrived) & set(left)) <= 1, "at most the shovel's prefetch is on both sides"


# -- traffic while the gate waits: the digest binds the queues and definitions, not their depths -----

@contextlib.contextmanager
def publishing(primary, vhost: str, queue: str):
    """Messages published to `queue` on the primary (5 every 0.2 s, confirmed) while the block runs; yields
    the ids published so far."""
    published: list[str] = []

    def publish_five() -> None:
        published.extend(publish_ids(primary, vhost, queue, 5, prefix=f"live-{len(published) // 5}"))

    with writer(publish_five, every_s=0.2, limit_s=300):
        yield published


def waiting_failover(settings, catalog, vhost):
    run_id = start(settings, catalog, "rabbitmq-failover", vhost=vhost, switch="orders-clients")
    return run_id, wait_until(run_id, paused, timeout=90)


@pytest.fixture
def orders_on_primary(clusters, tmp_path, env):
    """(primary, standby, settings, catalog, vhost, management API of the primary, endpoint file, the 100
    ids in its orders queue): a scratch vhost whose orders queue holds 100 messages, a file switch on the
    primary, both runbooks with a gate that waits up to 10 minutes."""
    primary, standby = clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(json.dumps({"rabbitmq": {"endpoint": PRIMARY_ENDPOINT}}))
    settings, catalog = env(clusters_yaml(tmp_path, MAIN_PORTS, file_switch(endpoint_file)), timeout="600s")
    with scratch_vhost(primary, standby) as vhost, api(primary) as source:
        declare_orders(source, vhost)
        yield primary, standby, settings, catalog, vhost, source, endpoint_file, publish_ids(primary, vhost, "orders", 100)


def test_messages_arriving_while_the_gate_waits_are_drift_and_one_approval_moves_them_all(orders_on_primary, tmp_path):
    primary, standby, settings, catalog, vhost, source, endpoint_file, sent = orders_on_primary
    with publishing(primary, vhost, "orders") as published:
        run_id, view = waiting_failover(settings, catalog, vhost)
        at_plan = journal.last(view.entries, "plan").data["queues"][0]["depth_at_plan"]
        assert at_plan >= 100
        while len(published) < 50 + at_plan - 100:  # new messages land (the writer stops itself after 300 s)
            time.sleep(0.2)
    sent += published  # publishing stops before the answer, as the run's switch stops the clients; all confirmed
    assert queue_depth(amqp_url(primary), vhost, "orders") == len(sent) > at_plan
    runs.answer_gate(settings, catalog, run_id, True, "erin", "standby is ready")
    view = wait_until(run_id, finished, timeout=120)
    drift = drift_after_one_approval(view)
    assert drift.data["drift"] == [f"move backlog:queue:orders detail {at_plan} message(s) at plan time -> "
                                   f"{len(sent)} message(s) at plan time"], drift.data
    assert sorted(drain_ids(standby, vhost, "orders")) == sorted(sent), "every message moved, none twice"
    assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == STANDBY_ENDPOINT

    # `runbook status RUN --json`: the outcome's numbers are named fields, plan rows objects by column.
    shown = runbook_cli("status", run_id, "--json", env={"RUNBOOK_CLUSTERS": str(tmp_path / "clusters.yaml")})
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["outcome"]["outcome"] == "succeeded"
    # seen_at_plan is the depth the re-plan after approval saw (the plan that acted): every message sent
    assert (document["outcome"]["moved"], document["outcome"]["seen_at_plan"]) == (len(sent), len(sent)), \
        document["outcome"]
    [plan] = [e for e in document["journal"] if e["kind"] == "plan"]
    assert {"change": "move backlog", "kind": "queue", "name": "orders",
            "detail": f"{at_plan} message(s) at plan time"} in plan["data"]["rows"]
    assert {"change": "switch", "kind": "endpoint switch", "name": "orders-clients",
            "detail": f"{PRIMARY_ENDPOINT} -> {STANDBY_ENDPOINT}"} in plan["data"]["rows"]


def test_a_queue_declared_while_the_gate_waits_is_asked_again_showing_it_and_one_answer_moves_it(orders_on_primary):
    primary, standby, settings, catalog, vhost, source, _, sent = orders_on_primary
    run_id, view = waiting_failover(settings, catalog, vhost)
    source.send("PUT", f"/api/queues/{vhost}/refunds", {"durable": True})  # someone adds a queue meanwhile
    refunds = publish_ids(primary, vhost, "refunds", 30, prefix="refund")
    runs.answer_gate(settings, catalog, run_id, True, "erin", "")
    note, asked = asked_again(wait_until(run_id, at_second_gate, timeout=120))
    assert any("refunds" in line and line.startswith("create:queue:") for line in note.data["changed"]), note.data
    assert any("refunds" in line and line.startswith("move backlog:queue:") for line in note.data["changed"])
    difference = asked.data["markdown"].split("\n\n")[1]  # after "**Changed since the approved plan**", first
    assert "- create:queue:refunds" in difference and "- move backlog:queue:refunds" in difference, difference
    assert queue_depth(amqp_url(primary), vhost, "refunds") == 30, "nothing moved before the new version is approved"

    runs.answer_gate(settings, catalog, run_id, True, "erin", "refunds too")  # one answer
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert "approval_refused" not in kinds(view)
    assert sorted(drain_ids(standby, vhost, "refunds")) == sorted(refunds)
    assert sorted(drain_ids(standby, vhost, "orders")) == sorted(sent)
