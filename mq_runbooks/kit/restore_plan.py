"""The plan of a restore (`runbook restore RUN`): what the snapshot of a run saved, against what is
there now, one row per partition, stream group or setting that a restore would put back.

A runbook says what its snapshot holds as `RestoreItem`s (its `restore_items`); the engine builds
the plan, the gate shows it, and after the restore every item is read again and must equal what
the snapshot saved:

    RestoreItem("orders:0", saved=10, now=4, left=4)    # the run set it to 4; still 4: put back 10
    RestoreItem("orders:1", saved=10, now=7, left=4)    # moved since the run (4 -> 7): the plan says so

What a runbook cannot undo (closed connections, dead-letter copies, acknowledged entries) it names
in `cannot_undo`; the plan says it under the table, so nobody approves a restore believing more
comes back than does.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mq_runbooks.kit.plans import PlanTable, table_json


RESTORE_OF = "restore_of"  # the field of a run's trigger naming the run it restores


def restore_of(trigger: dict[str, Any] | None) -> str | None:
    """The run a restore run puts back (from its trigger), or None for a run of the runbook itself."""
    value = (trigger or {}).get(RESTORE_OF)
    return str(value) if value else None


def start_summary(runbook_id: str, target: str, original: str, requested_by: str) -> str:
    """The journal's start line of a restore run."""
    return f"restore of run {original} ({runbook_id} on {target}), requested by {requested_by}"


NUMBER_COLUMNS = frozenset({"partition", "queue"})  # plan columns whose values key as whole numbers


def planned(original: Sequence[Any], keys: Sequence[str], value: str) -> dict[tuple[Any, ...], Any]:
    """The `value` column of each row of the last plan a run's journal (`original`, its entries)
    recorded, keyed by its `keys` columns (a partition or queue as a whole number): what the run set,
    which a restore's plan shows beside the saved value and the one now. {} without such a plan."""
    plans = [entry for entry in original if entry.kind == "plan"]
    columns = list(plans[-1].data.get("columns") or []) if plans else []
    if not {*keys, value} <= set(columns):
        return {}
    at = [(columns.index(name), name in NUMBER_COLUMNS) for name in keys]
    column = columns.index(value)
    return {tuple(int(row[i]) if number else row[i] for i, number in at): row[column]
            for row in plans[-1].data.get("rows") or []}


def not_restorable(runbook_id: str, cannot_undo: Sequence[str], restore_command: str | None) -> str:
    """Why a run of a runbook without `restore_items` is not restored in a run: what it declares it
    cannot undo, or else its snapshot's command for people."""
    if cannot_undo:
        return (f"{runbook_id} has nothing a restore run can put back: it cannot undo "
                + "; ".join(cannot_undo) + (f" (the snapshot's note for people: {restore_command})"
                                            if restore_command else ""))
    return (f"{runbook_id} cannot restore from its snapshot in a run of its own; restore by hand: "
            f"{restore_command or 'no command was saved'}")


@dataclass(frozen=True)
class RestoreItem:
    """One thing a snapshot saved: its name in the operator's words, the value saved (what the
    restore puts back), the value now, and the value the run left it at (None: not known)."""

    what: str
    saved: Any
    now: Any
    left: Any = None

    @property
    def differs(self) -> bool:
        return self.now != self.saved

    @property
    def moved_since(self) -> bool:
        """Someone or something changed it after the run (it is no longer what the run left)."""
        return self.left is not None and self.now != self.left

    def since(self) -> str:
        if self.left is None:
            return ""
        return f"moved since the run: {self.left} -> {self.now}" if self.moved_since else "as the run left it"


@dataclass(frozen=True)
class RestorePlan(PlanTable):
    """What a restore of run `of_run` puts back. The digest binds each row and the value it restores
    to; the value there now is an observation (it may move while the gate waits)."""

    of_run: str
    runbook: str
    target: str
    items: tuple[RestoreItem, ...]
    cannot_undo: tuple[str, ...] = ()
    restore_command: str | None = None  # the snapshot's command for people

    COLUMNS = ("what", "now", "restore to", "the run set", "since the run")
    KEY_COLUMNS = ("what",)
    INTENT_COLUMNS = ("restore to",)

    def columns(self) -> Sequence[str]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        return [(item.what, item.now, item.saved, item.left, item.since()) for item in self.items if item.differs]

    def moved(self) -> list[RestoreItem]:
        """The values to put back that someone or something changed after the run."""
        return [item for item in self.items if item.moved_since and item.differs]

    def summary(self) -> str:
        changing = sum(item.differs for item in self.items)
        moved = len(self.moved())
        since = f"; {moved} moved since the run" if moved else ""
        return (f"restore {changing} of {len(self.items)} saved value(s) of {self.target} from the snapshot of run "
                f"{self.of_run[:8]} ({self.runbook}){since}")

    def warnings(self) -> Sequence[str]:
        lines = [f"{item.what} moved since the run ({item.left} -> {item.now}): the restore sets it to {item.saved} "
                 f"all the same" for item in self.moved()]
        lines += [f"cannot be undone: {what}" for what in self.cannot_undo]
        same = sum(not item.differs for item in self.items)
        if same:
            lines.append(f"{same} saved value(s) are already as the snapshot saved them: left alone")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {**table_json(self), "restore_of": self.of_run, "cannot_undo": list(self.cannot_undo),
                "moved_since": [item.what for item in self.moved()], "restore_command": self.restore_command,
                "saved_values": len(self.items), "warnings": list(self.warnings())}

    def not_restored(self, now: Sequence[RestoreItem]) -> list[str]:
        """What a read-back `now` shows is not as the snapshot saved it, in words ([] when all are)."""
        return [f"{item.what} is {item.now}, the snapshot saved {item.saved}" for item in now if item.differs]
