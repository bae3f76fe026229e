"""The parameters of rocketmq-drain-stuck (a module of its own: `runbook show` reads it without importing Prefect)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DrainStuckParameters(BaseModel):
    """Parameters of rocketmq-drain-stuck."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a RocketMQ cluster named under rocketmq: in clusters.yaml, e.g. primary")
    group: str = Field(min_length=1, max_length=255, description="the consumer group")
    topic: list[str] = Field(default_factory=list,
                             description="topics to look at (repeatable); none = every topic the group has offsets "
                                         "on, retry and DLQ topics aside")
    sample_ms: int = Field(10_000, ge=100, le=3_600_000,
                           description="milliseconds between the two samples: a consume offset that did not move "
                                       "for this long while messages wait behind it is stuck")
    dead_letter_topic: str | None = Field(
        None, pattern=r"^[%A-Za-z0-9_-]{1,127}$",
        description="where the stuck messages are copied (default %DLQ%<group>); created with one queue if missing")
    limit: int | None = Field(None, ge=1, le=10_000, description="unblock at most this many stuck queues")
    show_values: bool = Field(False, description="true: show message bodies in the plan and journal (else redacted)")
