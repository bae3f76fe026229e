"""The parameters of rabbitmq-failover and rabbitmq-failback (a module of its own: `runbook show` reads it
without importing Prefect)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.integrations.rabbitmq_shovels import PREFETCH


class RabbitFailoverParameters(BaseModel):
    """Parameters of rabbitmq-failover and rabbitmq-failback (the same names in both directions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field("primary", min_length=1, description="the primary RabbitMQ cluster of clusters.yaml")
    standby: str | None = Field(None, description="its standby (default: the cluster with standby_of: CLUSTER)")
    vhost: str = Field("/", min_length=1, description="the vhost whose definitions and queues move")
    queues: list[str] = Field(default_factory=list,
                              description="queue names to move (repeatable); none = every non-empty queue of the vhost")
    copy_definitions: bool = Field(True, description="copy exchanges, queues, bindings, policies of the vhost first")
    include_users: bool = Field(False, description="also copy the users with permissions on the vhost")
    switch: str = Field(min_length=1, description="the endpoint switch of clusters.yaml that points clients")
    failover_run: str | None = Field(None, description="failback only: the failover run whose journal holds the "
                                                       "switch's old value (default: the switch's recorded value)")
    move_timeout_s: float = Field(600, gt=0, le=86400, description="seconds the backlog move may take in all")
    stall_s: float = Field(30, gt=0, le=3600, description="seconds without progress before a move is given up")
    shovel_prefetch: int = Field(PREFETCH, ge=1, le=65535,
                                 description="messages a shovel holds unconfirmed (the most a dying source duplicates)")
