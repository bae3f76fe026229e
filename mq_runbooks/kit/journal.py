"""The run journal: the one record of a run that every later view reads (CLI status, Slack, the
postmortem, the audit trail).

Each entry is appended as its own Prefect artifact of type `runbook-journal`, a version of the run's
key `runbook-journal-<run id>` (`entries_key`). Append-only entries need no read-modify-write, so the
flow, the CLI (a refused approval) and any `runbook serve` replica can all write to one run's journal,
and any process that reaches the Prefect API can read it, during the run or long after. The entries
are not attached to the flow run itself: Prefect's UI would show each as a card of an unknown type
on the run's page, where people read the journal as one Markdown timeline (kit/run_artifacts.py).
Entries written attached to the run (before this was so) are read too.

An entry: {"at": ISO-8601 UTC, "kind": one of KINDS, "summary": one line, "data": {...},
"prev": the signature of the newest entry its writer had read or written ("" if none),
"mac": the engine's HMAC (kit/signing.py) over the run id and all of the above}.

Whoever holds the Prefect credential can post an artifact of this type to any run: so an entry is
believed only when its signature holds, and `read` leaves out every other one (the driver never
replays a forged approval or a forged step). Each entry names the one before it (`prev`), so an
entry deleted from the middle of a journal shows as a missing link; `problems` names both, for
`runbook status` and `doctor`.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from mq_runbooks.kit import gateway
from mq_runbooks.kit.gateway.names import JOURNAL_ARTIFACT as ARTIFACT_TYPE

if TYPE_CHECKING:
    from mq_runbooks.kit.records import Record
KINDS = (
    "trigger", "parameters", "lock", "observation", "plan", "approval_requested", "approval",
    "approval_refused", "rejection", "snapshot", "action", "verification", "rollback", "error",
    "outcome", "note", "alert_resolved", "slack", "postmortem",
)


@dataclass(frozen=True)
class Entry:
    at: dt.datetime
    kind: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    prev: str = field(default="", compare=False)
    mac: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "summary": self.summary, "data": self.data}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> "Entry":
        return cls(dt.datetime.fromisoformat(document["at"]), document["kind"], document["summary"],
                   document.get("data") or {}, str(document.get("prev") or ""), str(document.get("mac") or ""))


def _signed_fields(run_id: str, document: dict[str, Any]) -> dict[str, Any]:
    return {"run": run_id, "at": document["at"], "kind": document["kind"], "summary": document["summary"],
            "data": document.get("data") or {}, "prev": document.get("prev") or ""}


def _key() -> bytes:
    """This process's signing key (kit/signing.py), read once per configuration of it."""
    from mq_runbooks.base.settings import Settings
    from mq_runbooks.kit.signing import signing_key

    source = (os.environ.get("RUNBOOK_SIGNING_KEY"), os.environ.get("RUNBOOK_SIGNING_KEY_FILE"),
              os.environ.get("XDG_CONFIG_HOME"), os.environ.get("HOME"))
    if _keys.get(source) is None:
        _keys.clear()
        _keys[source] = signing_key(Settings.from_environ())
    return _keys[source]


_keys: dict[tuple, bytes] = {}
# The newest signature this process read or wrote, per run: what its next entry names as `prev`
# (the newest LAST_MACS_KEPT runs: a long-lived serve touches many runs).
_last_mac: dict[str, str] = {}
LAST_MACS_KEPT = 10_000


def _remember_mac(run_id: str, mac: str) -> None:
    _last_mac.pop(run_id, None)
    _last_mac[run_id] = mac
    while len(_last_mac) > LAST_MACS_KEPT:
        del _last_mac[next(iter(_last_mac))]


_listeners: list = []


def add_listener(listener) -> None:
    """Call `listener(run_id, entry)` after each entry this process records (e.g. to mirror a run's
    progress to Slack). A listener's failure never fails the record."""
    _listeners.append(listener)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def write(flow_run_id: UUID | str, entry: "Record") -> Entry:
    """Append a typed record (mq_runbooks.kit.records) to a run's journal and return the entry."""
    return _append(flow_run_id, entry.KIND, entry.summary, entry.payload())


def _append(flow_run_id: UUID | str, kind: str, summary: str, data: dict[str, Any]) -> Entry:
    if kind not in KINDS:
        raise ValueError(f"journal kind {kind!r} is not one of {', '.join(KINDS)}")
    from mq_runbooks.kit.signing import sign

    run_id = str(UUID(str(flow_run_id)))
    document = Entry(now_utc(), kind, summary, data).to_json()
    # The data as the server will give it back (JSON), so that the signature is checked over the same values.
    document = _json_roundtrip(document)
    document["prev"] = _last_mac.get(run_id, "")
    document["mac"] = sign(_key(), "journal", _signed_fields(run_id, document))
    entry = Entry.from_json(document)
    with gateway.connect() as prefect:
        prefect.create_artifact(type=ARTIFACT_TYPE, key=entries_key(run_id), description=f"{kind}: {summary}"[:500],
                                data=document)
    _remember_mac(run_id, entry.mac)
    for listener in list(_listeners):
        try:
            listener(str(flow_run_id), entry)
        except Exception:  # noqa: BLE001  (a mirror must not break the record)
            pass
    return entry


def entries_key(run_id: UUID | str) -> str:
    """The artifact key whose versions are a run's journal entries."""
    return f"{ARTIFACT_TYPE}-{UUID(str(run_id))}"


def _json_roundtrip(document: dict[str, Any]) -> dict[str, Any]:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(document, fallback=str)


def read(flow_run_id: UUID | str, client=None) -> list[Entry]:
    """Every entry of a run's journal that the engine signed, oldest first (forged ones are left out:
    see `problems`); over `client` (a gateway session) when given, else over a client of its own."""
    return read_checked(flow_run_id, client)[0]


def problems(flow_run_id: UUID | str, client=None) -> list[str]:
    """What is wrong with a run's journal: entries not signed by the engine, entries whose
    predecessor is missing. Empty for a journal nobody tampered with."""
    return read_checked(flow_run_id, client)[1]


def read_checked(flow_run_id: UUID | str, client=None) -> tuple[list[Entry], list[str]]:
    """(the signed entries oldest first, what is wrong with the journal)."""
    if client is None:
        with gateway.connect() as own:
            return read_checked(flow_run_id, own)
    from mq_runbooks.kit.signing import verify

    run_id = str(UUID(str(flow_run_id)))
    found_artifacts: dict[UUID, Any] = {}
    for matching in (  # the run's key; and entries attached to the run, as they were written before
            {"keys": [entries_key(run_id)]}, {"flow_run_ids": [UUID(run_id)]}):
        offset = 0
        while True:
            page = client.read_artifacts(types=[ARTIFACT_TYPE], limit=200, offset=offset, **matching)
            found_artifacts.update((artifact.id, artifact.data) for artifact in page)
            if len(page) < 200:
                break
            offset += 200
    documents: list[dict[str, Any]] = list(found_artifacts.values())
    key = _key()
    entries: list[Entry] = []
    found: list[str] = []
    for document in documents:
        try:
            signed = verify(key, "journal", _signed_fields(run_id, document), document.get("mac"))
            entry = Entry.from_json(document) if signed else None
        except (AttributeError, KeyError, TypeError, ValueError):
            entry = None
        if entry is None:
            what = document.get("kind", "?") if isinstance(document, dict) else type(document).__name__
            found.append(f"an entry not signed by the engine ({what}) is ignored")
            continue
        entries.append(entry)
    entries.sort(key=lambda entry: entry.at)
    signatures = {entry.mac for entry in entries}
    found += [f"the entry before {entry.kind} of {entry.at:%Y-%m-%d %H:%M:%S} is missing"
              for entry in entries if entry.prev and entry.prev not in signatures]
    if entries:
        _remember_mac(run_id, entries[-1].mac)
    return entries, found


def last(entries: list[Entry], kind: str) -> Entry | None:
    """The newest entry of a kind, if any."""
    matching = [entry for entry in entries if entry.kind == kind]
    return matching[-1] if matching else None
