"""Bad input to every Artemis runbook, through the CLI people type: an unknown cluster, queue or address, a
filter Artemis rejects, a limit below zero exit 2 naming what was wrong before a run exists; Artemis
down is one clear line (exit 1), for each runbook, also `runbook run`'s preflight."""
from __future__ import annotations

import pytest

from mq_runbooks.app import runs
from tests.app import test_cli

pytestmark = pytest.mark.slow  # one CLI process per case against the stack's Artemis primary

UNKNOWN_CLUSTER = "no artemis cluster named 'tertiary'"


def runbook(*args, env=None):
    """The CLI in its own process; a generous guard, not a speed check (a loaded 2-core machine took 60 s)."""
    return test_cli.runbook(*args, env=env, timeout=300)

CASES = [
    # (runbook, parameters, what stderr must say)
    ("artemis-dlq-redeliver", ["cluster=tertiary"], UNKNOWN_CLUSTER),
    ("artemis-dlq-redeliver", ["cluster=primary", "dlq=no-such-dlq-q7"], "dlq: 'no-such-dlq-q7' is not a queue"),
    ("artemis-dlq-redeliver", ["cluster=primary", "queue=no-such-queue-q7"], "queue: 'no-such-queue-q7' is not a queue"),
    ("artemis-dlq-redeliver", ["cluster=primary", "filter=colour = = 'red'"], "filter: Artemis rejects the filter"),
    ("artemis-dlq-redeliver", ["cluster=primary", "limit=-1"], "limit: Input should be greater than or equal to 1"),
    ("artemis-dlq-redeliver", ["cluster=primary", "poison_after=-2"], "poison_after: Input should be greater than"),
    ("artemis-drain-stuck", ["cluster=tertiary", "queue=orders"], UNKNOWN_CLUSTER),
    ("artemis-drain-stuck", ["cluster=primary", "queue=no-such-queue-q7", "window_s=1"],
     "queue: 'no-such-queue-q7' is not a queue"),
    ("artemis-drain-stuck", ["cluster=primary", "queue=orders", "park_after=-1"], "park_after: Input should be"),
    ("artemis-drain-stuck", ["cluster=primary", "queue=orders", "window_s=-1"], "window_s: Input should be"),
    ("artemis-address-full", ["cluster=tertiary", "address=orders", "address_full_policy=PAGE"], UNKNOWN_CLUSTER),
    ("artemis-address-full", ["cluster=primary", "address=no-such-address-q7", "address_full_policy=PAGE"],
     "address: 'no-such-address-q7' is not an address"),
    ("artemis-address-full", ["cluster=primary", "address=orders", "max_size_bytes=-7"], "max_size_bytes: Input should be"),
    ("artemis-address-full", ["cluster=primary", "address=orders", "address_full_policy=SPILL"], "address_full_policy"),
    ("artemis-failover", ["cluster=tertiary"], UNKNOWN_CLUSTER),
    ("artemis-failover", ["cluster=backup"], "no artemis cluster in clusters.yaml has standby_of: backup"),
    ("artemis-failback", ["cluster=tertiary"], UNKNOWN_CLUSTER),
]


@pytest.mark.parametrize(("runbook_id", "params", "said"), CASES)
def test_bad_input_exits_2_naming_what_was_wrong(runbook_id, params, said):
    result = runbook("plan", runbook_id, *[word for p in params for word in ("-p", p)])
    assert result.returncode == 2, result.stdout + result.stderr
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("runbook_id", ["artemis-dlq-redeliver", "artemis-drain-stuck", "artemis-address-full",
                                        "artemis-failover"])
def test_run_refuses_bad_input_before_a_run_exists(runbook_id):
    cases = [params for rid, params, _ in CASES if rid == runbook_id]
    before = len(runs.list_runs(limit=1000, runbook_id=runbook_id))
    for params in cases:
        result = runbook("run", runbook_id, *[word for p in params for word in ("-p", p)])
        assert result.returncode == 2, result.stdout + result.stderr
    assert len(runs.list_runs(limit=1000, runbook_id=runbook_id)) == before, "no run was created"


DOWN = [
    ("artemis-dlq-redeliver", ["cluster=primary"]),
    ("artemis-drain-stuck", ["cluster=primary", "queue=orders", "window_s=1"]),
    ("artemis-address-full", ["cluster=primary", "address=orders", "address_full_policy=PAGE"]),
]


@pytest.fixture
def artemis_down(tmp_path):
    """A clusters.yaml whose Artemis pair does not answer (nothing listens on port 1)."""
    config = tmp_path / "clusters.yaml"
    config.write_text("""\
artemis:
  primary: {management_url: "http://127.0.0.1:1/console/jolokia", messaging_url: "amqp://127.0.0.1:1",
            user: admin, password: topsecret, request_timeout_s: 2}
  backup: {management_url: "http://127.0.0.1:1/console/jolokia", messaging_url: "amqp://127.0.0.1:1",
           user: admin, password: topsecret, standby_of: primary, request_timeout_s: 2}
switches:
  artemis-clients: {kind: file, path: "%s", key: artemis.endpoint,
                    values: {primary: "127.0.0.1:1", backup: "127.0.0.1:2"}}
""" % (tmp_path / "switch.json"))
    (tmp_path / "switch.json").write_text('{"artemis": {"endpoint": "127.0.0.1:1"}}')
    return {"RUNBOOK_CLUSTERS": str(config)}


@pytest.mark.parametrize(("runbook_id", "params"), DOWN)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_artemis_down_is_one_clear_line(runbook_id, params, command, artemis_down):
    result = runbook(command, runbook_id, *[word for p in params for word in ("-p", p)], env=artemis_down)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: artemis cluster 'primary' (http://127.0.0.1:1/console/jolokia) is unreachable")
    assert "topsecret" not in result.stdout + result.stderr


@pytest.mark.parametrize("runbook_id", ["artemis-failover", "artemis-failback"])
def test_failover_with_the_pair_down_plans_a_refusal_in_one_line(runbook_id, artemis_down):
    """A primary that does not answer is what a failover is for: the plan says which broker does not
    answer; with the backup down too there is nothing to hand over to."""
    result = runbook("plan", runbook_id, "-p", "cluster=primary", env=artemis_down)
    said = result.stdout + result.stderr
    assert "does not answer" in said and "Traceback" not in said, said
    assert "topsecret" not in said
