"""The parameters of kafka-replay (a module of its own: `runbook show` reads it without importing Prefect)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPECS = ("to_datetime", "by_duration", "to_earliest", "to_latest", "to_offset", "shift_by", "to_current", "from_file")


class ReplayParameters(BaseModel):
    """Parameters of kafka-replay; the reset spec options mean what they mean to the Java tool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a Kafka cluster named in clusters.yaml, e.g. primary")
    group: str = Field(min_length=1, max_length=249, description="the consumer group id")
    topic: list[str] = Field(
        default_factory=list,
        description="topic or topic:0,1,2 (repeatable); none = every topic the group has committed",
    )
    to_datetime: str | None = Field(None, description="yyyy-MM-ddTHH:mm:ss.SSS, UTC unless a zone is given")
    by_duration: str | None = Field(None, description="ISO-8601 duration back from now, e.g. PT15M or P1DT2H")
    to_earliest: bool = Field(False, description="true: the log start offset")
    to_latest: bool = Field(False, description="true: the log end offset")
    to_offset: int | None = Field(None, ge=0, description="an absolute offset (clamped into the log)")
    shift_by: int | None = Field(None, description="a signed number of messages to move by")
    to_current: bool = Field(False, description="true: keep committed offsets, uncommitted to the log end")
    from_file: str | None = Field(None, description="path of a topic,partition,offset CSV (the --export format)",
                                  json_schema_extra={"file": True})
    wait_for_inactive: float = Field(
        0, ge=0, le=3600, description="seconds to wait for the group to become empty (0: refuse at once)"
    )

    @model_validator(mode="after")
    def _exactly_one_spec(self) -> "ReplayParameters":
        chosen = [name for name in SPECS if getattr(self, name) not in (None, False)]
        if len(chosen) != 1:
            found = ", ".join(chosen) if chosen else "none"
            raise ValueError(f"give exactly one reset spec of {', '.join(SPECS)} (given: {found})")
        return self
