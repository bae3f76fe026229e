"""Creating runs: the one module that creates a flow run of a runbook, whoever asks (`runbook run`,
serve's API, Slack, alerts, restores). `run_body` decides everything a run is created with: its
parameters (the start signed with the engine's key, kit/origin.py), its name and tags
(kit/labels.py) and its idempotency key; the executor (app/executor.py) executes it.

- `start_run`: one run, created and handed to its executor at once (the CLI in direct mode): on the
  `<id>/local` deployment (a detached executor on this machine) or, with RUNBOOK_RUN_ON=workers, on
  the pool's (a worker is woken).
- `DeploymentStarter`: serve's runs on the pool's deployments (`<id>/<RUNBOOK_DEPLOYMENT>`), with
  Prefect's idempotency keys so one alert occurrence is one run, across repeats and across `serve`
  replicas. Concurrent requests for one occurrence share one write (single flight); an occurrence
  this process already started is answered from memory; the writes of concurrent requests are
  queued and sent in batches (Prefect's bulk create: one transaction per batch, its runs in key
  order), so a burst costs the Prefect server a few transactions instead of one per notification. A
  batch first reads the runs already recorded under its keys (another replica's, or this process's
  before a restart) and creates only the others. A caller gets its answer only once its run is
  committed on the Prefect server.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.client.schemas.objects import FlowRun
from prefect.states import Scheduled, to_state_create
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import BaseModel

from mq_runbooks.app import workers
from mq_runbooks.base.catalog import Runbook
from mq_runbooks.base.errors import BrokerError, NotFoundError, UnreachableError
from mq_runbooks.base.settings import Settings
from mq_runbooks.app.workers import deployment_name
from mq_runbooks.kit import gateway
from mq_runbooks.kit.gateway.names import alert_tag  # noqa: F401  (serve's alerts tag their runs with it)
from mq_runbooks.kit.labels import run_name, start_tags, target_in_words
from mq_runbooks.kit.origin import new_idempotency_key, signed_start
from mq_runbooks.kit.signing import signing_key


def run_body(key: bytes, runbook: Runbook, params: BaseModel, requested_by: str, trigger: dict[str, Any],
             idempotency_key: str | None = None, tags: list[str] | None = None) -> dict[str, Any]:
    """What a run of `runbook` is created with (Prefect's create-from-deployment body): its
    parameters with the start signed by `key`, its name and tags, and its idempotency key (the
    occurrence's, else a fresh one: with it, the signature names this one run)."""
    recorded_key = idempotency_key or new_idempotency_key()
    parameters = signed_start(key, runbook.id, {
        "params": params.model_dump(mode="json"), "requested_by": requested_by, "trigger": trigger}, recorded_key)
    # The parameters were validated here (the runbook's model); the flow validates them again when it
    # runs. Prefect's JSON-schema check of each run at creation is skipped: it costs the server more
    # than the insert itself.
    return DeploymentFlowRunCreate(
        parameters=parameters, tags=[*start_tags(runbook.id, runbook.lock_key(params), requested_by), *(tags or [])],
        state=to_state_create(Scheduled()), name=run_name(runbook.id, target_in_words(runbook, params)),
        idempotency_key=recorded_key, enforce_parameter_schema=False,
    ).model_dump(mode="json", exclude_unset=True)


def start_run(settings: Settings, runbook: Runbook, params: BaseModel, requested_by: str,
              trigger: dict[str, Any] | None = None) -> str:
    """Create one run and have it executed (see the module docstring); returns the run id at once."""
    _ensure_crash_detection()
    on_workers = settings.run_on == "workers"
    name = settings.deployment if on_workers else workers.LOCAL
    workers.ensure_registered(runbook, name, settings.work_pool if on_workers else None)
    body = run_body(signing_key(settings), runbook, params, requested_by, trigger or {})
    with gateway.connect() as prefect:
        run_id = prefect.create_flow_run(prefect.deployment_id(deployment_name(runbook.id, name)), body)
    if on_workers:
        workers.wake(run_id)
    else:
        workers.spawn_executor(settings, run_id)
    return run_id


@functools.cache
def _ensure_crash_detection() -> None:
    """Once a process: the server's automation that crashes runs whose heartbeats stopped."""
    from mq_runbooks.kit.crashes import ensure_zombie_automation

    ensure_zombie_automation()


log = logging.getLogger("runbook.deployments")

BULK_LIMIT = 100  # the most runs Prefect's bulk create takes at once


@dataclass
class _Write:
    """One run to create, and the future its caller (and callers of the same occurrence) wait on."""

    runbook_id: str
    body: dict[str, Any]
    request_id: str
    idempotency_key: str | None  # the occurrence's: what this process remembers it by
    done: Future = field(default_factory=Future)

    @property
    def recorded_key(self) -> str | None:
        """The key the run is recorded under on Prefect (the occurrence's, or a new one after a crash)."""
        return self.body.get("idempotency_key")


class DeploymentStarter:
    """Starts runs from the catalog's deployments over one long-lived Prefect client (a client per
    request costs a connection and a version check each time); deployment ids are cached.

    `writers` threads send the queued writes, each batch (up to BULK_LIMIT runs of one runbook) as one
    read of the runs already recorded under its keys (see `_send`), one bulk create of the others and
    one read of the runs it names (to tell a new run from one that already existed).
    One writer is the default: SQLite behind the Prefect server slows down under concurrent writes, and
    the batch grows while the writer is busy (in bench/alerts.py on SQLite, one did better than two;
    on PostgreSQL two were no faster for one replica, and slower for two: more alerts written by both)."""

    # Occurrences this process has already started: Alertmanager repeats a notification every
    # group_interval, and a burst of repeats should not each cost a write on the Prefect server.
    # Only a shortcut: Prefect's idempotency key still decides, for this replica and the others.
    SEEN_MAX, SEEN_TTL_S = 10_000, 3600.0

    def __init__(self, deployment: str, key: bytes, writers: int = 1) -> None:
        self._deployment = deployment
        self._key = key  # the engine's signing key: every start is signed (kit/origin.py)
        self._prefect = gateway.Session().open()
        self._deployment_ids: dict[str, uuid.UUID] = {}
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._in_flight: dict[str, Future] = {}
        self._lock = threading.Lock()  # guards _seen and _in_flight
        self._queue: list[_Write] = []
        self._queued = threading.Condition()
        self._read_first = True  # whether the next batch first reads the runs already recorded (see _send)
        for number in range(writers):
            threading.Thread(target=self._writer, daemon=True, name=f"run-writer-{number}").start()

    def close(self) -> None:
        self._prefect.close()

    def __call__(self, runbook: Runbook, params: BaseModel, requested_by: str, trigger: dict[str, Any],
                 idempotency_key: str | None = None, tags: list[str] | None = None) -> tuple[str, bool]:
        """Create a flow run of the runbook's deployment; returns (run id, whether it already existed)
        once the run is committed. UnreachableError when the Prefect server could not record it."""
        if idempotency_key is not None and (run_id := self.known(idempotency_key)) is not None:
            return run_id, True
        with self._lock:
            shared = self._in_flight.get(idempotency_key) if idempotency_key is not None else None
            if shared is None:
                write = self._write_of(runbook, params, requested_by, trigger, idempotency_key, tags)
                if idempotency_key is not None:
                    self._in_flight[idempotency_key] = write.done
        if shared is not None:  # another request of this occurrence is writing it: its answer is ours
            return shared.result()[0], True
        with self._queued:
            self._queue.append(write)
            self._queued.notify()
        return write.done.result()

    def known(self, idempotency_key: str) -> str | None:
        """The run this process already started for an occurrence, if any (answered from memory)."""
        with self._lock:
            seen = self._seen.get(idempotency_key)
        return seen[0] if seen is not None and time.monotonic() - seen[1] < self.SEEN_TTL_S else None

    def forget(self, run_ids: set[str]) -> None:
        """Drop occurrences whose run crashed from the shortcut, so a repeat of the alert starts a new run."""
        with self._lock:
            for key in [key for key, (run_id, _) in self._seen.items() if run_id in run_ids]:
                del self._seen[key]

    def _write_of(self, runbook: Runbook, params: BaseModel, requested_by: str, trigger: dict[str, Any],
                  idempotency_key: str | None, tags: list[str] | None) -> _Write:
        request_id = uuid.uuid4().hex
        # A start without an occurrence (a Slack command, the API) gets a key of its own (run_body): with
        # it, its signature names this one run (kit/origin.py), and sending it again is safe.
        body = run_body(self._key, runbook, params, requested_by, {**trigger, "request_id": request_id},
                        idempotency_key, tags)
        return _Write(runbook.id, body, request_id, idempotency_key)

    def _signed(self, runbook_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "parameters": signed_start(self._key, runbook_id, body["parameters"], body["idempotency_key"])}

    def _writer(self) -> None:
        while True:
            with self._queued:
                while not self._queue:
                    self._queued.wait()
                runbook_id = self._queue[0].runbook_id
                batch = [write for write in self._queue if write.runbook_id == runbook_id][:BULK_LIMIT]
                # In key order: two replicas' batches that share occurrences then take the database's
                # locks of those keys in the same order, so one waits for the other instead of both
                # deadlocking (PostgreSQL aborts one after deadlock_timeout, 1 s, and its batch fails).
                batch.sort(key=lambda write: write.recorded_key or "")
                taken = {id(write) for write in batch}
                self._queue = [write for write in self._queue if id(write) not in taken]
            began = time.monotonic()
            try:
                outcomes = self._send(runbook_id, batch)
            except Exception as exc:  # noqa: BLE001  (every caller of the batch gets the failure)
                outcomes = [_failure(exc)] * len(batch)
            log.debug("wrote %d run(s) of %s in %.2f s", len(batch), runbook_id, time.monotonic() - began)
            for write, outcome in zip(batch, outcomes):
                self._settle(write, outcome)

    def _settle(self, write: _Write, outcome: tuple[str, bool] | BaseException) -> None:
        with self._lock:
            if write.idempotency_key is not None:
                self._in_flight.pop(write.idempotency_key, None)
                if not isinstance(outcome, BaseException):
                    self._seen[write.idempotency_key] = (outcome[0], time.monotonic())
                    while len(self._seen) > self.SEEN_MAX:
                        self._seen.popitem(last=False)
        if isinstance(outcome, BaseException):
            write.done.set_exception(outcome)
        else:
            write.done.set_result(outcome)

    def _deployment_id(self, runbook_id: str) -> uuid.UUID:
        if runbook_id not in self._deployment_ids:
            try:
                deployment_id = self._prefect.deployment_id(deployment_name(runbook_id, self._deployment))
            except ObjectNotFound:
                raise NotFoundError(
                    f"no deployment {deployment_name(runbook_id, self._deployment)!r} on the Prefect server: "
                    f"is `runbook serve` running (with RUNBOOK_DEPLOYMENT={self._deployment})?"
                ) from None
            self._deployment_ids[runbook_id] = deployment_id
        return self._deployment_ids[runbook_id]

    def _send(self, runbook_id: str, batch: list[_Write]) -> list[tuple[str, bool] | BaseException]:
        """Record the batch's runs; per write, (run id, existed) or why it failed.

        Occurrences already recorded (by another replica, or by this process before it restarted) are
        read, not written: a create costs the Prefect server several times a read (it checks the run's
        job variables against the work pool's template even when the idempotency key makes it the
        existing run). The read costs a round trip, so a batch makes it only while it pays: after a
        batch that met runs already recorded (and at start), not after one whose runs were all new."""
        keys = [write.recorded_key for write in batch if write.recorded_key]
        recorded = self._recorded(runbook_id, keys) if self._read_first else {}
        outcomes: dict[int, tuple[str, bool] | BaseException] = {}
        new = []
        for write in batch:
            run = recorded.get(write.recorded_key) if write.recorded_key is not None else None
            if run is None:
                new.append(write)
            else:
                outcomes[id(write)] = self._existing(runbook_id, write, run)
        created = self._create(runbook_id, new) if new else []
        outcomes.update(zip(map(id, new), created))
        self._read_first = bool(recorded) or any(
            not isinstance(outcome, BaseException) and outcome[1] for outcome in created)
        return [outcomes[id(write)] for write in batch]

    def _recorded(self, runbook_id: str, keys: list[str]) -> dict[str, FlowRun]:
        """The runs of this runbook's deployment already recorded under these idempotency keys."""
        if not keys:
            return {}
        runs = self._prefect.read_flow_runs(deployment_id=self._deployment_id(runbook_id), idempotency_keys=keys,
                                           limit=len(keys))
        return {run.idempotency_key: run for run in runs if run.idempotency_key}

    def _existing(self, runbook_id: str, write: _Write, run: FlowRun) -> tuple[str, bool] | BaseException:
        """The outcome of a write whose occurrence already has `run`."""
        if write.idempotency_key is not None and run.state and run.state.is_crashed():
            # The run of this occurrence died with its process: a repeat notification starts a new
            # one (the same key on every replica, so they still agree on one run).
            again = _Write(runbook_id, self._signed(runbook_id, {
                **write.body, "idempotency_key": f"{write.idempotency_key}:after:{run.id}"}),
                write.request_id, write.idempotency_key)
            return self._send(runbook_id, [again])[0]
        return str(run.id), True

    def _create(self, runbook_id: str, batch: list[_Write]) -> list[tuple[str, bool] | BaseException]:
        """Create the batch's runs and read them back: a run another replica recorded in the meantime
        comes back as the existing one (its trigger's request id is not ours)."""
        answers = self._create_all(runbook_id, batch)
        ids = [str(item["flow_run_id"]) for item in answers if item.get("flow_run_id")]
        runs = {str(run.id): run for run in self._prefect.read_flow_runs(ids=ids, limit=len(batch))} if ids else {}
        outcomes: list[tuple[str, bool] | BaseException] = []
        for write, item in zip(batch, answers):
            run = runs.get(str(item.get("flow_run_id")))
            if item.get("status") != "CREATED" or run is None:
                outcomes.append(UnreachableError(
                    f"the Prefect server did not record the run ({item.get('error') or 'it cannot be read back'}); "
                    "nothing was started, send the alert again"))
            elif (run.parameters.get("trigger") or {}).get("request_id") != write.request_id:
                outcomes.append(self._existing(runbook_id, write, run))
            else:
                outcomes.append((str(run.id), False))
        return outcomes

    def _create_all(self, runbook_id: str, batch: list[_Write], attempts: int = 6) -> list[dict[str, Any]]:
        """Prefect's answer for each write of the batch, sent in one transaction; the writes it failed
        (SQLite's "database is locked" under load) are sent again, a few times, before giving up.
        Sending one again is safe: its idempotency key (every write has one, a Slack command's is its
        own) makes it the same run."""
        answers: dict[int, dict[str, Any]] = {}
        pending = batch
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.05 * 2 ** attempt)
            try:
                results = self._bulk_create(runbook_id, pending)
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                self._deployment_ids.pop(runbook_id, None)  # deleted and registered again: look it up afresh
                results = self._bulk_create(runbook_id, pending)
            answers.update((id(write), item) for write, item in zip(pending, results))
            pending = [write for write, item in zip(pending, results) if item.get("status") != "CREATED"]
            if not pending:
                break
        return [answers[id(write)] for write in batch]

    def _bulk_create(self, runbook_id: str, batch: list[_Write]) -> list[dict[str, Any]]:
        return self._prefect.create_flow_runs(self._deployment_id(runbook_id), [write.body for write in batch])


def _failure(exc: BaseException) -> BaseException:
    """What the callers of a failed write get: a RunbookError saying what failed."""
    if isinstance(exc, (NotFoundError, UnreachableError)):
        return exc
    if isinstance(exc, httpx.TransportError) or (
            isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code >= 500):
        return UnreachableError(f"the Prefect API could not record the run ({type(exc).__name__}: {exc}); "
                                "nothing was started, send the alert again")
    log.exception("creating runs failed")
    return BrokerError(f"the Prefect API refused the run: {type(exc).__name__}: {exc}")
