"""One run per target at a time: a Prefect global concurrency limit of 1 per lock key
(e.g. `kafka:primary:group:billing`), created on first use (a limit that does not exist would
not lock at all), held from observation to verification.

Runs carry the tag `lock:<key>` (set by whoever creates them), so a run that waits too long can say
which run holds the lock. The slot is a lease: a holder that crashes frees it when the lease ends.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from mq_runbooks.base.errors import PreconditionError

LEASE_S = 120  # renewed while the holder lives


def lock_tag(key: str) -> str:
    return f"lock:{key}"


def limit_name(key: str) -> str:
    """A concurrency-limit name for a lock key: readable, URL-safe, and unique per key."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-")[:80]
    return f"runbook-{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another run created it first


def holders(key: str, exclude: UUID | str | None = None) -> list[str]:
    """Descriptions of the live runs that carry this lock's tag, other than `exclude`."""
    run_filter = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[lock_tag(key)]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PAUSED])),
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=run_filter, limit=10)
    return [f"{run.name} ({run.id}, {run.state.name if run.state else 'unknown'})"
            for run in runs if str(run.id) != str(exclude)]


@contextmanager
def target_lock(key: str, flow_run_id: UUID | str, wait_s: float) -> Iterator[None]:
    """Hold the lock of `key` for the block; wait at most `wait_s` for it, then raise PreconditionError
    naming the run that holds it."""
    name = limit_name(key)
    _ensure_limit(name)
    # A slow Prefect server can make a free slot look taken within a short wait: when no live run
    # carries the lock's tag, try once more, longer, before calling it held.
    attempts = [wait_s, max(wait_s, 15.0)]
    for attempt, timeout in enumerate(attempts, start=1):
        acquired = False
        try:
            with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True, lease_duration=LEASE_S):
                acquired = True
                yield
            return
        except TimeoutError:
            if acquired:
                raise
            held_by = holders(key, exclude=flow_run_id)
            if held_by or attempt == len(attempts):
                raise PreconditionError(
                    f"another run holds the lock {key!r}: "
                    f"{', '.join(held_by) or 'a run that has ended (its lease expires soon)'}; "
                    f"waited {sum(attempts[:attempt]):.0f}s. Try again when it has finished."
                ) from None
