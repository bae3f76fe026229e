"""The parameters of redis-streams-replay (a module of its own: `runbook show` reads it without importing Prefect)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.replay_spec import parse_datetime, parse_duration
from mq_runbooks.integrations.redis_streams_records import parse_entry_id

SPECS = ("to_id", "to_datetime", "by_duration", "to_earliest", "to_latest")


class StreamReplayParameters(BaseModel):
    """Parameters of redis-streams-replay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a Redis server named under redis: in clusters.yaml, e.g. primary")
    stream: str = Field(min_length=1, description="the stream (its key)")
    group: str = Field(min_length=1, description="the consumer group")
    to_id: str | None = Field(None, description="the new last-delivered id: entries after it are read (0: all)")
    to_datetime: str | None = Field(None, description="yyyy-MM-ddTHH:mm:ss.SSS, UTC unless a zone is given")
    by_duration: str | None = Field(None, description="ISO-8601 duration back from now, e.g. PT1H")
    to_earliest: bool = Field(False, description="true: every entry the stream still holds is read again")
    to_latest: bool = Field(False, description="true: skip every entry added so far")
    wait_for_inactive: float = Field(0, ge=0, le=3600, description="seconds to wait after approval for the "
                                                                   "group's consumers to stop (0: refuse at once)")
    active_within_ms: int = Field(10_000, ge=0, description="a consumer that read or claimed within this many ms "
                                                            "is active")

    @field_validator("to_id")
    @classmethod
    def _entry_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ms, sequence = parse_entry_id(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a stream entry id: <milliseconds>-<sequence>, e.g. "
                             f"1732870000000-0, or 0 for the start") from None
        return f"{ms}-{sequence}"

    @field_validator("to_datetime", "by_duration")
    @classmethod
    def _time(cls, value: str | None, info) -> str | None:
        if value is not None:
            try:
                (parse_datetime if info.field_name == "to_datetime" else parse_duration)(value, field=info.field_name)
            except ParameterError as exc:
                raise ValueError("; ".join(message for _, message in exc.problems)) from None
        return value

    @model_validator(mode="after")
    def _exactly_one_spec(self) -> "StreamReplayParameters":
        chosen = [name for name in SPECS if getattr(self, name) not in (None, False)]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPECS)} (given: {', '.join(chosen) or 'none'})")
        return self
