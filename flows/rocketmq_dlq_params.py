"""The parameters of rocketmq-dlq-resend (a module of its own: `runbook show` reads it without importing Prefect)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DlqResendParameters(BaseModel):
    """Parameters of rocketmq-dlq-resend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a RocketMQ cluster named under rocketmq: in clusters.yaml, e.g. primary")
    group: str = Field(min_length=1, max_length=255, description="the consumer group whose %DLQ%<group> to resend")
    filter: str | None = Field(None, min_length=1, description="only dead letters with this key (KEYS) or tag (TAGS)")
    limit: int | None = Field(None, ge=1, le=1_000_000, description="resend at most this many, oldest first")
    batch_size: int = Field(100, ge=1, le=10_000, description="messages per fenced step")
