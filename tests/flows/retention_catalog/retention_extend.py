"""Runbook `kafka-retention-extend`, written as a team would from docs/writing-runbooks.md alone: raise
a topic's retention.ms while a consumer group lags, so its unread records are kept until it catches
up. It uses only the documented broker API (Env/Run and the clients they return): no confluent_kafka."""
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Restore, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RestoreItem

KEY = "retention.ms"


class RetentionParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cluster: str = Field(description="a Kafka cluster named in clusters.yaml")
    topic: str = Field(min_length=1, max_length=249, description="the topic whose records must be kept longer")
    retention_ms: int = Field(ge=60_000, description="the new retention.ms (at least a minute)")
    group: str | None = Field(None, description="the lagging consumer group (its oldest unread record is shown)")


@dataclass(frozen=True)
class RetentionPlan(PlanTable):
    KEY_COLUMNS = ("topic", "key")
    INTENT_COLUMNS = ("after",)
    topic: str
    now: str | None  # None: no such topic
    overridden: bool
    after: str
    oldest_unread: str  # the timestamp of the group's oldest unread record, or "-"

    def columns(self): return ("topic", "key", "now", "after", "oldest unread")
    def rows(self): return [(self.topic, KEY, f"{self.now}{'' if self.overridden else ' (default)'}", self.after,
                             self.oldest_unread)]
    def summary(self): return f"{self.topic}: {KEY} {self.now} -> {self.after}"
    def missing_targets(self): return [f"topic {self.topic!r}"] if self.now is None else []
    def changes_anything(self): return self.now != self.after


class RetentionExtend(RunbookSteps[RetentionParameters, RetentionPlan]):
    id = "kafka-retention-extend"

    def target(self, params): return f"{params.cluster}/{params.topic}"

    def observe(self, env: Env, params: RetentionParameters) -> RetentionPlan:
        with env.kafka(params.cluster) as kafka:
            if params.topic not in kafka.list_topics():
                return RetentionPlan(params.topic, None, False, str(params.retention_ms), "-")
            current = kafka.describe_topic_config(params.topic)[KEY]
            lag = [p for p in kafka.group_lag(params.group) if p.topic == params.topic] if params.group else []
        unread = [p for p in lag if p.lag and p.committed_offset is not None]
        oldest = "-"
        if unread:
            first = max(unread, key=lambda p: p.lag)
            record = env.kafka_records(params.cluster).read_record(first.topic, first.partition, first.committed_offset)
            oldest = record.timestamp.isoformat(timespec="seconds") if record.timestamp else "?"
        return RetentionPlan(params.topic, current.value, current.overridden, str(params.retention_ms), oldest)

    def refusal(self, params, plan):
        if plan.now is not None and int(plan.now) > params.retention_ms:
            return f"{KEY} of {plan.topic} is {plan.now}, longer than {params.retention_ms}: this runbook only extends"
        return None

    def snapshot(self, run: Run, params, plan) -> Snapshot:
        with run.kafka(params.cluster) as kafka:
            was = kafka.describe_topic_config(params.topic)[KEY]
        bootstrap = run.kafka_client_config(params.cluster)["bootstrap.servers"]
        undo = f"--add-config {KEY}={was.value}" if was.overridden else f"--delete-config {KEY}"
        return Snapshot(summary=f"{params.topic}: {KEY} was {was.value}" + ("" if was.overridden else " (the default)"),
                        data={"topic": params.topic, "config": {KEY: {"value": was.value, "overridden": was.overridden}}},
                        restore_command=f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
                                        f"--entity-name {params.topic} {undo}")

    def act(self, run: Run, params: RetentionParameters, plan: RetentionPlan) -> None:
        with run.kafka(params.cluster) as kafka:
            run.step("alter-retention", lambda: kafka.alter_topic_config(params.topic, set={KEY: plan.after}),
                     f"{params.topic} {KEY} {plan.now} -> {plan.after}")

    def verify(self, run, params, plan, result) -> Verification:
        with run.kafka(params.cluster) as kafka:
            now = kafka.describe_topic_config(params.topic)[KEY]
        return Verification(ok=now.value == plan.after and now.overridden, summary=f"{params.topic}: {KEY} {now.value}")

    def restore(self, run, params, plan, snapshot: Snapshot) -> Restore:
        saved = snapshot.data["config"]  # only the keys act changed: never touch the others
        with run.kafka(params.cluster) as kafka:
            kafka.alter_topic_config(params.topic, set={k: v["value"] for k, v in saved.items() if v["overridden"]},
                                     delete=[k for k, v in saved.items() if not v["overridden"]])
        done = ", ".join(f"{k}={v['value']}" if v["overridden"] else f"{k} back to the default" for k, v in saved.items())
        return Restore(summary=f"{params.topic}: {done}", restored=True)

    def restore_items(self, env: Env, params, snapshot: Snapshot, original) -> list[RestoreItem]:
        """`runbook restore RUN`: each saved key against its value now and the one the run set."""
        with env.kafka(params.cluster) as kafka:
            config = kafka.describe_topic_config(params.topic)
        shown = lambda value, overridden: value if overridden else f"{value} (default)"  # noqa: E731
        return [RestoreItem(f"{params.topic} {key}", saved=shown(v["value"], v["overridden"]),
                            now=shown(config[key].value, config[key].overridden), left=str(params.retention_ms))
                for key, v in snapshot.data["config"].items()]


STEPS = RetentionExtend()
dry_run = STEPS.dry_run


kafka_retention_extend = runbook_flow(
    STEPS, RetentionParameters,
    "Raise a topic's retention.ms while its consumers lag.")
