"""The parameters of rocketmq-reset-offset (a module of its own: `runbook show` reads it without importing Prefect)."""
from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.replay_spec import iso, parse_datetime, parse_duration

SPECS = ("to_datetime", "by_duration", "to_earliest", "to_latest", "from_file")


class ResetOffsetParameters(BaseModel):
    """Parameters of rocketmq-reset-offset; the times mean what `mqadmin resetOffsetByTime -s` means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a RocketMQ cluster named under rocketmq: in clusters.yaml, e.g. primary")
    group: str = Field(min_length=1, max_length=255, description="the consumer group")
    topic: list[str] = Field(default_factory=list,
                             description="topic (repeatable); none = every topic the group has offsets on")
    to_datetime: str | None = Field(None, description="yyyy-MM-ddTHH:mm:ss.SSS, UTC unless a zone is given; "
                                                      "not in the future")
    by_duration: str | None = Field(None, description="ISO-8601 duration back from now, e.g. PT15M or P1DT2H")
    to_earliest: bool = Field(False, description="true: every message the queues still hold is consumed again")
    to_latest: bool = Field(False, description="true: skip the backlog (each queue's max offset)")
    from_file: str | None = Field(None, description="path of a topic,broker,queue,offset CSV (this runbook's "
                                                    "snapshot): put those offsets back",
                                  json_schema_extra={"file": True})
    wait_for_inactive: float = Field(0, ge=0, le=3600, description="seconds to wait for the group's online "
                                                                   "consumers to stop (0: refuse at once)")

    @field_validator("to_datetime", "by_duration")
    @classmethod
    def _time(cls, value: str | None, info) -> str | None:
        if value is None:
            return None
        try:
            if info.field_name == "to_datetime":
                at = parse_datetime(value, field="to_datetime")
                if at > time.time() * 1000:
                    raise ValueError(f"{value!r} ({iso(at)}) is in the future: every queue would skip to its "
                                     f"max offset (use to_latest for that)")
            else:
                parse_duration(value, field="by_duration")
        except ParameterError as exc:
            raise ValueError("; ".join(message for _, message in exc.problems)) from None
        return value

    @model_validator(mode="after")
    def _exactly_one_spec(self) -> "ResetOffsetParameters":
        chosen = [name for name in SPECS if getattr(self, name) not in (None, False)]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPECS)} (given: {', '.join(chosen) or 'none'})")
        return self

    def spec(self) -> str:
        name = next(n for n in SPECS if getattr(self, n) not in (None, False))
        value = getattr(self, name)
        return name if value is True else f"{name}={value}"
