"""Execute one flow run of a runbook: `python -m mq_runbooks.app.executor RUN_ID` (a run of this
machine: `runbook run`, or one whose gate was answered) or, from a worker of the pool, with the run
in PREFECT__FLOW_RUN_ID (the pool's command; the worker has claimed it already).

The flow is found through the catalog (a runbook's flow is named after its id), so only runbooks
the catalog validated can be executed. A run that suspends at its gate leaves this process (exit 0);
it is executed again when answered.
"""
from __future__ import annotations

import contextvars
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from mq_runbooks.base.catalog import Catalog, catalog_signature, load_catalog, load_catalog_report
from mq_runbooks.base.errors import RunbookError
from mq_runbooks.base.settings import Settings


def execute(run_id: str, claim: bool) -> int:
    settings = Settings.from_environ()
    settings.apply_to_prefect()
    from prefect.context import refresh_global_settings_context, SyncClientContext
    from prefect.exceptions import Pause
    from prefect.flow_engine import run_flow

    from mq_runbooks.kit import journal
    from mq_runbooks.kit.endings import is_declined
    from mq_runbooks.kit.origin import started_by_engine, without_signature
    from mq_runbooks.kit.signing import signing_key

    if not preloaded_settings_hold(os.environ):  # a forked run's Prefect read them in the starter
        refresh_global_settings_context()
    catalog = _catalog(settings)
    # One client for the claim, the reads and the flow engine (which takes the open context): each
    # client costs its creation and a CSRF round trip.
    with SyncClientContext.get_or_create() as context:
        client = context.client
        if claim and not claim_run(client, run_id):
            print(f"run {run_id} is executed elsewhere (or no longer waits to be): nothing to do")
            return 0
        flow_run = client.read_flow_run(UUID(run_id))
        runbook = catalog.get(client.read_flow(flow_run.flow_id).name)
        if not started_by_engine(signing_key(settings), runbook.id, flow_run.parameters, flow_run.idempotency_key) \
                and not journal.read(run_id):  # (a run this engine executed before starts were signed)
            _refuse_foreign(client, flow_run, runbook)
            return 0
        try:
            with suspension_observer_in_background():
                state = run_flow(runbook.flow_function, flow_run=flow_run,
                                 parameters=without_signature(flow_run.parameters), return_type="state")
        except Pause:
            print(f"run {run_id} waits at its gate with no process; it goes on when answered")
            return 0
    # A declined run (Rejected, TimedOut) ended as it should: an expected outcome, not the executor's failure.
    return 0 if state.is_completed() or state.is_paused() or is_declined(state.name) else 1


def _refuse_foreign(client, flow_run, runbook) -> None:
    """End a run the engine did not start (kit/origin.py) before its first step, named and tagged like
    the engine's own runs so that it reads right where it is listed."""
    from prefect.states import Cancelled

    from mq_runbooks.kit.endings import REFUSED
    from mq_runbooks.kit.labels import run_name, start_tags, target_in_words
    from mq_runbooks.kit.origin import NOT_STARTED_BY_ENGINE

    requested_by = str(flow_run.parameters.get("requested_by") or "unknown")
    try:
        params = runbook.validate_parameters(flow_run.parameters.get("params") or {})
        client.update_flow_run(flow_run.id, name=run_name(runbook.id, target_in_words(runbook, params)),
                               tags=sorted({*flow_run.tags, *start_tags(runbook.id, runbook.lock_key(params),
                                                                         requested_by)}))
    except RunbookError:
        pass  # parameters the runbook would not take: the run keeps its name
    client.set_flow_run_state(flow_run.id, Cancelled(name=REFUSED, message=NOT_STARTED_BY_ENGINE), force=True)
    print(f"run {flow_run.id}: {NOT_STARTED_BY_ENGINE}")


# In the preloaded starter: the catalog it loaded (with what it read, see catalog_signature), so
# that a forked run does not parse and check the same files again (~20 ms).
_preloaded_catalog: tuple[tuple, Catalog] | None = None


def remember_preloaded_catalog(settings: Settings) -> None:
    """Load the catalog once in the starter (importing its flows), and keep it for the runs when
    every file loads (a broken one: each run loads the catalog, and reports what is wrong)."""
    global _preloaded_catalog
    _preloaded_catalog = None
    try:
        signature = catalog_signature(settings.catalog, settings.team_catalog)
        report = load_catalog_report(settings.catalog, settings.team_catalog)
    except (OSError, RunbookError):
        return
    if not report.broken:
        _preloaded_catalog = (signature, report.catalog)


def _catalog(settings: Settings) -> Catalog:
    """The catalog as it is on disk now: the starter's while its files are unchanged."""
    if _preloaded_catalog is not None:
        try:
            if catalog_signature(settings.catalog, settings.team_catalog) == _preloaded_catalog[0]:
                return _preloaded_catalog[1]
        except (OSError, RunbookError):
            pass
    return load_catalog(settings.catalog, settings.team_catalog)


# In the preloaded starter: the PREFECT_* environment its Prefect read its settings from, and those
# settings as Prefect writes them out (the forms a worker passes on to its runs).
_preloaded_settings: tuple[dict[str, str], dict[str, str]] | None = None


def _prefect_variables(env) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("PREFECT_")}


def remember_preloaded_settings() -> None:
    from prefect.settings import get_current_settings

    global _preloaded_settings
    _preloaded_settings = (_prefect_variables(os.environ),
                           get_current_settings().to_environment_variables(exclude_unset=True))


def preloaded_settings_hold(env) -> bool:
    """Whether a forked run's environment gives Prefect the settings the preloaded starter has already
    read, so they are not read again (~30 ms); False outside a forked run. They hold when every
    PREFECT_* variable the starter had is still there, and each one is as the starter had it or as
    its settings write it out."""
    if _preloaded_settings is None:
        return False
    raw, written = _preloaded_settings
    wanted = _prefect_variables(env)
    return raw.keys() <= wanted.keys() and all(
        value == raw.get(key) or value == written.get(key) for key, value in wanted.items())


@contextmanager
def suspension_observer_in_background() -> Iterator[None]:
    """Prefect's flow engine subscribes to the server's events before a deployment's run starts, so
    that a suspension asked from outside (the UI) stops the run at its next task; it waits for the
    subscription first (0.05 s on a quiet server, several tenths under load: on every run's way to
    its first line and from an approval to its action). Here the subscription is made beside the run
    instead: a suspension asked in its first moments is still seen, from the run's state the
    observer reads once subscribed. (Our own gates suspend from inside the run and need no observer.)
    Prefect's own behaviour when the engine no longer has the function under that name."""
    import prefect.flow_engine as engine

    observe = getattr(engine, "observe_flow_run_suspension", None)
    if observe is None:
        yield
        return

    @contextmanager
    def beside(flow_run_id, request) -> Iterator[None]:
        stop = threading.Event()

        def hold() -> None:
            with observe(flow_run_id, request):
                stop.wait()

        thread = threading.Thread(target=contextvars.copy_context().run, args=(hold,), daemon=True,
                                  name="suspension-observer")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=3)

    engine.observe_flow_run_suspension = beside
    try:
        yield
    finally:
        engine.observe_flow_run_suspension = observe


def claim_run(client, run_id: str) -> bool:
    """Move a run to Pending for this process and record the process on it (`infrastructure_pid`,
    host:pid: whose process died is then known, see infrastructure_of); False when someone else
    already claimed it (or it is no longer waiting to be executed). `client`: a sync Prefect client."""
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Pending

    result = client.set_flow_run_state(UUID(run_id), Pending())
    if result.status != SetStateStatus.ACCEPT:
        return False
    client.update_flow_run(UUID(run_id), infrastructure_pid=infrastructure_of(os.getpid()))
    return True


def infrastructure_of(pid: int) -> str:
    """How a run's process is recorded on the run (Prefect's process worker's own form)."""
    return f"{socket.gethostname()}:{pid}"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return execute(argv[1], claim=True)
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        print("usage: python -m mq_runbooks.app.executor RUN_ID (or PREFECT__FLOW_RUN_ID set by a worker)",
              file=sys.stderr)
        return 2
    return execute(run_id, claim=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
