"""Runbook `kafka-failover`: move consumer groups and clients from a Kafka cluster to its
MirrorMaker 2 standby. The driver (mq_runbooks.kit.driver) gives it the lock, the gate, the re-plan,
the snapshot, the restore on failure and the outcome; this module is the runbook's own logic:

    observe + plan (flows/kafka_failover_plan.py; unknown groups are missing targets) -> refuse
    untranslatable partitions unless the fallback was chosen -> [gate] -> snapshot, commit the
    translated offsets on the standby, check the groups resume there, switch the clients, canary
    through the switched endpoint (flows/kafka_failover_steps.py, shared with kafka-failback) -> report.
"""
from __future__ import annotations


from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mq_runbooks.flows.kafka_failover_plan import (
    RUNBOOK_ID, FailoverPlan, KafkaFailoverParameters, failover_pair, plan_failover,
)
from mq_runbooks.flows.kafka_failover_steps import MoveAndSwitch
from mq_runbooks.flows.kafka_offsets import inactive_group
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit.driver import Env, Run, runbook_flow


class Failover(MoveAndSwitch[KafkaFailoverParameters, FailoverPlan]):
    id = RUNBOOK_ID
    destination_columns = ("standby topic", "standby target")

    def target(self, params: KafkaFailoverParameters) -> str:
        return f"{params.cluster} -> {params.standby}, groups {', '.join(params.groups)}"

    def destination(self, params: KafkaFailoverParameters) -> str:
        return params.standby

    def observe(self, env: Env, params: KafkaFailoverParameters) -> FailoverPlan:
        # In a run the groups must be empty on the standby (or become so within wait_for_inactive).
        if isinstance(env, Run):
            _, standby, _ = failover_pair(env.clusters, params.cluster, params.standby, RUNBOOK_ID)
            with KafkaClient.from_cluster(standby) as kafka:
                for group in params.groups:
                    inactive_group(kafka, group, params.wait_for_inactive)
        plan = plan_failover(params, env.clusters, env.settings.snapshot_dir)
        if isinstance(env, Run):
            _record_observation(env, plan)
        return plan

    def refusal(self, params: KafkaFailoverParameters, plan: FailoverPlan) -> str | None:
        listed = plan.not_translatable()
        if not listed:
            return None
        return (f"not translatable: {'; '.join(listed[:10])}. Choose the fallback explicitly "
                f"(untranslatable=by_timestamp fallback_to_datetime=...), wait for MM2's checkpoints, or leave "
                f"these groups out")

    def report(self, run: Run, params: KafkaFailoverParameters, plan: FailoverPlan, result: str | None) -> None:
        create_table_artifact(
            table=[{"group": p.group, "partition": f"{p.replica}:{p.partition}",
                    "upstream_offset": p.committed_upstream if p.committed_upstream is not None
                    else p.checkpoint_upstream, "translated_offset": p.target_offset, "how": p.status,
                    "messages_at_risk": p.messages_at_risk} for p in plan.partitions],
            description=f"kafka-failover {plan.cluster} -> {plan.standby}: per group and partition",
        )
        create_markdown_artifact(markdown=f"{plan.markdown()}\n\nSwitch `{plan.switch}`: `{result}` -> "
                                 f"`{plan.switch_new}` (done).", description="kafka-failover report")

    def outcome(self, params: KafkaFailoverParameters, plan: FailoverPlan, result: str | None) -> str:
        return (f"{len(plan.groups)} group(s) moved to {plan.standby}, switch {plan.switch} {result} -> "
                f"{plan.switch_new}; messages at risk: {plan.at_risk_text()}")


def _record_observation(run: Run, plan: FailoverPlan) -> None:
    primary = "reachable" if plan.primary_reachable else f"down: {plan.primary_error}"
    run.observed(f"primary {plan.cluster} {primary}; standby {plan.standby} healthy; MM2 heartbeat "
                 f"{plan.heartbeat_age_s}s ago", primary_reachable=plan.primary_reachable,
                 primary_error=plan.primary_error, heartbeat_age_s=plan.heartbeat_age_s,
                 checkpoints=[{"group": p.group, "topic": p.replica, "partition": p.partition,
                               "upstream": p.checkpoint_upstream, "downstream": p.checkpoint_downstream,
                               "age_s": p.checkpoint_age_s} for p in plan.partitions])


STEPS = Failover()
dry_run = STEPS.dry_run  # `runbook plan` and the CLI's preflight


kafka_failover = runbook_flow(
    STEPS, KafkaFailoverParameters,
    "Move consumer groups and clients to the MirrorMaker 2 standby.")
