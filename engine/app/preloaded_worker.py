"""Prefect's process worker, executing the pool's runs by forking them from the preloaded starter
(app/starter.py) when the pool's command is ours (app/workers.py: EXECUTOR_COMMAND); a pool whose
command was changed by hand keeps Prefect's way (a new interpreter per run).

It looks for runs at once rather than at its next poll (PREFECT_WORKER_QUERY_SECONDS, 1 s here)
when a run of its pool is answered anywhere (the Prefect server's `prefect.flow-run.Resuming` event:
`runbook approve`, Slack on any replica, the Prefect UI), and when this process has just created or
answered one (`wake()`). Looks asked for while one is under way are coalesced into one more.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import tempfile
import warnings

import anyio
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings
from prefect.workers.process import ProcessWorker, ProcessWorkerResult

from mq_runbooks.app.starter import install
from mq_runbooks.app.workers import EXECUTOR_COMMAND

log = logging.getLogger("runbook.worker")
RUN_EVENTS = ["prefect.flow-run.Resuming", "prefect.flow-run.Scheduled"]


class LeftToFinish:
    """How the worker stops a run's process: as Prefect does when the run is cancelled (SIGTERM, then
    SIGKILL), but not once the worker itself stops. Then the run goes on to its end: its process is in
    a session of its own and reports its own states (killing a run mid-change is the worst outcome)."""

    def __init__(self) -> None:
        self.detached = False

    @property
    def wait_after_graceful_kill(self) -> bool:
        return not self.detached

    def is_alive(self, pid: int) -> bool:
        if self.detached:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def graceful_kill(self, pid: int) -> None:
        if not self.detached:
            os.kill(pid, signal.SIGTERM)

    def hard_kill(self, pid: int) -> None:
        if not self.detached:
            os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        pass


class ForkStarter:
    """Prefect's starter protocol over our forkserver: the environment Prefect's engine command would
    get, then a child forked from the preloaded process, watched until it exits."""

    def __init__(self, env: dict[str, str | None], cwd: str, control_channel) -> None:
        self._env, self._cwd, self._control_channel = env, cwd, control_channel

    async def start(self, flow_run, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        env = {key: value for key, value in self._env.items() if value is not None}
        env.update(get_current_settings().to_environment_variables(exclude_unset=True))
        env["PREFECT__FLOW_RUN_ID"] = str(flow_run.id)
        env["PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS"] = "false"  # the worker runs those hooks
        try:
            port, token = self._control_channel.register(flow_run.id)
            env.update(PREFECT__CONTROL_PORT=str(port), PREFECT__CONTROL_TOKEN=token)
        except RuntimeError:  # no control channel: cancelling kills the process instead
            pass
        starter = await anyio.to_thread.run_sync(install)
        # In a thread: a forkserver that died is started again there (its imports take seconds).
        process = await anyio.to_thread.run_sync(
            functools.partial(starter.start, str(flow_run.id), env, claim=False, cwd=self._cwd))
        scope = LeftToFinish()
        task_status.started(ProcessHandle(process, termination_scope=scope))
        try:
            while process.exitcode is None:
                await anyio.sleep(0.2)
        except anyio.get_cancelled_exc_class():  # the worker stops (a cancelled run's process is killed instead)
            scope.detached = True
            log.info("run %s goes on to its end in its own process (pid %s)", flow_run.id, process.pid)
            raise


# Prefect registers worker classes by type; ours is the process type on purpose (the pool is a process pool).
warnings.filterwarnings("ignore", message="Type 'PreloadedWorker' .* matches existing registered type")


class PreloadedWorker(ProcessWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wanted = asyncio.Event()

    async def start(self, *args, **kwargs) -> None:
        self._loop = asyncio.get_running_loop()
        async with anyio.create_task_group() as group:
            group.start_soon(self._look_when_wanted)
            group.start_soon(self._listen_for_runs)
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

    def wake(self) -> None:
        """Look for runs to execute now (from any thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wanted.set)

    async def _look_when_wanted(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.get_and_submit_flow_runs()
            except Exception as exc:  # noqa: BLE001  (the poll looks again within a second)
                log.warning("looking for runs to execute failed: %s: %s", type(exc).__name__, exc)

    async def _listen_for_runs(self) -> None:
        """Wake on the server's events of runs of this pool becoming due (answered, or scheduled)."""
        wanted = EventFilter(event=EventNameFilter(name=RUN_EVENTS))
        while True:
            try:
                async with get_events_subscriber(filter=wanted) as events:
                    async for event in events:
                        if any(related.role == "work-pool" and related.name == self._work_pool_name
                               for related in event.related):
                            self._wanted.set()
            except Exception as exc:  # noqa: BLE001  (polling goes on meanwhile)
                log.warning("listening for answered runs failed (%s: %s); polling only, trying again in 30 s",
                            type(exc).__name__, exc)
            await anyio.sleep(30)

    async def run(self, flow_run, configuration, task_status=None):
        if configuration.command != EXECUTOR_COMMAND:
            return await super().run(flow_run, configuration, task_status)
        task_status = task_status or anyio.TASK_STATUS_IGNORED
        execution = None
        with tempfile.TemporaryDirectory(suffix="-runbook") as scratch:
            async with FlowRunExecutorContext() as context:
                starter = ForkStarter(configuration.env, str(configuration.working_dir or scratch),
                                      context.control_channel)
                executor = context.create_executor(flow_run, starter, resolve_flow=load_flow_from_flow_run,
                                                   propose_submitting=False)

                async def submit(*, task_status=anyio.TASK_STATUS_IGNORED) -> None:
                    nonlocal execution
                    execution = await executor.submit(task_status=task_status)

                async with anyio.create_task_group() as group:
                    handle = await group.start(submit)
                    task_status.started(handle.pid)
        if execution is None or execution.status_code is None:
            raise RuntimeError(f"the run {flow_run.id} did not start")
        return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))
