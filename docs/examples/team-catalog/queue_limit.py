"""Runbook `rabbitmq-queue-limit`: cap a queue's length during an incident (a policy with max-length and
overflow reject-publish), so a runaway producer cannot fill the broker's disk. docs/writing-runbooks.md"""
from dataclasses import dataclass, replace
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.kit.driver import Env, Run, RunbookSteps, runbook_flow
from mq_runbooks.kit.plans import PlanTable
from mq_runbooks.kit.records import Restore, Snapshot, Verification


class LimitParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cluster: str = Field(description="a RabbitMQ cluster named in clusters.yaml")
    vhost: str = Field("/", description="the virtual host")
    queue: str = Field(min_length=1, max_length=255, description="the queue to cap")
    max_length: int = Field(ge=0, description="messages the queue keeps at most; more publishes are refused")


@dataclass(frozen=True)
class LimitPlan(PlanTable):
    queue: str
    ready: int | None  # None: no such queue
    policy_now: str | None
    max_length: int

    def columns(self): return ("queue", "ready now", "policy now", "policy after")
    def rows(self): return [(self.queue, self.ready, self.policy_now, f"incident-limit-{self.queue}")]
    def summary(self): return f"cap {self.queue} at {self.max_length} message(s) ({self.ready} ready now)"
    def missing_targets(self): return [f"queue {self.queue!r}"] if self.ready is None else []
    def digest(self): return PlanTable.digest(replace(self, ready=self.ready is not None))  # bound to all but the depth


class QueueLimit(RunbookSteps[LimitParameters, LimitPlan]):
    id = "rabbitmq-queue-limit"
    verify_attempts = 10  # a queue's `policy` shows in the management API with its next stats (every 5 s)

    def target(self, params): return f"{params.cluster}{params.vhost} queue {params.queue}"

    def observe(self, env: Env, params: LimitParameters) -> LimitPlan:
        with env.rabbitmq(params.cluster) as rabbit:
            queue = next((q for q in rabbit.queues(params.vhost) if q.name == params.queue), None)
        return LimitPlan(params.queue, queue and queue.messages_ready, queue and queue.policy, params.max_length)

    def refusal(self, params, plan):  # one policy applies to a queue: never replace another team's silently
        return f"queue {plan.queue} is governed by policy {plan.policy_now}" if plan.policy_now else None

    def snapshot(self, run, params, plan):
        return Snapshot(summary=f"{plan.queue} had no policy: restore = delete {_policy(params)}",
                        restore_command=f"rabbitmqctl clear_policy -p {params.vhost} incident-limit-{params.queue}")

    def act(self, run: Run, params: LimitParameters, plan: LimitPlan) -> None:
        body = {"pattern": f"^{plan.queue}$", "apply-to": "queues", "definition": {
            "max-length": params.max_length, "overflow": "reject-publish"}}
        with run.rabbitmq(params.cluster) as rabbit:
            run.step("put-policy", lambda: rabbit.send("PUT", _policy(params), body), f"{plan.queue} capped")

    def verify(self, run, params, plan, result) -> Verification:
        with run.rabbitmq(params.cluster) as rabbit:
            policy = rabbit.queue(params.vhost, params.queue).policy
        return Verification(ok=policy == f"incident-limit-{params.queue}", summary=f"{plan.queue}: policy {policy}")

    def restore(self, run, params, plan, snapshot: Snapshot) -> Restore:
        with run.rabbitmq(params.cluster) as rabbit:
            rabbit.send("DELETE", _policy(params), missing_ok=True)
        return Restore(summary=f"policy incident-limit-{params.queue} deleted", restored=True)


def _policy(params: LimitParameters) -> str:
    return f"/api/policies/{quote(params.vhost, safe='')}/{quote(f'incident-limit-{params.queue}', safe='')}"


STEPS = QueueLimit()
dry_run = STEPS.dry_run


rabbitmq_queue_limit = runbook_flow(STEPS, LimitParameters, "Cap a queue's length during an incident.")
