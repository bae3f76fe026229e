"""The postmortem step every runbook flow takes at the end of a run, whatever its outcome:

    from mq_runbooks.kit.postmortem.publish import write_postmortem
    ...
    finally:
        write_postmortem(run_id)

It writes (or refreshes) the run's draft in the postmortem directory and attaches it to the run as a
Prefect markdown artifact; `redraft_when_final()` has it drafted once more when Prefect has set the
run's final state, so the draft says that state. It never raises into the flow: a draft that cannot be written is logged
and recorded in the run's journal as a note (`runbook postmortems draft RUN` writes it later).
"""
from __future__ import annotations

import logging
from pathlib import Path

from mq_runbooks.kit.postmortem.draft import draft_postmortem
from mq_runbooks.kit.postmortem.store import Postmortem, short_run_id
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal
from mq_runbooks.kit.run_artifacts import put_markdown
from mq_runbooks.kit.records import Note

ARTIFACT_KEY_PREFIX = "postmortem-"


def draft_and_attach(run_id: str, settings: Settings | None = None,
                     allow_message_values: bool = False) -> tuple[Postmortem, bool]:
    """Write or refresh the draft of `run_id` and attach it to the run; (the postmortem, whether written).

    Raises what drafting raises (NotFoundError, ConfigError for a broken template, Prefect errors).
    A reviewed postmortem is neither rewritten nor attached again.
    """
    settings = settings or Settings.from_environ()
    _flush_logs()
    postmortem, written = draft_postmortem(settings, run_id, allow_message_values)
    if written:  # one card on the run's page, updated in place by each redraft
        put_markdown(str(run_id), f"{ARTIFACT_KEY_PREFIX}{short_run_id(run_id)}", postmortem.body,
                     f"postmortem draft {postmortem.id} ({postmortem.path})")
    return postmortem, written


def write_postmortem(run_id: str, settings: Settings | None = None) -> Path | None:
    """The path of the run's postmortem (drafted now, or the reviewed one left as it was); None if
    it could not be written, in which case the failure is logged and noted in the journal."""
    log = _logger()
    try:
        postmortem, written = draft_and_attach(run_id, settings)
    except Exception as exc:  # noqa: BLE001  (a postmortem must never fail the run it describes)
        log.warning("postmortem draft not written: %s: %s", type(exc).__name__, exc)
        try:
            journal.write(run_id, Note(summary=f"postmortem draft not written ({type(exc).__name__}: {exc}); "
                                               f"write it with: runbook postmortems draft {run_id}",
                                       data={"postmortem_error": str(exc)}))
        except Exception as journal_exc:  # noqa: BLE001
            log.warning("could not note the failed draft in the journal either: %s", journal_exc)
        return None
    if written:
        log.info("postmortem draft %s written to %s", postmortem.id, postmortem.path)
    else:
        log.info("postmortem %s is already reviewed; left as it is", postmortem.id)
    return postmortem.path


def redraft_when_final() -> None:
    """Have the running flow draft its postmortem again once Prefect has recorded its final state
    (Completed, Failed, Crashed, Cancelled), so the draft states that state and not "Running".

    A flow state hook on the running flow (Prefect calls it after the state is set, in the run's own
    process); the flow object keeps it for the later runs this process executes, which it serves the
    same way. Outside a flow run it does nothing.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow = context.flow if context is not None else None
    if flow is None:
        return
    for hooks in (flow.on_completion_hooks, flow.on_failure_hooks, flow.on_crashed_hooks,
                  flow.on_cancellation_hooks):
        if _redraft_final not in hooks:
            hooks.append(_redraft_final)


def _redraft_final(flow, flow_run, state) -> None:  # noqa: ANN001 (Prefect's flow state hook signature)
    write_postmortem(str(flow_run.id))


def _logger():
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _flush_logs() -> None:
    """Send the run's buffered log lines to the server, so the draft's excerpt ends with the latest."""
    from prefect.logging.handlers import APILogHandler

    try:
        APILogHandler().flush()
    except Exception:  # noqa: BLE001  (outside a flow there is nothing to flush)
        pass
