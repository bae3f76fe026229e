"""The port the driver (kit/driver.py, kit/steps.py, kit/gate.py) runs through: a run's journal, its
target's lock, its gate's question, what people see of it, and how its steps are executed. The driver
decides; a port carries the decisions out.

- `PrefectRunPort` (kit/prefect_port.py) is the real one: the journal as signed artifacts, the lock as
  a concurrency lease, the gate as a suspended flow run, steps as Prefect tasks, all through the
  gateway (kit/gateway/).
- `MemoryRunPort` (tests/kit/memory_port.py) keeps all of it in memory, so the driver's decisions
  are tested without a Prefect server (tests/kit/test_driver_decisions.py).

A port's gate either returns the answer given for a suspension key or suspends the run by raising
a `prefect.exceptions.PrefectSignal` (Pause): the run is executed again from the top once answered,
and replays what the journal holds.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

if TYPE_CHECKING:  # ("Approval" is kit/gate.py's answer form: named, not imported, as gate.py imports this)
    from mq_runbooks.kit.journal import Entry
    from mq_runbooks.kit.records import Record

T = TypeVar("T")


class HeldLock(Protocol):
    id: UUID | str  # the lease the run keeps in its journal (a resumed run adopts it)


class RunPort(Protocol):
    # -- the journal -------------------------------------------------------------------------------
    def read(self, run_id: str) -> list["Entry"]:
        """The run's journal entries, oldest first."""

    def write(self, run_id: str, record: "Record") -> "Entry":
        """Append a typed record to the run's journal."""

    def now(self) -> dt.datetime:
        """The clock the gate's deadline is measured by (UTC)."""

    # -- the lock ----------------------------------------------------------------------------------
    def lock(self, key: str, run_id: str, wait_s: float, adopt: str | None = None,
             suspended_for: Callable[[], float] | None = None) -> AbstractContextManager[HeldLock]:
        """Hold the target's lock for the block (kit/lock.py target_lock's contract); PreconditionError
        when another run holds it."""

    # -- the gate ----------------------------------------------------------------------------------
    def ask(self, form: type["Approval"], *, timeout: int, key: str, message: str,
            on_suspend: Callable[[float], None] | None = None) -> "Approval":
        """The answer given at suspension `key`, or suspend the run (raise Pause) to wait for it."""

    # -- what people see ---------------------------------------------------------------------------
    def label(self, run_id: str, name: str | None = None, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Rename the run, add tags, drop the tags with a prefix in `remove`."""

    def publish_plan(self, run_id: str, summary: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        ...

    def publish_timeline(self, run_id: str, entries: Sequence["Entry"]) -> None:
        ...

    def publish_postmortem(self, run_id: str) -> None:
        ...

    # -- executing steps ---------------------------------------------------------------------------
    def task(self, name: str, fn: Callable[..., T], *, retries: int = 0, retry_delay_s: float = 0.0,
             retry_if: Callable[[BaseException], bool] | None = None,
             persist_key: str | None = None) -> Callable[..., T]:
        """`fn` as one step of the run: retried `retries` times when `retry_if(error)` holds; with
        `persist_key`, its result is kept under that key and read back when the run is executed again."""

    def logger(self) -> logging.Logger | logging.LoggerAdapter:
        """Where the run's log lines go."""
