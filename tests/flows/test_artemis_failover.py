"""artemis-failover and artemis-failback end to end on a private Artemis pair (its own STACK_DIR and ports,
started and stopped here, so the shared pair is never failed over): real forceFailovers both ways, the
old primary started again as the backup's backup, the switch, a canary through it each time."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from mq_runbooks.app import runs
from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.base.errors import UnreachableError
from mq_runbooks.integrations.artemis import ArtemisManagement
from mq_runbooks.kit import journal
from tests.artemis_support import wait_for
from tests.flows.runbook_harness import finished, paused, runbook_env, start_runbook, wait_until  # noqa: F401

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "artemis-failover"
REPO = Path(__file__).resolve().parents[2]
PORTS = {"STACK_ARTEMIS_PRIMARY_PORT": "61727", "STACK_ARTEMIS_PRIMARY_HTTP_PORT": "8272",
         "STACK_ARTEMIS_BACKUP_PORT": "61728", "STACK_ARTEMIS_BACKUP_HTTP_PORT": "8273"}


@pytest.fixture
def private_pair():
    """(clusters.yaml path, switch file, dev/stack for the pair) of a fresh primary/backup pair; stopped and
    removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="artemis-failover-"))
    env = {**os.environ, **PORTS, "STACK_DIR": str(home / "stack")}
    stack = [str(REPO / "dev" / "stack")]
    started = subprocess.run([*stack, "up", "artemis-primary", "artemis-backup"], env=env, capture_output=True,
                             text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        switch_file = home / "artemis-clients.json"
        switch_file.write_text(json.dumps({"artemis": {"endpoint": f"127.0.0.1:{PORTS['STACK_ARTEMIS_PRIMARY_PORT']}"}}))
        config = home / "clusters.yaml"
        config.write_text(f"""\
artemis:
  primary: {{management_url: "http://127.0.0.1:8272/console/jolokia", messaging_url: "amqp://127.0.0.1:61727",
            user: admin, password: admin}}
  backup: {{management_url: "http://127.0.0.1:8273/console/jolokia", messaging_url: "amqp://127.0.0.1:61728",
           user: admin, password: admin, standby_of: primary}}
switches:
  artemis-clients:
    kind: file
    path: "{switch_file}"
    key: artemis.endpoint
    values: {{primary: "127.0.0.1:61727", backup: "127.0.0.1:61728"}}
""")
        yield config, switch_file, lambda *args: subprocess.run([*stack, *args], env=env, capture_output=True,
                                                                 text=True, timeout=180)
    finally:
        subprocess.run([*stack, "down", "artemis-primary", "artemis-backup"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def test_failover_then_failback_switch_the_clients_and_a_canary_comes_back_each_time(private_pair, runbook_env):
    config, switch_file, pair_stack = private_pair
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_CLUSTERS=str(config))
    clusters = load_clusters(config)

    run_id = start_runbook(settings, catalog, RUNBOOK)
    view = wait_until(run_id, paused, timeout=60)
    plan = journal.last(view.entries, "plan")
    assert [row[0] for row in plan.data["rows"]] == ["fail over", "switch", "canary"]
    assert plan.data["rows"][1][2:] == ["127.0.0.1:61727", "127.0.0.1:61728"]
    assert "(in sync)" in plan.summary
    with ArtemisManagement.from_cluster(clusters.artemis_cluster("primary")) as artemis:
        assert artemis.broker().active, "nothing changes before approval"

    runs.answer_gate(settings, catalog, run_id, True, "grace", "primary's disk is failing")
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, view.message
    steps = [e.data["step"] for e in view.entries if e.kind == "action"]
    assert steps == ["force-failover", "switch", "canary"]
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61728"
    with ArtemisManagement.from_cluster(clusters.artemis_cluster("backup")) as artemis:
        assert artemis.broker().active
    canary = [e for e in view.entries if e.kind == "action" and e.data["step"] == "canary"][0]
    assert canary.data["received"] and canary.data["endpoint"] == "127.0.0.1:61728"

    # Run again: the backup is active and the switch points at it, so there is nothing to change.
    again = start_runbook(settings, catalog, RUNBOOK)
    view = wait_until(again, finished, timeout=60)
    assert journal.last(view.entries, "outcome").data["outcome"] == "unchanged"

    # Failing back before the old primary runs again is refused, naming what to do.
    settings, catalog = runbook_env("artemis-failback", RUNBOOK_CLUSTERS=str(config))
    early = start_runbook(settings, catalog, "artemis-failback")
    view = wait_until(early, finished, timeout=60)
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "refused" and "primary does not answer (start it again" in outcome.summary

    # The old primary starts again: it finds the active backup and syncs from it as its backup.
    started = pair_stack("up", "artemis-primary")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "(backup, in sync)" in pair_stack("status", "artemis-primary").stdout
    back = start_runbook(settings, catalog, "artemis-failback")
    view = wait_until(back, paused, timeout=60)
    plan = journal.last(view.entries, "plan")
    assert [row[0] for row in plan.data["rows"]] == ["fail back", "switch", "canary"] and "(in sync)" in plan.summary
    runs.answer_gate(settings, catalog, back, True, "heidi", "primary's disk replaced")
    view = wait_until(back, finished, timeout=120)
    assert view.succeeded, view.message
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61727"
    with ArtemisManagement.from_cluster(clusters.artemis_cluster("primary")) as artemis:
        assert artemis.broker().active
    canary = [e for e in view.entries if e.kind == "action" and e.data["step"] == "canary"][0]
    assert canary.data["received"] and canary.data["endpoint"] == "127.0.0.1:61727"
    # The backup, stopped by the hand-over, starts again as a backup in sync.
    assert pair_stack("up", "artemis-backup").returncode == 0
    assert "(active, backup in sync)" in pair_stack("status", "artemis-primary").stdout


def test_a_failed_canary_puts_the_switch_back_and_says_the_backup_stays_active(private_pair, runbook_env):
    config, switch_file, _ = private_pair
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_CLUSTERS=str(config), RUNBOOK_INJECT_FAULT="fail-before:canary")
    run_id = start_runbook(settings, catalog, RUNBOOK)
    wait_until(run_id, paused, timeout=60)
    runs.answer_gate(settings, catalog, run_id, True, "heidi", "")
    view = wait_until(run_id, finished, timeout=120)
    assert not view.succeeded
    outcome = journal.last(view.entries, "outcome")
    assert "rolled back" in outcome.summary and "switch artemis-clients restored to '127.0.0.1:61727'" in outcome.summary
    assert "stays active" in outcome.summary, outcome.summary
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61727"


def test_a_killed_primary_the_backup_takes_over_and_failover_switches_with_a_canary_then_fails_back(
        private_pair, runbook_env):
    """The 3 a.m. case: the primary's process dies (SIGKILL). Artemis' backup takes over by itself; the
    runbook's plan has nothing to hand over, switches the clients and proves it with a canary; with the
    primary started again (a backup in sync), artemis-failback hands back."""
    config, switch_file, pair_stack = private_pair
    clusters = load_clusters(config)
    pid = int((config.parent / "stack" / "artemis-primary" / "pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)  # the private pair's primary, started by this test's fixture

    def backup_active():
        try:
            with ArtemisManagement.from_cluster(clusters.artemis_cluster("backup")) as artemis:
                return artemis.broker().active
        except UnreachableError:
            return False
    wait_for(backup_active, timeout=90, what="the backup active after the primary was killed")

    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_CLUSTERS=str(config))
    run_id = start_runbook(settings, catalog, RUNBOOK)
    view = wait_until(run_id, paused, timeout=60)
    plan = journal.last(view.entries, "plan")
    assert [row[0] for row in plan.data["rows"]] == ["switch", "canary"], plan.data["rows"]
    runs.answer_gate(settings, catalog, run_id, True, "grace", "primary host died")
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, view.message
    assert [e.data["step"] for e in view.entries if e.kind == "action"] == ["switch", "canary"]
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61728"

    assert pair_stack("up", "artemis-primary").returncode == 0
    settings, catalog = runbook_env("artemis-failback", RUNBOOK_CLUSTERS=str(config))
    back = start_runbook(settings, catalog, "artemis-failback")
    wait_until(back, paused, timeout=60)
    runs.answer_gate(settings, catalog, back, True, "heidi", "primary host replaced")
    view = wait_until(back, finished, timeout=120)
    assert view.succeeded, view.message
    assert json.loads(switch_file.read_text())["artemis"]["endpoint"] == "127.0.0.1:61727"
    canary = [e for e in view.entries if e.kind == "action" and e.data["step"] == "canary"][0]
    assert canary.data["received"] and canary.data["endpoint"] == "127.0.0.1:61727"
