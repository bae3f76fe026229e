"""Prefect's process worker, executing the pool's runs by forking them from the preloaded starter
(app/starter.py) when the pool runs our executor (app/workers.py: pool_template); a pool whose
template was changed by hand keeps Prefect's way (a new interpreter per run).

A run is forked as soon as the worker knows of it: one this process has just created or answered
(`wake(run_id)`: serve's alerts, Slack, an answer given through serve) at once, others when a look
finds them. The child claims the run itself (Pending), as a local run's executor does, so a run that
another worker took first is left alone; Prefect's own submission (a deployment read, the Pending,
Submitting and label writes, the job configuration) is skipped. A forked run holds one of the
worker's slots (`--limit`) until its process exits; with every slot taken a run waits for a look.
A child that dies is told to the Prefect server at once (Crashed), as Prefect's worker does. When
the worker stops, runs that are acting go on in their own processes (sessions of their own).

A run of its pool answered anywhere (the Prefect server's `prefect.flow-run.Resuming` event:
`runbook approve`, Slack on any replica, the Prefect UI) is forked as soon as the event arrives, like
one this process answered. It looks for runs at once rather than at its next poll
(PREFECT_WORKER_QUERY_SECONDS, 1 s here) when a run of its pool is scheduled anywhere (the
`prefect.flow-run.Scheduled` event: it may be due later, and a look respects its time) and when
`wake()` asks. Looks asked for while one is under way are coalesced into one more.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import tempfile
import warnings
from uuid import UUID

import anyio
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import get_current_settings
from prefect.workers.process import ProcessWorker

from mq_runbooks.app import workers
from mq_runbooks.app.executor import infrastructure_of
from mq_runbooks.app.starter import install
from mq_runbooks.app.workers import executes_ours, worker_environment
from mq_runbooks.base.catalog import Catalog
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.crashes import NEVER_STARTED

log = logging.getLogger("runbook.worker")
RUN_EVENTS = ["prefect.flow-run.Resuming", "prefect.flow-run.Scheduled"]


# What this module (the one adapter onto Prefect's worker internals) uses of ProcessWorker beyond its
# documented API: methods with the parameters called, attributes set by its __init__, and the one
# method of its cancelling observer called. tests/app/test_prefect_worker_pins.py fails the day a
# Prefect release renames or reshapes one of them (the pin is prefect<3.10, pyproject.toml).
PRIVATE_METHODS = {
    "_submit_run": ("self", "flow_run"),  # overridden: a run of our pool is forked, not submitted
    "_give_worker_labels_to_flow_run": ("self", "flow_run_id"),  # overridden: skipped for forked runs
    "_release_limit_slot": ("self", "flow_run_id"),
    "_propose_crashed_state": ("self", "flow_run", "message"),
}
PRIVATE_ATTRIBUTES = ("_submitting_flow_run_ids", "_limiter", "_cancelling_observer", "_work_pool", "_work_pool_name")
OBSERVER_METHODS = {"remove_in_flight_flow_run_id": ("self", "flow_run_id")}  # of _cancelling_observer


# Prefect registers worker classes by type; ours is the process type on purpose (the pool is a process pool).
warnings.filterwarnings("ignore", message="Type 'PreloadedWorker' .* matches existing registered type")


class PreloadedWorker(ProcessWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wanted = asyncio.Event()
        self._due: asyncio.Queue[UUID] | None = None
        self._environment: tuple[dict[str, str], dict[str, str]] | None = None

    async def start(self, *args, **kwargs) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = asyncio.Queue()
        async with anyio.create_task_group() as group:
            group.start_soon(self._look_when_wanted)
            group.start_soon(self._listen_for_runs)
            group.start_soon(self._execute_when_due, group)
            try:
                await super().start(*args, **kwargs)
            finally:
                group.cancel_scope.cancel()

    async def _give_worker_labels_to_flow_run(self, flow_run_id) -> None:
        """Prefect labels each run with the worker that took it; a busy server refusing that (503 after
        the client's retries) must not crash a run that has not started: the label is left out."""
        try:
            await super()._give_worker_labels_to_flow_run(flow_run_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("run %s is executed without its worker labels (the Prefect server refused them: %s)",
                        flow_run_id, exc)

    def wake(self, run_id: str | None = None) -> None:
        """Execute `run_id` (a run of the pool this process has just created or answered) now, or look
        for runs to execute now (from any thread)."""
        if self._loop is None:
            return
        if run_id is None:
            self._loop.call_soon_threadsafe(self._wanted.set)
        else:
            self._loop.call_soon_threadsafe(self._take, UUID(run_id))

    def _forks_runs(self) -> bool:
        """Whether the pool's runs are ours to fork (it runs our executor, as we made it)."""
        return self._work_pool is not None and executes_ours(self._work_pool.base_job_template)

    def _take(self, run_id: UUID) -> None:
        """On the worker's loop, so that a look sees the run taken (and leaves it) from now on."""
        if run_id in self._submitting_flow_run_ids:  # a look has just taken it
            return
        if self._due is None or not self._forks_runs():
            self._wanted.set()
            return
        if self._limiter is not None:
            try:
                self._limiter.acquire_on_behalf_of_nowait(run_id)
            except (anyio.WouldBlock, RuntimeError):  # every slot taken (or this run holds one already)
                self._wanted.set()
                return
        self._submitting_flow_run_ids.add(run_id)
        self._due.put_nowait(run_id)

    async def _execute_when_due(self, group) -> None:
        while True:
            group.start_soon(self._execute_here, await self._due.get())

    async def _submit_run(self, flow_run) -> None:
        """A run a look found (its slot taken, the run marked as being submitted): forked here like
        one this process created, rather than through Prefect's submission (a deployment read, the
        Pending, Submitting and label writes, the job configuration): fewer writes to a busy server,
        and a quarter of a second less per run."""
        if not self._forks_runs():
            return await super()._submit_run(flow_run)
        if self._cancelling_observer is not None:
            self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)
        await self._execute_here(flow_run.id)

    def _run_environment(self) -> dict[str, str]:
        """A forked run's environment: this process's, with its Prefect settings written out (made
        again only when this process's environment changed: writing them out costs ~20 ms)."""
        current = dict(os.environ)
        if self._environment is None or self._environment[0] != current:
            self._environment = (current, {
                **current, **get_current_settings().to_environment_variables(exclude_unset=True)})
        return self._environment[1]

    async def _execute_here(self, run_id: UUID) -> None:
        """Fork the run's executor (which claims it first) and hold its slot until the child exits; a
        child that dies is told to the Prefect server at once, as Prefect's worker does (Crashed: a run
        that never reached Running is made due again by serve's sweep, kit/crashes.py)."""
        process = None
        try:
            env = self._run_environment()
            with tempfile.TemporaryDirectory(suffix="-runbook") as scratch:
                starter = await anyio.to_thread.run_sync(install)
                process = await anyio.to_thread.run_sync(
                    functools.partial(starter.start, str(run_id), env, cwd=scratch))
                try:
                    while process.exitcode is None:
                        await anyio.sleep(0.2)
                except anyio.get_cancelled_exc_class():  # the worker stops: the run goes on in its process
                    log.info("run %s goes on to its end in its own process (pid %s)", run_id, process.pid)
                    raise
        except Exception as exc:  # noqa: BLE001  (the run is still Scheduled: a look takes it)
            log.warning("run %s could not be forked here (%s: %s); it waits for a worker's look",
                        run_id, type(exc).__name__, exc)
            self._wanted.set()
        finally:
            self._submitting_flow_run_ids.discard(run_id)
            self._release_limit_slot(run_id)
        if process is not None and process.exitcode:
            try:
                await self._crashed(run_id, process.pid, process.exitcode)
            except Exception as exc:  # noqa: BLE001  (the heartbeat window catches it instead)
                log.warning("run %s: its process exited (%s) and telling the Prefect server failed: %s: %s",
                            run_id, process.exitcode, type(exc).__name__, exc)

    def _announced(self, event: str, resource_id: str) -> None:
        try:
            run_id = UUID(resource_id.removeprefix("prefect.flow-run."))
        except ValueError:
            run_id = None
        if event == "prefect.flow-run.Resuming" and run_id is not None:
            self._take(run_id)  # a look instead when it cannot be forked now (every slot taken)
        else:
            self._wanted.set()

    async def _crashed(self, run_id: UUID, pid: int, exitcode: int) -> None:
        flow_run = await self.client.read_flow_run(run_id)
        if flow_run.infrastructure_pid != infrastructure_of(pid):
            return  # the process died before claiming the run: whoever claimed it executes it
        if flow_run.state is None or not (flow_run.state.is_pending() or flow_run.state.is_running()):
            return  # it ended or waits as it should (a run that exits 1 has set its own final state)
        how = f"by signal {-exitcode}" if exitcode < 0 else f"with code {exitcode}"
        if flow_run.state.is_pending():
            message = f"{NEVER_STARTED[1]}: its process on {socket.gethostname()} exited {how} before Running"
        else:
            message = f"The run's process on {socket.gethostname()} exited {how} while the run was Running"
        await self._propose_crashed_state(flow_run, message)

    async def _look_when_wanted(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.get_and_submit_flow_runs()
            except Exception as exc:  # noqa: BLE001  (the poll looks again within a second)
                log.warning("looking for runs to execute failed: %s: %s", type(exc).__name__, exc)

    async def _listen_for_runs(self) -> None:
        """Act on the server's events of runs of this pool becoming due: an answered run (Resuming:
        due at once, Prefect schedules it for now) is taken at once, as one this process answered
        (its child claims it, or leaves it to whoever did first); a scheduled one (it may be due
        later) is left to a look, which respects its time."""
        wanted = EventFilter(event=EventNameFilter(name=RUN_EVENTS))
        while True:
            try:
                async with get_events_subscriber(filter=wanted) as events:
                    async for event in events:
                        if any(related.role == "work-pool" and related.name == self._work_pool_name
                               for related in event.related):
                            self._announced(event.event, event.resource.id)
            except Exception as exc:  # noqa: BLE001  (polling goes on meanwhile)
                log.warning("listening for answered runs failed (%s: %s); polling only, trying again in 30 s",
                            type(exc).__name__, exc)
            await anyio.sleep(30)


async def run_worker(settings: Settings, catalog: Catalog, limit: int | None, name: str | None = None,
                     register_deployments: bool = True, started=None) -> None:
    """A Prefect process worker of the pool (registering the catalog's deployments first) executing
    runs through this process's preloaded starter (app/starter.py), until cancelled. `started()` is
    called once it polls; from then on `wake()` makes it look for runs at once."""
    import threading

    import anyio

    worker_environment(settings)
    threading.Thread(target=install, daemon=True, name="run-starter").start()  # beside the registration
    if register_deployments:
        await anyio.to_thread.run_sync(workers.register, catalog, settings.deployment, settings.work_pool)
    else:
        await anyio.to_thread.run_sync(workers.ensure_pool, settings.work_pool)
    worker = PreloadedWorker(work_pool_name=settings.work_pool, limit=limit, name=name,
                             create_pool_if_not_found=False)
    workers.add_waker(worker.wake)
    if started is not None:
        started()
    try:
        await worker.start()
    finally:
        workers.remove_waker(worker.wake)


STOP_WITHIN_S = 20.0


def run_worker_until_stopped(settings: Settings, catalog: Catalog, limit: int | None, name: str | None = None,
                             started=None) -> None:
    """`run_worker` in this (the main) thread until SIGINT or SIGTERM. Then it stops looking for runs
    and exits, within STOP_WITHIN_S whatever Prefect's teardown does, leaving the runs that are acting
    to finish in their own processes (each in a session of its own, app/starter.py)."""
    import signal
    import threading

    import anyio

    async def until_stopped() -> None:
        async with anyio.create_task_group() as group:
            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for received in signals:
                        log.info("%s: the worker stops; runs that are acting go on in their own processes",
                                 signal.Signals(received).name)
                        deadline = threading.Timer(STOP_WITHIN_S, os._exit, args=(0,))
                        deadline.daemon = True
                        deadline.start()
                        group.cancel_scope.cancel()  # cancelled until every task has left, unlike one cancel()
                        return

            group.start_soon(stop_on_signal)
            await run_worker(settings, catalog, limit, name=name, started=started)
            group.cancel_scope.cancel()

    anyio.run(until_stopped)
