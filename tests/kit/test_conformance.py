"""Every runbook keeps the driver's rules (mq_runbooks/kit/conformance.py): the shipped catalog, the guide's
worked example and every scaffold of `runbook new`; and the rules catch what they say they catch."""
from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.resources import default_catalog
from mq_runbooks.kit.conformance import check_runbook, steps_of, validate_directory
from mq_runbooks.kit.plans import Plan
from tests.app.test_cli import runbook

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(path.stem for path in default_catalog().glob("*.yaml"))
EXAMPLE = REPO / "docs" / "examples" / "team-catalog"
PLAN_METHODS = [name for name in Plan.__dict__ if not name.startswith("_")]


@pytest.mark.parametrize("runbook_id", SHIPPED)
def test_every_shipped_runbook_keeps_the_drivers_rules(runbook_id):
    shipped = load_catalog(default_catalog()).get(runbook_id)
    assert check_runbook(shipped) == []
    # The plan class its observe() returns implements the whole plan contract.
    plan_type = typing.get_type_hints(type(steps_of(shipped)).observe).get("return")
    assert plan_type is not None, f"{runbook_id}: observe() must say which plan it returns"
    missing = [name for name in PLAN_METHODS if not callable(getattr(plan_type, name, None))]
    assert missing == [], f"{plan_type.__name__} lacks {missing}"


def test_the_worked_example_keeps_the_rules():
    assert validate_directory(EXAMPLE) == {str(EXAMPLE / "rabbitmq-queue-limit.yaml"): []}


def test_the_rules_name_what_is_broken(tmp_path):
    team = tmp_path / "team"
    team.mkdir()
    # Its own module name: Python imports a module once per process, whichever directory it came from.
    (team / "queue_limit_broken.py").write_text((EXAMPLE / "queue_limit.py").read_text()
                                                .replace('id = "rabbitmq-queue-limit"', 'id = "queue-limit"')
                                                .replace("dry_run = STEPS.dry_run", "dry_run = STEPS.observe"))
    (team / "rabbitmq-queue-limit.yaml").write_text((EXAMPLE / "rabbitmq-queue-limit.yaml").read_text()
                                                    .replace("queue_limit:", "queue_limit_broken:"))
    problems = validate_directory(team)[str(team / "rabbitmq-queue-limit.yaml")]
    assert any("it must be the id 'rabbitmq-queue-limit'" in p for p in problems), problems
    assert any("is not STEPS.dry_run" in p for p in problems), problems
    (team / "broken.yaml").write_text("id: broken\ntitle: x\n")
    report = validate_directory(team)
    assert "description" in report[str(team / "broken.yaml")][0], "one broken file is named with its fault"
    assert report[str(team / "rabbitmq-queue-limit.yaml")], "and does not hide the others"


SCAFFOLDS = [("kafka", "group", "-p group=nosuch-group"), ("kafka", "topic", "-p topic=nosuch-topic"),
             ("rabbitmq", "queue", "-p queue=nosuch-queue"), ("rabbitmq", "vhost", "-p vhost=nosuch-vhost"),
             ("redis", "stream", "-p stream=nosuch-stream"), ("artemis", "queue", "-p queue=nosuch-queue"),
             ("rocketmq", "group", "-p group=nosuch-group")]


@pytest.mark.parametrize("broker,kind,target", SCAFFOLDS, ids=[f"{b}-{k}" for b, k, _ in SCAFFOLDS])
def test_a_scaffold_validates_and_plans_out_of_the_box(tmp_path, clusters, broker, kind, target):
    made = runbook("new", f"{broker}-{kind}-check", "--broker", broker, "--target", kind,
                   "--dir", str(tmp_path / "team"))
    assert made.returncode == 0, made.stderr
    assert target.split("=")[0] in made.stdout, "it says how to plan it"
    env = {"RUNBOOK_TEAM_CATALOG": str(tmp_path / "team")}
    checked = runbook("validate", str(tmp_path / "team"), env=env)
    assert checked.returncode == 0 and "1 valid, 0 invalid" in checked.stdout, checked.stdout + checked.stderr
    listed = runbook("list", "--json", env=env)
    assert f"{broker}-{kind}-check" in [item["id"] for item in json.loads(listed.stdout)]
    # Planning a target that does not exist is refused as bad input, before a run exists.
    planned = runbook("plan", f"{broker}-{kind}-check", "-p", "cluster=primary", *target.split(), env=env)
    assert planned.returncode == 2 and "does not exist" in planned.stderr, planned.stdout + planned.stderr
    again = runbook("new", f"{broker}-{kind}-check", "--broker", broker, "--dir", str(tmp_path / "team"))
    assert again.returncode == 2 and "already exist" in again.stderr


def test_a_scaffold_names_the_targets_of_its_broker(tmp_path):
    made = runbook("new", "redis-team-check", "--broker", "redis", "--target", "queue", "--dir", str(tmp_path))
    assert made.returncode == 2 and "--target queue is not a target of redis (allowed: stream)" in made.stderr
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_scaffolds_plan_real_targets(tmp_path, clusters, unique):
    """The topic, vhost and stream scaffolds read what they show from the real brokers."""
    from mq_runbooks.integrations.kafka import KafkaClient
    from mq_runbooks.integrations.redis_streams import RedisStreams

    topic, stream = unique("scaffold-topic"), unique("scaffold-stream")
    with KafkaClient.from_cluster(clusters.kafka_cluster("primary")) as kafka:
        kafka.create_topic(topic, 2)
    with RedisStreams.from_cluster(clusters.redis_cluster("primary")) as redis:
        redis._call("XADD", "XADD", stream, "*", "k", "v")
        redis._call("XGROUP", "XGROUP", "CREATE", stream, "billing", "0")
    env = {"RUNBOOK_TEAM_CATALOG": str(tmp_path)}
    try:
        for broker, kind, args, columns in [
            ("kafka", "topic", ["-p", f"topic={topic}"], ["topic", "partition", "log start", "log end", "retention.ms"]),
            ("rabbitmq", "vhost", ["-p", "vhost=/"], ["queue", "ready", "unacked", "consumers", "policy"]),
            ("redis", "stream", ["-p", f"stream={stream}"], ["group", "lag", "pending", "consumers"]),
        ]:
            assert runbook("new", f"{broker}-{kind}-peek", "--broker", broker, "--target", kind,
                           "--dir", str(tmp_path)).returncode == 0
            planned = runbook("plan", f"{broker}-{kind}-peek", "-p", "cluster=primary", *args, "--json", env=env)
            assert planned.returncode == 0, planned.stderr
            document = json.loads(planned.stdout)
            assert document["columns"] == columns and document["changes_anything"] is False
            if kind == "topic":
                assert [row["partition"] for row in document["rows"]] == [0, 1]
            if kind == "stream":
                # lag 1: the group starts before its one entry (plan --json rows are objects keyed by column)
                assert document["rows"] == [{"group": "billing", "lag": 1, "pending": 0, "consumers": 0}]
    finally:
        with RedisStreams.from_cluster(clusters.redis_cluster("primary")) as redis:
            redis._call("DEL", "DEL", stream)


def test_a_scaffold_plans_a_real_queue(tmp_path, clusters, unique):
    import pika

    queue = unique("scaffold")
    connection = pika.BlockingConnection(pika.URLParameters(clusters.rabbit_cluster("primary").amqp_url.get_secret_value()))
    try:
        connection.channel().queue_declare(queue, auto_delete=False)
        assert runbook("new", "rabbitmq-team-peek", "--broker", "rabbitmq", "--dir", str(tmp_path)).returncode == 0
        planned = runbook("plan", "rabbitmq-team-peek", "-p", "cluster=primary", "-p", f"queue={queue}", "--json",
                          env={"RUNBOOK_TEAM_CATALOG": str(tmp_path)})
        assert planned.returncode == 0, planned.stderr
        document = json.loads(planned.stdout)
        assert document["columns"] == ["queue", "ready", "unacked", "consumers"] and document["rows"][0]["queue"] == queue
        assert document["changes_anything"] is False
    finally:
        connection.channel().queue_delete(queue)
        connection.close()


def test_an_artemis_scaffold_plans_a_real_queue(tmp_path, clusters, unique):
    from tests.artemis_support import produce, remove_queues

    queue = unique("scaffold")
    primary = clusters.artemis_cluster("primary")
    produce(primary, queue, ["a", "b"])
    try:
        assert runbook("new", "artemis-team-peek", "--broker", "artemis", "--dir", str(tmp_path)).returncode == 0
        planned = runbook("plan", "artemis-team-peek", "-p", "cluster=primary", "-p", f"queue={queue}", "--json",
                          env={"RUNBOOK_TEAM_CATALOG": str(tmp_path)})
        assert planned.returncode == 0, planned.stderr
        document = json.loads(planned.stdout)
        assert document["columns"] == ["queue", "messages", "delivering", "consumers"]
        row = document["rows"][0]  # plan --json rows are objects keyed by column
        assert (row["queue"], row["messages"]) == (queue, 2) and document["changes_anything"] is False
    finally:
        remove_queues(primary, queue)


def test_a_rocketmq_scaffold_plans_a_real_group(tmp_path, unique):
    from tests.rocketmq_support import consume, make_group, make_topic, produce, rocketmq_primary

    primary, topic, group = rocketmq_primary(), unique("scaffold"), unique("scaffold-group")
    make_topic(primary, topic, 2)
    make_group(primary, group)
    produce(primary, topic, ["a", "b", "c"])
    consume(primary, group, topic)
    produce(primary, topic, ["d"])
    assert runbook("new", "rocketmq-team-peek", "--broker", "rocketmq", "--dir", str(tmp_path)).returncode == 0
    planned = runbook("plan", "rocketmq-team-peek", "-p", "cluster=primary", "-p", f"group={group}", "--json",
                      env={"RUNBOOK_TEAM_CATALOG": str(tmp_path)})
    assert planned.returncode == 0, planned.stderr
    document = json.loads(planned.stdout)
    assert document["columns"] == ["topic", "broker", "queue", "broker offset", "consumer offset", "diff"]
    assert sum(row["diff"] for row in document["rows"]) == 1 and document["changes_anything"] is False


def test_plans_are_the_plan_protocol():
    from mq_runbooks.flows.replay_plan import ReplayPlan

    assert isinstance(ReplayPlan(group="g", spec_description="to earliest", partitions=()), Plan)


def test_the_policy_is_checked_against_teams_yaml(tmp_path):
    team = tmp_path / "team"
    team.mkdir()
    (team / "queue_limit_teams.py").write_text((EXAMPLE / "queue_limit.py").read_text())
    (team / "rabbitmq-queue-limit.yaml").write_text((EXAMPLE / "rabbitmq-queue-limit.yaml").read_text()
                                                    .replace("queue_limit:", "queue_limit_teams:"))
    text = (team / "rabbitmq-queue-limit.yaml").read_text()
    approvers = next(line for line in text.splitlines() if "approvers:" in line)
    (team / "rabbitmq-queue-limit.yaml").write_text(text.replace(approvers, '  approvers: ["@uxa-platform-sr", "erin"]'))
    teams = tmp_path / "teams.yaml"
    teams.write_text("rabbitmq-oncall: [erin]\n")
    path = str(team / "rabbitmq-queue-limit.yaml")
    assert validate_directory(team, teams)[path] == [
        f"approval.approvers: @uxa-platform-sr is not a team of {teams} (teams: @rabbitmq-oncall)"]
    missing = validate_directory(team, tmp_path / "nowhere.yaml")[path]
    assert missing == [f"approval.approvers: @uxa-platform-sr is a team, but there is no {tmp_path / 'nowhere.yaml'} "
                       f"(RUNBOOK_TEAMS) to say who is in it"]
    checked = runbook("validate", str(team), env={"RUNBOOK_TEAMS": str(teams)})
    assert checked.returncode == 1 and "@uxa-platform-sr is not a team" in checked.stdout
    doctor = runbook("doctor", env={"RUNBOOK_TEAM_CATALOG": str(team), "RUNBOOK_TEAMS": str(teams)})
    assert "teams\t" in doctor.stdout and "rabbitmq-queue-limit: approval.approvers: @uxa-platform-sr is not a team" \
        in doctor.stdout and doctor.returncode == 1
    no_file = runbook("doctor", env={"RUNBOOK_TEAMS": str(tmp_path / "nowhere.yaml")})
    assert no_file.returncode == 1 and "no such file (RUNBOOK_TEAMS): the policies name @artemis-oncall, @kafka-oncall" in no_file.stdout


def test_nested_keys_and_yaml_errors_name_their_place(tmp_path):
    from mq_runbooks.base.catalog import CatalogError, load_runbook

    text = (REPO / "mq_runbooks" / "runbooks" / "kafka-replay.yaml").read_text()
    misspelt = tmp_path / "kafka-replay.yaml"
    misspelt.write_text(text.replace("  approvers:", "  aprovers:", 1))
    with pytest.raises(CatalogError) as caught:
        load_runbook(misspelt, resolve=False)
    assert "approval.aprovers: unknown key (allowed: approvers, required, self_approval, timeout)" in str(caught.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: broken\ntitle: [unclosed\n")
    with pytest.raises(CatalogError) as caught:
        load_runbook(broken, resolve=False)
    assert f'in "{broken}", line' in str(caught.value) and "<unicode string>" not in str(caught.value)


def test_an_untouched_scaffold_title_is_a_warning(tmp_path):
    made = runbook("new", "kafka-warned", "--broker", "kafka", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    checked = runbook("validate", str(tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "warning: title: \"TODO a title in the operator's words\" is the scaffold's" in checked.stdout


def test_a_tuple_parameter_takes_one_or_repeated_p(tmp_path):
    """`tuple[str, ...]` reads as "list of text" in `runbook show`, so `-p topic=x` must work as for a list."""
    team = tmp_path / "team"
    team.mkdir()
    (team / "queue_limit_tuple.py").write_text((EXAMPLE / "queue_limit.py").read_text().replace(
        '    max_length: int = Field(ge=0,',
        '    tags: tuple[str, ...] = Field((), description="labels")\n    max_length: int = Field(ge=0,'))
    (team / "rabbitmq-queue-limit.yaml").write_text((EXAMPLE / "rabbitmq-queue-limit.yaml").read_text()
                                                    .replace("queue_limit:", "queue_limit_tuple:"))
    from mq_runbooks.base.catalog import make_importable

    make_importable(team)
    (tmp_path / "empty").mkdir()
    runbook_ = load_catalog(tmp_path / "empty", team).get("rabbitmq-queue-limit")
    base = {"cluster": "primary", "queue": "q", "max_length": "5"}
    assert runbook_.validate_parameters({**base, "tags": "one"}).tags == ("one",)
    assert runbook_.validate_parameters({**base, "tags": ["one", "two"]}).tags == ("one", "two")
