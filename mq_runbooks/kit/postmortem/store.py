"""Postmortem files: Markdown with YAML front matter, one per run, in the postmortem directory.

The file is the source of truth (a team may keep the directory in git and review drafts in pull
requests), so every read goes to the file and every change rewrites it whole, atomically:

    ---
    id: 2026-11-27-kafka-replay-1a2b3c4d       # <created date>-<runbook>-<short run id>, the file stem
    runbook: kafka-replay
    run_id: 1a2b3c4d-...                       # the (first) run it describes
    incident: 0c2490b8...                      # runs of one alert group: one postmortem (kit/postmortem_incident)
    runs: [1a2b3c4d-..., 5e6f...]              #   ... and the runs it gathers; the id ends in the incident's 8
    alertnames: [KafkaConsumerGroupStuck]      #   ... and the alerts that started them
    targets: [primary/billing]                 # what the run(s) act on
    status: draft                              # draft | reviewed
    reviewers: []                              # [{name, at, note, proof}] once reviewed
    written: [Root cause, ...]                 # the team's sections (postmortem_edit), once edited
    sections: {Root cause: ...}                # what the team wrote in them, as typed (the body shows it inert)
    action_items: [{action, owner, due, link}]
    edits: [{name, at, proof}]                 # who saved edits in the review page
    created: '2026-11-27T05:58:01Z'            # when the first draft was written
    outcome: succeeded
    ---
    # Postmortem: ...
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mq_runbooks.base.errors import ConfigError, NotFoundError, UsageError
from mq_runbooks.base.files import GROUP_READABLE, write_file
from mq_runbooks.kit.postmortem.edit import ActionItem, apply_edits, carry_over, retitle

log = logging.getLogger("runbook.postmortems")
STATUSES = ("draft", "reviewed")
_ID = re.compile(r"^\d{4}-\d{2}-\d{2}-[a-z0-9][a-z0-9_.-]*-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Postmortem:
    """One postmortem as stored: its front matter and its Markdown body."""

    path: Path
    meta: dict[str, Any]
    body: str

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def status(self) -> str:
        return self.meta["status"]

    @property
    def runbook(self) -> str:
        return self.meta["runbook"]

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    @property
    def targets(self) -> list[str]:
        return [str(t) for t in self.meta.get("targets") or []]

    @property
    def reviewers(self) -> list[dict[str, Any]]:
        return list(self.meta.get("reviewers") or [])

    def text(self) -> str:
        return compose(self.meta, self.body)


def short_run_id(run_id: str) -> str:
    return str(run_id).replace("-", "")[:8]


def postmortem_id(created: dt.datetime, runbook: str, run_id: str) -> str:
    """'2026-11-27-kafka-replay-1a2b3c4d' for a draft first written on 27 November 2026."""
    return f"{created.astimezone(dt.timezone.utc):%Y-%m-%d}-{runbook}-{short_run_id(run_id)}"


def compose(meta: dict[str, Any], body: str) -> str:
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{front}---\n\n{body.lstrip()}"


def parse(path: Path, text: str) -> Postmortem:
    """A postmortem from its file's text; ConfigError naming the file when the front matter is broken."""
    if not text.startswith("---\n"):
        raise ConfigError(f"{path}: a postmortem starts with YAML front matter between '---' lines")
    end = text.find("\n---\n", 4)
    if end < 0:
        raise ConfigError(f"{path}: the front matter is not closed by a '---' line")
    try:
        meta = yaml.safe_load(text[4:end + 1])
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: the front matter is not valid YAML ({exc})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: the front matter must be a mapping")
    missing = [key for key in ("id", "runbook", "run_id", "status") if not meta.get(key)]
    if missing:
        raise ConfigError(f"{path}: the front matter lacks {', '.join(missing)}")
    if meta["status"] not in STATUSES:
        raise ConfigError(f"{path}: status is {meta['status']!r}; allowed: {', '.join(STATUSES)}")
    return Postmortem(path, meta, text[end + 5:].lstrip("\n"))


def _load(path: Path) -> Postmortem:
    return parse(path, path.read_text(encoding="utf-8"))


def _write(path: Path, text: str) -> None:
    # Read by the team on the host: the group of the process's user may read it, nobody else.
    write_file(path, text, GROUP_READABLE)


def list_postmortems(directory: Path, runbook: str | None = None, status: str | None = None) -> list[Postmortem]:
    """Every postmortem in `directory` (newest first), optionally only one runbook's or one status."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob("*.md"):
        # Others' files may share the directory (a README, notes): only postmortems are listed.
        if not _ID.match(path.stem):
            continue
        try:
            found.append(_load(path))
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            log.warning("skipped %s: not a readable postmortem (%s)", path, exc)
    found = [p for p in found if (runbook is None or p.runbook == runbook) and (status is None or p.status == status)]
    return sorted(found, key=lambda p: (str(p.meta.get("created", "")), p.id), reverse=True)


def read_postmortem(directory: Path, postmortem_id: str) -> Postmortem:
    """The postmortem of that id; NotFoundError when there is none (or the id is not one)."""
    if not _ID.match(postmortem_id or ""):
        raise NotFoundError(f"{postmortem_id!r} is not a postmortem id (like 2026-11-27-kafka-replay-1a2b3c4d; "
                            f"list them with: runbook postmortems list)")
    path = Path(directory) / f"{postmortem_id}.md"
    if not path.is_file():
        raise NotFoundError(f"no postmortem {postmortem_id} in {directory} (list them with: runbook postmortems list)")
    return _load(path)


def find_by_run(directory: Path, runbook: str, run_id: str) -> Postmortem | None:
    """The postmortem already written for a run, if any (its own, or its incident's)."""
    for path in sorted(Path(directory).glob(f"*-{runbook}-{short_run_id(run_id)}.md")):
        found = _load(path)
        if found.run_id == str(run_id):
            return found
    return next((p for p in list_postmortems(directory) if str(run_id) in (p.meta.get("runs") or [])), None)


def find_by_incident(directory: Path, incident: str) -> Postmortem | None:
    """The postmortem already written for an incident (the runs of one alert group), if any."""
    for path in sorted(Path(directory).glob(f"*-{short_run_id(incident)}.md")):
        found = _load(path)
        if found.meta.get("incident") == incident:
            return found
    return None


def save_draft(directory: Path, runbook: str, run_id: str, outcome: str, body: str,
               now: dt.datetime | None = None, *, incident: str | None = None,
               runs: list[str] | None = None, targets: list[str] | None = None,
               alertnames: list[str] | None = None) -> tuple[Postmortem, bool]:
    """Write (or refresh) the draft of a run, or with `incident` the one draft of an incident's
    `runs` (`run_id` the first of them); returns (the postmortem, whether it was written). `targets`
    (what the runs act on) and an incident's `alertnames` go into the front matter for the lists.

    Idempotent per run (per incident): a draft is overwritten in place (keeping its id and created
    time); a reviewed postmortem is never touched, and is returned as it is with False.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    existing = find_by_incident(directory, incident) if incident else find_by_run(directory, runbook, run_id)
    if existing is not None and existing.status != "draft":
        return existing, False
    created = existing.meta["created"] if existing else _timestamp(now)
    identifier = existing.id if existing else postmortem_id(now, runbook, incident or run_id)
    meta = {"id": identifier, "runbook": existing.runbook if existing else runbook, "run_id": str(run_id),
            "status": "draft", "reviewers": [],
            "created": created, "outcome": outcome}
    if targets:
        meta["targets"] = list(targets)
    if incident:
        meta.update(incident=incident, runs=list(runs or [run_id]), alertnames=list(alertnames or []))
    if existing is not None:
        meta["updated"] = _timestamp(now)
        body, meta = carry_over(existing.body, existing.meta, body, meta)  # keep what the team wrote
    path = Path(directory) / f"{identifier}.md"
    _write(path, compose(meta, body))
    return Postmortem(path, meta, body), True


def mark_reviewed(directory: Path, postmortem_id: str, by: str, note: str = "",
                  now: dt.datetime | None = None, proof: dict[str, str] | None = None) -> Postmortem:
    """Record that `by` reviewed the postmortem (name, time, note, and the proof of who they are, when
    there is one), set its status to reviewed and its title from "Postmortem (draft)" to "Postmortem".

    Several people may review one postmortem: each review is appended to `reviewers`.
    """
    if not by or not by.strip():
        raise UsageError("a review needs the reviewer's name (--as NAME)")
    found = read_postmortem(directory, postmortem_id)
    review = {"name": by.strip(), "at": _timestamp(now or dt.datetime.now(dt.timezone.utc)), "note": note.strip()}
    if proof:
        review["proof"] = dict(proof)
    meta = {**found.meta, "status": "reviewed", "reviewers": found.reviewers + [review]}
    body = retitle(found.body, "reviewed")
    _write(found.path, compose(meta, body))
    return Postmortem(found.path, meta, body)


def save_edits(directory: Path, postmortem_id: str, texts: dict[str, str], items: list[ActionItem] | None,
               by: str, proof: dict[str, str], now: dt.datetime | None = None) -> Postmortem:
    """Write the team's sections and action items into the postmortem's file, recording who saved
    them and the proof of who they are."""
    found = read_postmortem(directory, postmortem_id)
    body, meta = apply_edits(found.body, found.meta, texts, items)
    edit = {"name": by, "at": _timestamp(now or dt.datetime.now(dt.timezone.utc)), "proof": dict(proof)}
    meta["edits"] = list(found.meta.get("edits") or [])[-49:] + [edit]  # the last 50 saves
    _write(found.path, compose(meta, body))
    return Postmortem(found.path, meta, body)


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
