"""The driver's port (mq_runbooks/kit/run_port.py) kept in memory: a journal per run, locks, a gate
answered by the test, the labels and artifacts people would see, and steps called in this process.
Our own implementation of the port, not a stand-in for Prefect: it keeps the same promises (a lock
held by another run refuses; a suspended run keeps its lock; an unanswered gate suspends the run and
a run executed again replays its journal) so the driver's decisions are tested in milliseconds.

    port = MemoryRunPort()
    with pytest.raises(Pause):
        drive(STEPS, params, "bob", port=port, run_id=run_id, context=context)   # waits at its gate
    port.answer(run_id, decision="approve", by="alice")
    state = drive(STEPS, params, "bob", port=port, run_id=run_id, context=context)  # executed again
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect.exceptions import Pause, PrefectSignal
from pydantic_core import to_jsonable_python

from mq_runbooks.base.errors import PreconditionError
from mq_runbooks.kit.gate import sign_answer
from mq_runbooks.kit.journal import KINDS, Entry


@dataclass
class Lease:
    id: str


@dataclass
class MemoryRunPort:
    key: bytes = b"memory-port-signing-key-of-tests-0123456789"  # the engine's signing key (RUNBOOK_SIGNING_KEY)
    clock: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    journals: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    locks: dict[str, tuple[str, str]] = field(default_factory=dict)  # lock key -> (run id, lease id)
    waiting: dict[str, str] = field(default_factory=dict)  # run id -> the suspension key it waits at
    given: dict[str, dict[str, str]] = field(default_factory=dict)  # suspension key -> the answer given
    names: dict[str, str] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    plans: list[tuple[str, str]] = field(default_factory=list)  # (run id, summary) of each published plan
    timelines: dict[str, int] = field(default_factory=dict)  # run id -> entries in its last timeline
    postmortems: list[str] = field(default_factory=list)
    persisted: dict[str, Any] = field(default_factory=dict)  # results kept by persist_key
    calls: list[str] = field(default_factory=list)  # each step (task) called, by name, in order
    current: str = ""  # the run being driven (a gate's question is its)

    # -- the journal
    def read(self, run_id: str) -> list[Entry]:
        return sorted(self.journals[str(run_id)], key=lambda entry: entry.at)

    def write(self, run_id: str, record) -> Entry:
        if record.KIND not in KINDS:
            raise ValueError(f"journal kind {record.KIND!r} is not one of {', '.join(KINDS)}")
        self.clock += dt.timedelta(milliseconds=1)  # entries keep their order, as the server's timestamps do
        data = to_jsonable_python(record.payload(), fallback=str)
        entry = Entry(self.clock, record.KIND, record.summary, data)
        self.journals[str(run_id)].append(entry)
        return entry

    def now(self) -> dt.datetime:
        return self.clock

    def kinds(self, run_id: str) -> list[str]:
        return [entry.kind for entry in self.read(run_id)]

    # -- the lock
    @contextmanager
    def lock(self, key: str, run_id: str, wait_s: float, adopt: str | None = None,
             suspended_for: Callable[[], float] | None = None):
        held = self.locks.get(key)
        if held is not None and held[0] != run_id:
            raise PreconditionError(f"another run holds the lock {key!r}: {held[0]}")
        lease = Lease(held[1] if held is not None and adopt == held[1] else uuid.uuid4().hex)
        self.locks[key] = (run_id, lease.id)
        try:
            yield lease
        except PrefectSignal:  # suspended at the gate: the lock stays with the run
            raise
        except BaseException:
            self.locks.pop(key, None)
            raise
        else:
            self.locks.pop(key, None)

    # -- the gate
    def ask(self, form: type, *, timeout: int, key: str, message: str, on_suspend=None):
        if key in self.given:
            return form(**self.given[key])
        self.waiting[self.current] = key
        if on_suspend is not None:
            on_suspend(timeout)
        raise Pause()

    def answer(self, run_id: str, *, decision: str, by: str, comment: str = "", proof: str = "os-user",
               plan_digest: str | None = None) -> str:
        """Answer the gate `run_id` waits at, signed as a judge signs it; the suspension key."""
        pause_key = self.waiting.pop(run_id)
        request = [e for e in self.read(run_id) if e.kind == "approval_requested"][-1]
        self.given[pause_key] = sign_answer(
            self.key, run_id, pause_key, decision=decision, by=by, proof=proof, comment=comment,
            plan_digest=request.data.get("plan_digest", "") if plan_digest is None else plan_digest)
        return pause_key

    # -- what people see
    def label(self, run_id: str, name: str | None = None, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        kept = [tag for tag in self.tags[run_id] if not any(tag.startswith(prefix) for prefix in remove)]
        self.tags[run_id] = kept + [tag for tag in add if tag not in kept]
        if name is not None:
            self.names[run_id] = name

    def publish_plan(self, run_id: str, summary: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.plans.append((run_id, summary))

    def publish_timeline(self, run_id: str, entries: Sequence[Entry]) -> None:
        self.timelines[run_id] = len(entries)

    def publish_postmortem(self, run_id: str) -> None:
        self.postmortems.append(run_id)

    # -- executing steps
    def task(self, name: str, fn: Callable, *, retries: int = 0, retry_delay_s: float = 0.0,
             retry_if: Callable[[BaseException], bool] | None = None, persist_key: str | None = None) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            if persist_key is not None and persist_key in self.persisted:
                return self.persisted[persist_key]
            for attempt in range(retries + 1):
                self.calls.append(name)
                try:
                    result = fn(*args, **kwargs)
                    break
                except Exception as exc:
                    if attempt == retries or retry_if is None or not retry_if(exc):
                        raise
            if persist_key is not None:
                self.persisted[persist_key] = result
            return result
        return call

    def logger(self) -> logging.Logger:
        return logging.getLogger("runbook.memory-port")
