"""The names the package gives things on the Prefect server, defined once: the tags a run carries,
the state names a declined or refused run ends in, the artifact type of the journal.

    start_tags("kafka-replay", "kafka:primary:group:billing", "alice")
    # ["mq-runbooks", "runbook:kafka-replay", "lock:kafka:primary:group:billing", "requested-by:alice"]
    runbook_of(["mq-runbooks", "runbook:kafka-replay"])  # "kafka-replay"
"""
from __future__ import annotations

from collections.abc import Iterable

RUN_TAG = "mq-runbooks"  # every run of ours (and every deployment) carries it
RUNBOOK, LOCK, REQUESTED_BY, WAITS_FOR = "runbook:", "lock:", "requested-by:", "waits-for:"
ALERT = "alert:"
REJECTED, TIMED_OUT, REFUSED = "Rejected", "TimedOut", "Refused"  # final states of a declined or refused run
DECLINED_STATE_NAMES = (REJECTED, TIMED_OUT)
RESUMING = "Resuming"  # Prefect's name of the Scheduled state of a run answered at its gate
PAUSE_EXPIRED = "The flow was paused and never resumed."  # the Prefect server's message at a gate's deadline
JOURNAL_ARTIFACT = "runbook-journal"  # the type of the artifacts that are a run's journal entries


def lock_tag(key: str) -> str:
    return f"{LOCK}{key}"


def runbook_tag(runbook_id: str) -> str:
    return f"{RUNBOOK}{runbook_id}"


def alert_tag(occurrence_key: str) -> str:
    return f"{ALERT}{occurrence_key[:32]}"


def start_tags(runbook_id: str, lock_key: str, requested_by: str) -> list[str]:
    return [RUN_TAG, runbook_tag(runbook_id), lock_tag(lock_key), f"{REQUESTED_BY}{requested_by}"]


def tagged(tags: Iterable[str], prefix: str) -> str | None:
    """The value of the first tag with `prefix` (e.g. RUNBOOK), or None."""
    return next((tag[len(prefix):] for tag in tags if tag.startswith(prefix)), None)


def runbook_of(tags: Iterable[str]) -> str | None:
    return tagged(tags, RUNBOOK)


def lock_of(tags: Iterable[str]) -> str | None:
    return tagged(tags, LOCK)
