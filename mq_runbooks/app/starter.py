"""The preloaded run starter: executing a run forks a process that has already imported Prefect, its
flow engine and the catalog's flows, instead of starting an interpreter that imports them (1.5-3 s on
this kind of machine, every run and every resumed gate).

It is a multiprocessing forkserver: one process, started once (`runbook serve`, `runbook worker`),
imports what `PRELOAD` names and then forks a child per run. The forkserver holds no thread, no
event loop and no connection when it forks (importing Prefect starts none), so every child begins
clean. A child:
- is named `rb-` and the first 12 characters of its run's id (what `ps -e`, `top` and `pgrep` show);
- detaches into a session of its own, so a signal to the starting process's group does not reach a
  run that is acting (like the detached executors), and a SIGKILL of serve leaves it running;
- takes the run's environment (the worker's, or a local run's configuration), refreshes Prefect's
  settings from it when they differ from the starter's, claims the run and executes it as
  `python -m mq_runbooks.app.executor RUN_ID` would (app/executor.py);
- writes its output where it is told (the run's log under run-logs/), or where the starting process
  writes (a worker's runs).

app/preloaded_worker.py is Prefect's process worker forking the pool's runs from this starter.
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.process
import os
import sys
import threading
from pathlib import Path

from mq_runbooks.base.files import RUN_UMASK, open_private_log

# What every run imports anyway; mq_runbooks.app.preload also imports the catalog's flows.
PRELOAD = ["mq_runbooks.app.preload"]

_installed: "Starter | None" = None
_install_lock = threading.Lock()


class Starter:
    """Forks runs from a preloaded forkserver. `warm()` starts it and waits until it has imported
    everything, so the first run does not pay for it."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)

    def warm(self) -> None:
        process = self._context.Process(target=_ready, name="runbook-starter-warmup")
        process.start()
        process.join()

    def start(self, run_id: str, env: dict[str, str], *, cwd: str | None = None, log_path: Path | None = None):
        """A child claiming and executing `run_id` (a multiprocessing process: `pid`, `exitcode`,
        `join()`); a run someone else has claimed already is left alone."""
        process = self._context.Process(
            target=_execute_child, name=f"runbook-run-{run_id}",
            args=(run_id, env, cwd, str(log_path) if log_path else None))
        process.start()
        # A run outlives the process that started it: never joined (nor killed) at this process's exit.
        multiprocessing.process._children.discard(process)  # noqa: SLF001
        return process


def install() -> Starter:
    """This process's starter (started and warmed once): `runbook serve` and `runbook worker` use it
    for every run they execute."""
    global _installed
    with _install_lock:
        if _installed is None:
            starter = Starter()
            starter.warm()
            _installed = starter
        return _installed


def installed() -> Starter | None:
    return _installed


def _ready() -> None:
    """The warm-up child: the forkserver answered, so it has imported PRELOAD."""


def process_name(run_id: str) -> str:
    """The name a forked run's process has (at most 15 bytes, the kernel's limit)."""
    return f"rb-{run_id[:12]}"


def _name_process(name: str) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: the process keeps its name
        pass


def _execute_child(run_id: str, env: dict[str, str], cwd: str | None, log_path: str | None) -> None:
    _name_process(process_name(run_id))
    os.setsid()
    os.umask(RUN_UMASK)
    if log_path:
        fd = open_private_log(log_path)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    if cwd:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    from mq_runbooks.app.executor import execute

    try:
        code = execute(run_id, claim=True)
    except BaseException:
        logging.getLogger("runbook.executor").exception("run %s: the executor failed", run_id)
        code = 1
    finally:
        # multiprocessing ends a child with os._exit: run what an interpreter's exit would (Prefect
        # sends the run's last logs and events from there).
        atexit._run_exitfuncs()  # noqa: SLF001
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)

