"""Prefect's process worker, executing the pool's runs by forking them from the preloaded starter
(app/starter.py) when the pool's command is ours (app/workers.py: EXECUTOR_COMMAND); a pool whose
command was changed by hand keeps Prefect's way (a new interpreter per run).

`wake()` makes it look for runs at once instead of at its next poll: serve calls it when it has just
created or resumed a run.
"""
from __future__ import annotations

import asyncio
import logging
import tempfile

import anyio
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings
from prefect.workers.process import ProcessWorker, ProcessWorkerResult

from mq_runbooks.app.starter import install
from mq_runbooks.app.workers import EXECUTOR_COMMAND

log = logging.getLogger("runbook.worker")


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
        process = starter.start(str(flow_run.id), env, claim=False, cwd=self._cwd)
        task_status.started(ProcessHandle(process))
        while process.exitcode is None:
            await anyio.sleep(0.2)


class PreloadedWorker(ProcessWorker):
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

    def wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """Look for runs to execute now (thread-safe; `loop` is the worker's)."""
        asyncio.run_coroutine_threadsafe(self.get_and_submit_flow_runs(), loop).add_done_callback(_log_failure)


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("looking for runs to execute failed: %s", future.exception())
