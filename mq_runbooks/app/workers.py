"""Where runs execute.

Every catalog runbook has two deployments on the Prefect server (a run must belong to a deployment
to suspend at its gate and be executed again when answered):

- `<id>/<RUNBOOK_DEPLOYMENT>` in the work pool RUNBOOK_WORK_POOL (process type): runs of alerts,
  Slack, and `runbook run` with RUNBOOK_RUN_ON=workers. Any worker of the pool executes them: the
  one `runbook serve` embeds, `runbook worker` on other machines, or a plain
  `prefect worker start --pool mq-runbooks` where mq-runbooks is installed (the pool's command runs
  `python -m mq_runbooks.app.executor`).
- `<id>/local`, in no pool: runs `runbook run` executes on this machine, in a detached executor
  process with the caller's configuration. Nobody polls them: when their gate is answered, whoever
  answered starts the executor again with its own configuration (`runbook approve`, serve for
  Slack). A run's own data (job variables, parameters, tags) never chooses an executor's
  configuration, and nothing executes a local run resumed straight through the Prefect API.

An executor claims its run (app/executor.py: claim), so two executors never run one run at once.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from mq_runbooks.base.catalog import Runbook
from mq_runbooks.base.files import RUN_UMASK, make_directory, open_private_log
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.gateway.names import RUN_TAG

LOCAL = "local"
EXECUTOR_COMMAND = "python -m mq_runbooks.app.executor"
log = logging.getLogger("runbook.workers")


def deployment_name(runbook_id: str, name: str) -> str:
    return f"{runbook_id}/{name}"


def pool_template() -> dict:
    """The pool's base job template: our executor's command, fixed. It declares no variables, so the
    Prefect server has no schema to check each run's job variables against (that check was half of
    its CPU per run created, ~9 ms), and no deployment or run can change what a worker executes."""
    return {"job_configuration": {"command": EXECUTOR_COMMAND, "env": {}, "labels": {}, "name": None,
                                  "stream_output": True, "working_dir": None},
            "variables": {"type": "object", "properties": {}}}


def executes_ours(template: dict | None) -> bool:
    """Whether a pool's base job template runs our executor (as `pool_template` makes it)."""
    return ((template or {}).get("job_configuration") or {}).get("command") == EXECUTOR_COMMAND


def ensure_pool(name: str) -> None:
    """The work pool (process type) whose base job template runs our executor; created once, its
    template brought up to date when an older version made it."""
    from mq_runbooks.kit import gateway

    with gateway.connect() as prefect:
        prefect.ensure_work_pool(name, pool_template(),
                                 description="mq-runbooks: runbook runs (python -m mq_runbooks.app.executor)")


def register(runbooks, name: str, pool: str | None) -> None:
    """Create or update the deployments `<id>/<name>` of `runbooks` (e.g. a Catalog) in `pool`, or in
    no pool (None)."""
    from prefect.deployments.runner import EntrypointType

    if pool is not None:
        ensure_pool(pool)
    for runbook in runbooks:
        deployment = runbook.flow_function.to_deployment(
            name=name, entrypoint_type=EntrypointType.MODULE_PATH, tags=[RUN_TAG], description=runbook.title,
            work_pool_name=pool, job_variables={} if pool else None,
        )
        deployment.apply(work_pool_name=pool) if pool else deployment.apply()


def ensure_registered(runbook: Runbook, name: str, pool: str | None) -> None:
    """`register` one runbook once a process (its flow's parameters may have changed since the last)."""
    key = (runbook.id, name, pool)
    if key not in _done:
        register([runbook], name, pool)
        _done.add(key)


_done: set[tuple[str, str, str | None]] = set()


def run_configuration(settings: Settings) -> dict[str, str]:
    """The configuration an executor this process starts gets: `settings` as RUNBOOK_* variables (file
    settings as absolute paths) over this process's own RUNBOOK_* environment. Never read from a run."""
    kept = {key: value for key, value in os.environ.items() if key.startswith("RUNBOOK_")}
    for name, value in settings:
        if isinstance(value, Path):
            kept[f"RUNBOOK_{name.upper()}"] = str(value.resolve())
    return kept


def spawn_executor(settings: Settings, run_id: str) -> None:
    """Execute a run in a detached process on this machine (it claims the run first, so a run
    someone else already executes is left alone), with this process's configuration
    (run_configuration): forked from this process's preloaded starter when it has one (serve, a
    worker), else a new interpreter (the CLI)."""
    from mq_runbooks.app.starter import installed

    log_dir = make_directory(settings.snapshot_dir.parent / "run-logs")  # 0700: a run's log holds what it saw
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUNBOOK_")}
    env.update(run_configuration(settings))
    env["PREFECT_API_URL"] = settings.prefect_api_url
    starter = installed()
    if starter is not None:
        starter.start(str(run_id), env, log_path=log_dir / f"{run_id}.log")
        return
    with os.fdopen(open_private_log(log_dir / f"{run_id}.log"), "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "mq_runbooks.app.executor", str(run_id)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            umask=RUN_UMASK,
        )


def is_local(flow_run) -> bool:
    """Whether a run belongs to a deployment in no pool (executed by `spawn_executor`)."""
    return flow_run.deployment_id is not None and not flow_run.work_pool_name


def worker_environment(settings: Settings) -> None:
    """What a worker's executors need in their environment (they inherit it, in a working directory
    of their own): this interpreter's `python` first on the PATH (the pool's command says
    `python -m mq_runbooks.app.executor`), and the worker's configuration files as absolute paths."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    for name, value in settings:
        if isinstance(value, Path):
            os.environ[f"RUNBOOK_{name.upper()}"] = str(value.resolve())


def wake(run_id: str | None = None) -> None:
    """Called when this process has just created or answered `run_id`, a run of the pool: this
    process's worker forks it now (app/preloaded_worker.py), or with no run looks for runs now
    rather than at its next poll. A no-op where no worker runs (the CLI, `serve --no-runner`)."""
    for waker in list(_wakers):
        waker(run_id)


_wakers: list = []


def add_waker(waker) -> None:
    """Register a worker's `wake` (app/preloaded_worker.py) for `wake()` to call."""
    _wakers.append(waker)


def remove_waker(waker) -> None:
    _wakers.remove(waker)
