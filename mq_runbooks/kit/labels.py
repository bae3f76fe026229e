"""What a run is called and tagged where people look (Prefect's UI, `runbook runs`): named after its
runbook and target (`kafka-replay primary/billing`), tagged with its runbook, its lock's target, who
requested it and, while its gate waits, whom it waits for.

Set when a run is created (app/starts.py) and again by the driver when
it starts, so a run created from the deployment's Run form in Prefect's UI reads the same. Tags are
labels for people and filters only: a run never takes its configuration from them.

    run_name("kafka-replay", "primary/billing")       # "kafka-replay primary/billing"
    start_tags("kafka-replay", "kafka:primary:group:billing", "alice")
    # ["mq-runbooks", "runbook:kafka-replay", "lock:kafka:primary:group:billing", "requested-by:alice"]
"""
from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from mq_runbooks.kit import gateway
from mq_runbooks.kit.gateway.names import REQUESTED_BY, RUN_TAG, WAITS_FOR, start_tags


def run_name(runbook_id: str, target: str) -> str:
    return f"{runbook_id} {target}".strip()


def target_in_words(runbook, params) -> str:
    """The target as the runbook says it (its steps' `target`, e.g. primary/billing), else its lock key."""
    target = getattr(getattr(runbook.planner, "__self__", None), "target", None)  # planner: STEPS.dry_run
    try:
        return str(target(params)) if callable(target) else runbook.lock_key(params)
    except Exception:  # noqa: BLE001  (a name is a label: never a reason not to start a run)
        return runbook.lock_key(params)


def waits_for_tag(approvers: Sequence[str], required: int) -> str:
    """e.g. "waits-for:1 of @kafka-oncall,carol"."""
    return f"{WAITS_FOR}{required} of {','.join(approvers)}"


def label(run_id: str, name: str | None = None, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
    """Rename a run and add tags, and drop the tags starting with a prefix in `remove`; nothing is
    written when the run already reads so."""
    with gateway.connect() as prefect:
        flow_run = prefect.read_flow_run(UUID(run_id))
        tags = [tag for tag in flow_run.tags if not any(tag.startswith(prefix) for prefix in remove)]
        tags += [tag for tag in add if tag not in tags]
        if tags == list(flow_run.tags) and (name is None or name == flow_run.name):
            return
        prefect.update_flow_run(UUID(run_id), name=name, tags=tags)


__all__ = ["REQUESTED_BY", "RUN_TAG", "WAITS_FOR", "label", "run_name", "start_tags", "target_in_words",
           "waits_for_tag"]
