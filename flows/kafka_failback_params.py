"""The parameters of kafka-failback (a module of its own: `runbook show` reads it without importing Prefect)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KafkaFailbackParameters(BaseModel):
    """Parameters of kafka-failback."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field("primary", min_length=1, description="the Kafka cluster clients go back to (MM2's source)")
    standby: str = Field("standby", min_length=1, description="the MM2 standby they are on now")
    groups: list[str] = Field(min_length=1, description="consumer groups to move back (repeatable)")
    switch: str = Field("kafka-clients", min_length=1, description="the endpoint switch of clusters.yaml")
    failover_run: str | None = Field(None, description="the kafka-failover run whose journal holds the switch's "
                                                       "old value (default: the switch's value for CLUSTER)")
    wait_for_inactive: float = Field(0, ge=0, le=3600, description="seconds to wait for the groups to be empty")
