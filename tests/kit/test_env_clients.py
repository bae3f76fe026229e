"""Env's broker clients are closed by the driver when the step that opened them returns, even when
the runbook did not use a `with` (issue 27, item 2: a Kafka AdminClient collected before its futures
finished failed with KafkaError _DESTROY "Handle is terminating")."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.driver import Env, RunbookSteps
from mq_runbooks.kit.plans import PlanTable


class Params(BaseModel):
    cluster: str = "primary"


@dataclass(frozen=True)
class Peek(PlanTable):
    brokers: int

    def columns(self): return ("brokers",)
    def rows(self): return [(self.brokers,)]
    def summary(self): return f"{self.brokers} broker(s)"


class Careless(RunbookSteps[Params, Peek]):
    """Opens every broker's client and closes none of them."""

    id = "careless"
    opened: list = []

    def observe(self, env: Env, params: Params) -> Peek:
        kafka = env.kafka(params.cluster)
        self.opened[:] = [kafka, env.rabbitmq(params.cluster), env.redis(params.cluster)]
        return Peek(len(kafka.describe_cluster().brokers))


def test_the_clients_a_step_left_open_are_closed_when_it_returns(clusters):
    steps = Careless()
    plan = steps.dry_run(Params(), clusters, Settings.from_environ({}))
    assert plan.brokers >= 1
    kafka, rabbit, _redis = steps.opened
    assert kafka.closed, "the Kafka admin client was closed (after its requests finished)"
    assert rabbit._http.is_closed, "the management API client was closed"


def test_close_clients_is_idempotent(clusters):
    env = Env(Settings.from_environ({}), clusters)
    kafka = env.kafka("primary")
    with kafka:
        pass
    env.close_clients()
    env.close_clients()
    assert kafka.closed
