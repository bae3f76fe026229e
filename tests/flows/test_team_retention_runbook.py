"""A team writes `kafka-retention-extend` from the guide alone (issue 27, item 2): a team catalog
(RUNBOOK_TEAM_CATALOG) whose module uses only the documented broker API, run end to end through its
gate on the primary Kafka and undone by `runbook restore` (issue 27, item 1), and a failure after
the change whose automatic restore puts the old retention.ms back: the old override, or the default
(by deleting the override), and nothing else."""
from __future__ import annotations

import ast
import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from mq_runbooks.app import restores, runs, starts
from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit import journal
from tests.flows.runbook_harness import finished, kinds, paused, team_catalog_env, wait_until  # noqa: F401
from tests.kafka_groups import topic_of_two

REPO = Path(__file__).resolve().parents[2]
CATALOG = Path(__file__).resolve().parent / "retention_catalog"
MODULE = CATALOG / "retention_extend.py"
# What the documented names of the guide's broker API section are called on in the module.
RECEIVERS = {"env": "env", "run": "run", "kafka": "kafka", "records": "kafka_records"}


def documented_section() -> str:
    spec = importlib.util.spec_from_file_location("broker_api_reference", REPO / "docs" / "reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    return reference.section()


def test_the_runbook_uses_only_the_documented_api():
    source = MODULE.read_text()
    tree = ast.parse(source)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not [m for m in imported if m.startswith(("confluent_kafka", "mq_runbooks.integrations"))], imported
    section = documented_section()
    called = set(re.findall(r"\b(env|run)\.(\w+)\(", source))
    called |= {("kafka", name) for name in re.findall(r"\bkafka\.(\w+)\(", source)}
    called |= {("kafka_records", name) for name in re.findall(r"kafka_records\([^)]*\)\.(\w+)\(", source)}
    assert ("env", "kafka_records") in called and ("kafka", "alter_topic_config") in called
    for receiver, name in sorted(called):
        documented = {receiver} | ({"env"} if receiver == "run" else set())
        assert any(f"- `{r}.{name}(" in section for r in documented), f"{receiver}.{name} is not documented"


@pytest.fixture
def team_env(tmp_path, team_catalog_env, clusters):
    team = tmp_path / "team-catalog"
    shutil.copytree(CATALOG, team)
    yaml_path = team / "kafka-retention-extend.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("timeout: 30m", "timeout: 60s"))
    return team_catalog_env(team)


@pytest.fixture
def lagging_topic(clusters, unique):
    """(topic, group): a topic of two records; the group committed at offset 0, so it lags by 2."""
    config = clusters.kafka_cluster("primary").client_config()
    topic, group = topic_of_two(config, unique("retention")), unique("retention-group")
    with KafkaClient(config) as kafka:
        assert kafka.alter_group_offsets(group, {(topic, 0): 0}) == {(topic, 0): None}
    return topic, group


def retention(clusters, topic: str):
    """retention.ms of the topic, read back from Kafka: (value, overridden), and retention.bytes's."""
    with KafkaClient.from_cluster(clusters.kafka_cluster("primary")) as kafka:
        config = kafka.describe_topic_config(topic)
    return (config["retention.ms"].value, config["retention.ms"].overridden), config["retention.bytes"].overridden


def override(clusters, topic: str, value: str) -> None:
    with KafkaClient.from_cluster(clusters.kafka_cluster("primary")) as kafka:
        kafka.alter_topic_config(topic, set={"retention.ms": value})


def start(settings, catalog, **raw) -> str:
    runbook = catalog.get("kafka-retention-extend")
    params = runbook.validate_parameters({"cluster": "primary", **raw})
    runbook.planner(params, load_clusters(settings.clusters))  # the CLI's preflight
    return starts.start_run(settings, runbook, params, requested_by="alice")


def test_extend_through_the_gate(team_env, lagging_topic, clusters):
    settings, catalog = team_env
    topic, group = lagging_topic
    override(clusters, topic, "3600000")
    run_id = start(settings, catalog, topic=topic, retention_ms="1209600000", group=group)
    view = wait_until(run_id, paused)
    plan = journal.last(view.entries, "plan")
    assert plan.data["columns"] == ["topic", "key", "now", "after", "oldest unread"]
    row = plan.data["rows"][0]
    assert row[:4] == [topic, "retention.ms", "3600000", "1209600000"]
    assert row[4] != "-", "the group's oldest unread record was read at its committed offset"
    assert retention(clusters, topic)[0] == ("3600000", True), "nothing changes before the approval"

    runs.answer_gate(settings, catalog, run_id, True, "carol", "consumers are 2 days behind")
    view = wait_until(run_id, finished)

    assert view.succeeded, view.message
    assert retention(clusters, topic) == (("1209600000", True), False), "only retention.ms was changed"
    snapshot = journal.last(view.entries, "snapshot")
    assert snapshot.data["config"] == {"retention.ms": {"value": "3600000", "overridden": True}}
    assert snapshot.data["restore_command"].endswith(f"--entity-name {topic} --add-config retention.ms=3600000")
    assert journal.last(view.entries, "action").data["step"] == "alter-retention"

    # Undo after a run that succeeded: a restore run of its own, through the same gate.
    restore_id = restores.start_restore(settings, restores.restore_request(catalog, run_id), "alice")
    waiting = wait_until(restore_id, paused)
    [row] = journal.last(waiting.entries, "plan").data["rows"]
    assert row == [f"{topic} retention.ms", "1209600000", "3600000", "1209600000", "as the run left it"]
    runs.answer_gate(settings, catalog, restore_id, True, "carol", "the consumers caught up")
    restored = wait_until(restore_id, finished)
    assert restored.succeeded, (restored.message, restored.entries[-4:])
    assert retention(clusters, topic) == (("3600000", True), False), "the old retention.ms, and nothing else"


@pytest.mark.parametrize("before", [None, "3600000"], ids=["was-default", "was-overridden"])
def test_a_failure_after_the_change_restores_the_old_retention(team_env, lagging_topic, clusters, monkeypatch, before):
    monkeypatch.setenv("RUNBOOK_INJECT_FAULT", "verify")
    settings, catalog = team_env
    topic, group = lagging_topic
    if before is not None:
        override(clusters, topic, before)
    original = retention(clusters, topic)
    run_id = start(settings, catalog, topic=topic, retention_ms="1209600000", group=group)
    wait_until(run_id, paused)
    runs.answer_gate(settings, catalog, run_id, True, "carol", "")
    view = wait_until(run_id, finished)

    assert not view.succeeded
    assert kinds(view)[-3:] == ["rollback", "outcome", "postmortem"]
    rollback = journal.last(view.entries, "rollback")
    assert rollback.data["restored"] is True, rollback.summary
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "failed" and "rolled back" in outcome.summary
    assert outcome.data["changed"] == [f"{topic} retention.ms {original[0][0]} -> 1209600000"]
    # Read back from Kafka: the old value, or no override at all when it was the default.
    assert retention(clusters, topic) == original
    if before is None:
        assert original[0][1] is False and "back to the default" in rollback.summary
