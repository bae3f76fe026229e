"""The driver's port (kit/run_port.py) on Prefect, through the gateway (kit/gateway/): the journal as
signed artifacts (kit/journal.py), the lock as a concurrency lease (kit/lock.py), the gate as a
suspended flow run, what people see as tags and artifacts (kit/labels.py, kit/run_artifacts.py), the
postmortem draft, and each step as a Prefect task.

    PREFECT.write(run_id, records.Note(summary="..."))
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mq_runbooks.kit import journal, labels, lock, run_artifacts

T = TypeVar("T")


def publish_postmortem(run_id: str) -> None:
    """Write the run's draft and say where to review it (in the journal, so in Slack's thread too);
    it is drafted again once Prefect has recorded the run's final state."""
    from mq_runbooks.base.settings import Settings
    from mq_runbooks.kit.postmortem.publish import redraft_when_final, write_postmortem
    from mq_runbooks.kit.records import PostmortemWritten

    settings = Settings.from_environ()
    path = write_postmortem(run_id, settings)
    if path is not None:
        url = f"{settings.public_url.rstrip('/')}/postmortems/{path.stem}"
        where = (f"review it at {url}" if settings.public_url else
                 f"review it on runbook serve's page /postmortems/{path.stem}, or with `runbook postmortems show "
                 f"{path.stem}`")  # a bare /postmortems/... read like a path at the filesystem's root
        journal.write(run_id, PostmortemWritten(summary=f"postmortem draft written to {path}; {where}", path=str(path),
                                                url=url))
    redraft_when_final()


def suspend_for_answer(form: type, *, timeout: int, key: str, message: str, on_suspend=None):
    """The answer (an instance of `form`, kit/gate.py's Approval) given for `key`: at once when the run
    was resumed with it (a re-execution), else the run suspends (its process leaves through Prefect's
    Pause signal) with `message` as its state message.

    Prefect's `suspend_flow_run`, plus the state message that makes a refused answer visible."""
    from prefect import get_run_logger
    from prefect.context import FlowRunContext
    from prefect.exceptions import Abort, Pause
    from prefect.input import keyset_from_paused_state
    from prefect.states import Suspended
    from prefect._flow_run_suspension import mark_flow_run_suspension_requested

    from mq_runbooks.kit import gateway

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("the approval gate runs inside a flow run")
    proposed = Suspended(timeout_seconds=timeout, pause_key=key, message=message[:1000])
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    with gateway.connect() as prefect:
        try:
            state = prefect.propose_state(context.flow_run.id, proposed)
        except Abort as exc:
            raise RuntimeError(f"the run cannot wait at its gate: {exc}") from None
        if state.is_running():  # this key was suspended on before and the run was resumed: the answer is in
            return form.load(keyset)
        if not state.is_paused():
            raise RuntimeError(f"the run cannot wait at its gate: the Prefect API answered {state}")
        form.save(keyset)
    if on_suspend is not None:
        on_suspend(timeout)
    mark_flow_run_suspension_requested(context.flow_run.id, state)
    get_run_logger().info("waiting at the gate with no process: %s", message)
    raise Pause(state=state)


def _retry_condition(retry_if: Callable[[BaseException], bool]):
    """Prefect's retry_condition_fn for `retry_if(the step's error)`."""
    def condition(task_, task_run, state) -> bool:
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001  (the step's own error, judged by retry_if)
            return retry_if(exc)
        return False
    return condition


class PrefectRunPort:
    """kit/run_port.py's RunPort on the Prefect server (see the module docstring)."""

    def read(self, run_id: str) -> list[journal.Entry]:
        return journal.read(run_id)

    def write(self, run_id: str, record) -> journal.Entry:
        return journal.write(run_id, record)

    def now(self):
        return journal.now_utc()

    def lock(self, key: str, run_id: str, wait_s: float, adopt: str | None = None,
             suspended_for: Callable[[], float] | None = None):
        return lock.target_lock(key, run_id, wait_s, adopt=adopt, suspended_for=suspended_for)

    def ask(self, form: type, *, timeout: int, key: str, message: str, on_suspend=None):
        return suspend_for_answer(form, timeout=timeout, key=key, message=message, on_suspend=on_suspend)

    def label(self, run_id: str, name: str | None = None, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        labels.label(run_id, name=name, add=add, remove=remove)

    def publish_plan(self, run_id: str, summary: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        run_artifacts.publish_plan(run_id, summary, columns, rows)

    def publish_timeline(self, run_id: str, entries: Sequence[journal.Entry]) -> None:
        run_artifacts.publish_timeline(run_id, entries)

    def publish_postmortem(self, run_id: str) -> None:
        publish_postmortem(run_id)

    def task(self, name: str, fn: Callable[..., T], *, retries: int = 0, retry_delay_s: float = 0.0,
             retry_if: Callable[[BaseException], bool] | None = None,
             persist_key: str | None = None) -> Callable[..., T]:
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        options: dict[str, Any] = {"name": name}
        if retries:
            options.update(retries=retries, retry_delay_seconds=retry_delay_s)
        if retry_if is not None:
            options["retry_condition_fn"] = _retry_condition(retry_if)
        if persist_key is None:
            options["cache_policy"] = NO_CACHE
        else:  # kept in Prefect's result storage, keyed by the run: read back when it is executed again
            options.update(cache_key_fn=lambda *_: persist_key, persist_result=True)
        return task(**options)(fn)

    def logger(self) -> logging.Logger | logging.LoggerAdapter:
        from prefect import get_run_logger

        return get_run_logger()


PREFECT = PrefectRunPort()

__all__ = ["PREFECT", "PrefectRunPort", "publish_postmortem", "suspend_for_answer"]
