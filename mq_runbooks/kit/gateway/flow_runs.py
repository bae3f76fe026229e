"""Flow runs and their states, task runs and logs: the reads and writes of a `Session` (session.py)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from prefect.client.schemas.filters import (
    FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterEndTime, FlowRunFilterId, FlowRunFilterIdempotencyKey,
    FlowRunFilterName, FlowRunFilterStartTime, FlowRunFilterState, FlowRunFilterStateName, FlowRunFilterStateType,
    FlowRunFilterTags, LogFilter, LogFilterFlowRunId, LogFilterLevel,
)
from prefect.client.schemas.objects import FlowRun, Log, State, StateType, TaskRun
from prefect.client.schemas.sorting import FlowRunSort, LogSort

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.responses import OrchestrationResult

RunSort = Literal["id_desc", "start_time_desc", "expected_start_time_desc"]
PAGE = 200  # the most runs the server answers in one request


def _uuid(run_id: UUID | str) -> UUID:
    return run_id if isinstance(run_id, UUID) else UUID(str(run_id))


class FlowRuns:
    _client: "SyncPrefectClient"

    def read_flow_run(self, run_id: UUID | str) -> FlowRun:
        """The run; prefect.exceptions.ObjectNotFound when the server has none of that id."""
        return self._client.read_flow_run(_uuid(run_id))

    def read_flow_run_states(self, run_id: UUID | str) -> list[State]:
        """The run's states, as the server lists them (sort by `timestamp` for their order)."""
        return self._client.read_flow_run_states(_uuid(run_id))

    def set_flow_run_state(self, run_id: UUID | str, state: State, force: bool = False) -> "OrchestrationResult":
        return self._client.set_flow_run_state(_uuid(run_id), state, force=force)

    def propose_state(self, run_id: UUID | str, state: State) -> State:
        """Propose a state as the run's own engine does (Prefect's orchestration rules apply; Abort
        when the server refuses it); the state the run is in afterwards."""
        from prefect.utilities.engine import propose_state_sync

        return propose_state_sync(client=self._client, state=state, flow_run_id=_uuid(run_id))

    def update_flow_run(self, run_id: UUID | str, *, name: str | None = None, tags: Sequence[str] | None = None) -> None:
        self._client.update_flow_run(_uuid(run_id), name=name, tags=list(tags) if tags is not None else None)

    def read_flow_runs(self, *, tags: Sequence[str] = (), ids: Sequence[UUID | str] | None = None,
                       names: Sequence[str] | None = None, state_types: Iterable[str | StateType] = (),
                       state_names: Iterable[str] = (), started_after: dt.datetime | None = None,
                       ended_after: dt.datetime | None = None, deployment_id: UUID | None = None,
                       idempotency_keys: Sequence[str] | None = None, sort: RunSort | None = None,
                       limit: int = PAGE, offset: int = 0) -> list[FlowRun]:
        """Runs carrying all `tags`, and (when given) of these ids, names, deployment, idempotency keys,
        started or ended after a moment; in one of `state_types` or named one of `state_names` (either
        matches)."""
        types = [StateType(t.upper()) if isinstance(t, str) else t for t in state_types]
        names_ = list(state_names)
        state = FlowRunFilterState(
            operator="or_" if types and names_ else "and_",
            type=FlowRunFilterStateType(any_=types) if types else None,
            name=FlowRunFilterStateName(any_=names_) if names_ else None) if types or names_ else None
        run_filter = FlowRunFilter(
            tags=FlowRunFilterTags(all_=list(tags)) if tags else None,
            id=FlowRunFilterId(any_=[_uuid(i) for i in ids]) if ids is not None else None,
            name=FlowRunFilterName(any_=list(names)) if names is not None else None,
            state=state,
            start_time=FlowRunFilterStartTime(after_=started_after) if started_after else None,
            end_time=FlowRunFilterEndTime(after_=ended_after) if ended_after else None,
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]) if deployment_id else None,
            idempotency_key=FlowRunFilterIdempotencyKey(any_=list(idempotency_keys))
            if idempotency_keys is not None else None,
        )
        return self._client.read_flow_runs(flow_run_filter=run_filter, limit=limit, offset=offset,
                                           sort=FlowRunSort[sort.upper()] if sort else None)

    def every_flow_run(self, *, sort: RunSort = "id_desc", page: int = PAGE, **matching: Any) -> Iterator[FlowRun]:
        """Every run `read_flow_runs(**matching)` finds, read page by page."""
        offset = 0
        while True:
            found = self.read_flow_runs(sort=sort, limit=page, offset=offset, **matching)
            yield from found
            if len(found) < page:
                return
            offset += page

    def read_task_runs(self, run_id: UUID | str) -> list[TaskRun]:
        """The task runs of a flow run."""
        return self._client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[_uuid(run_id)])))

    def read_task_run_states(self, task_run_id: UUID) -> list[State]:
        return self._client.read_task_run_states(task_run_id)

    def read_logs(self, run_id: UUID | str, *, min_level: int | None = None, limit: int, offset: int = 0,
                  newest_first: bool = False) -> list[Log]:
        """A page of a flow run's log lines (at `min_level` or above, when given), oldest or newest first."""
        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[_uuid(run_id)]),
                               level=LogFilterLevel(ge_=min_level) if min_level is not None else None)
        return self._client.read_logs(log_filter=log_filter, limit=limit, offset=offset,
                                      sort=LogSort.TIMESTAMP_DESC if newest_first else LogSort.TIMESTAMP_ASC)


def resume_flow_run(run_id: UUID | str, run_input: dict[str, Any]) -> None:
    """Resume a run suspended at its gate with `run_input` (Prefect checks it against the run's keyset;
    Prefect's helper opens its own connection, so this needs no session)."""
    from prefect.flow_runs import resume_flow_run as resume

    resume(_uuid(run_id), run_input=run_input)
