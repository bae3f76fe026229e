"""The plan contract: what every runbook's plan offers, so that the CLI (`plan`, `status --plan`),
Slack, the gate and the postmortem render any plan without knowing which runbook made it.

A plan is a frozen object that can say:

    digest()            sha256 over the intent (what would change); an approval is bound to it
    summary()           one line, e.g. "3 of 12 partitions change: 420 messages replayed"
    columns(), rows()   the change as a table: column names, then one tuple per changed thing
    changes_anything()  False when applying it would change nothing (the driver then never acts)
    missing_targets()   names the parameters pointed at that do not exist (the driver refuses them)
    markdown(rows=N)    what people read at the gate (default: summary + the first N rows)
    to_csv(), to_json() for scripts and for the journal

`PlanTable` derives the digest, markdown, CSV and JSON from columns and rows; a runbook's plan usually
subclasses it and writes only summary, columns and rows (and missing_targets, changes_anything).

Intent and observations. A plan may name its `KEY_COLUMNS` (what names a row: topic and partition)
and its `INTENT_COLUMNS` (what the change sets: the target offset); its other columns are
observations that move by themselves while the gate waits (log end offsets, lag, depths, ages). The
digest binds the keys and the intent only, so an approval outlives the observations; `compare`
tells a re-plan's changed intent (asked again, showing the rows that differ) from its drift (only
reported). A plan that names neither binds every column, and a row that changed reads as removed
and added.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

PLAN_ROWS_SHOWN = 40  # rows at the gate, in Slack and in the postmortem; `status --plan` shows all


@runtime_checkable
class Plan(Protocol):
    def digest(self) -> str: ...

    def summary(self) -> str: ...

    def columns(self) -> Sequence[str]: ...

    def rows(self) -> Sequence[Sequence[Any]]: ...

    def changes_anything(self) -> bool: ...

    def missing_targets(self) -> Sequence[str]: ...

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str: ...

    def to_csv(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


class PlanTable:
    """Markdown, CSV and JSON derived from `columns()` and `rows()`; subclasses add the rest."""

    KEY_COLUMNS: tuple[str, ...] = ()  # what names a row; () = the intent columns
    INTENT_COLUMNS: tuple[str, ...] = ()  # what the change sets; () = every column

    def columns(self) -> Sequence[str]:
        """Required: the table's column names, e.g. `("topic", "partition", "committed", "target")`."""
        raise NotImplementedError

    def rows(self) -> Sequence[Sequence[Any]]:
        """Required: one row per thing that changes (partition, queue, entry, setting), plain values."""
        raise NotImplementedError

    def summary(self) -> str:
        """Required: one line in the operator's words (journal, Slack, the outcome's `done: ...`)."""
        raise NotImplementedError

    def digest(self) -> str:
        """sha256 over the table's keys and intent: an approval is bound to exactly these changes,
        not to the observations beside them."""
        return intent_digest(self)

    def changes_anything(self) -> bool:
        """False when acting would change nothing: the run ends `unchanged` (default: any rows)."""
        return bool(self.rows())

    def missing_targets(self) -> Sequence[str]:
        """Targets named in the parameters that do not exist, in words (e.g. `topic 'x'`): the CLI
        exits 2 naming each, a run ends `refused` (default: none)."""
        return ()

    def warnings(self) -> Sequence[str]:
        """Lines shown under the table at the gate (default: none)."""
        return ()

    def headline(self) -> str:
        """The Markdown above the table (default: the summary in bold)."""
        return f"**{self.summary()}**"

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        """What the gate, Slack and `status --plan` show: the headline, the table (first `rows`), warnings."""
        return table_markdown(self.headline(), self.columns(), self.rows(), rows, self.warnings())

    def to_csv(self) -> str:
        """`runbook plan --export`: the columns and rows as CSV."""
        return table_csv(self.columns(), self.rows())

    def to_json(self) -> dict[str, Any]:
        """`runbook plan --json`: summary, digest, columns, rows, changes_anything, missing targets."""
        return table_json(self)


def key_columns(plan: Plan) -> tuple[str, ...]:
    """The columns that name a row of `plan` (its KEY_COLUMNS, else its intent columns)."""
    return tuple(getattr(plan, "KEY_COLUMNS", ()) or intent_columns(plan))


def intent_columns(plan: Plan) -> tuple[str, ...]:
    """The columns of `plan` that say what will change (its INTENT_COLUMNS, else every column)."""
    return tuple(getattr(plan, "INTENT_COLUMNS", ()) or plan.columns())


def intent_digest(plan: Plan) -> str:
    """sha256 over the key and intent columns of every row, in row order."""
    bound = [name for name in plan.columns() if name in key_columns(plan) or name in intent_columns(plan)]
    index = [list(plan.columns()).index(name) for name in bound]
    canonical = json.dumps([bound, [[row[i] for i in index] for row in plan.rows()]], default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CellChange:
    """One value of a row that differs between two versions of a plan."""

    row: str  # the row's key, e.g. orders:0
    column: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.row} {self.column} {_cell(self.old) or 'none'} -> {_cell(self.new) or 'none'}"


@dataclass(frozen=True)
class PlanChanges:
    """What differs between the plan approved and a re-plan: rows added or removed and changed
    intent (a reason to ask again), and drift (observations that moved by themselves: reported)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    intent: tuple[CellChange, ...] = ()
    drift: tuple[CellChange, ...] = ()

    @property
    def intent_changed(self) -> bool:
        return bool(self.added or self.removed or self.intent)

    def intent_lines(self) -> list[str]:
        return ([f"{row}: new row" for row in self.added] + [f"{row}: no longer in the plan" for row in self.removed]
                + [str(change) for change in self.intent])

    def drift_lines(self) -> list[str]:
        return [str(change) for change in self.drift]

    def markdown(self, shown: int = PLAN_ROWS_SHOWN) -> str:
        """What changed since the approved plan, for the question asked again."""
        lines = self.intent_lines()
        text = ["**Changed since the approved plan** (old -> new):", ""]
        text += [f"- {line}" for line in lines[:shown]] or ["- (no row of the table differs: what changed is "
                                                            "bound by the plan's digest beyond its columns)"]
        if len(lines) > shown:
            text.append(f"- ... and {len(lines) - shown} more")
        if self.drift:
            text.append(f"\n{len(self.drift)} observed value(s) moved by themselves meanwhile (not part of the "
                        f"approval): {'; '.join(self.drift_lines()[:5])}{' ...' if len(self.drift) > 5 else ''}")
        return "\n".join(text)


def compare(approved_columns: Sequence[str], approved_rows: Sequence[Sequence[Any]], plan: Plan) -> PlanChanges:
    """How `plan` (a re-plan) differs from the plan approved, given as its columns and rows (as the
    journal recorded them). Rows are paired by the plan's key columns; a changed intent column is
    intent, any other changed column is drift.

        compare(["topic", "partition", "target", "log end"], [["orders", 0, 5, 90]], replan)
        # PlanChanges(intent=(orders:0 target 5 -> 7,), drift=(orders:0 log end 90 -> 95,))
    """
    columns, keys, intent = list(plan.columns()), key_columns(plan), intent_columns(plan)
    if list(approved_columns) != columns:  # another shape (e.g. another version of the runbook): all new
        return PlanChanges(added=tuple(_row_key(columns, keys, row) for row in plan.rows()),
                           removed=tuple(_row_key(list(approved_columns), keys, row) for row in approved_rows))
    before = {_row_key(columns, keys, row): _jsonable(row) for row in approved_rows}
    after = {_row_key(columns, keys, row): _jsonable(row) for row in plan.rows()}
    changed_intent: list[CellChange] = []
    drift: list[CellChange] = []
    for key in (k for k in after if k in before):
        for index, name in enumerate(columns):
            old, new = before[key][index], after[key][index]
            if old != new and name not in keys:
                (changed_intent if name in intent else drift).append(CellChange(key, name, old, new))
    return PlanChanges(tuple(k for k in after if k not in before), tuple(k for k in before if k not in after),
                       tuple(changed_intent), tuple(drift))


def _row_key(columns: list[str], keys: Sequence[str], row: Sequence[Any]) -> str:
    values = [row[columns.index(name)] for name in keys if name in columns]
    return ":".join(_cell(value) for value in values if value not in (None, ""))


def _jsonable(row: Sequence[Any]) -> list[Any]:
    """A row as the journal keeps it (JSON), so a recorded row compares equal to the same row computed."""
    return json.loads(json.dumps(list(row), default=str))


def table_markdown(headline: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], shown: int,
                   warnings: Sequence[str] = ()) -> str:
    lines = [headline, ""]
    if rows:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows[:shown]]
        if len(rows) > shown:
            lines.append(f"\n... and {len(rows) - shown} more row(s): `runbook status RUN --plan` shows all.")
    for warning in warnings:
        lines.append(f"\n> WARN {warning}")
    return "\n".join(lines)


def table_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if value is None else value for value in row] for row in rows])
    return out.getvalue()


def table_json(plan: Plan) -> dict[str, Any]:
    """The parts every plan has, as JSON: what `status --plan`, Slack and the postmortem read."""
    return {"digest": plan.digest(), "summary": plan.summary(), "columns": list(plan.columns()),
            "rows": [list(row) for row in plan.rows()], "changes_anything": plan.changes_anything(),
            "missing_targets": list(plan.missing_targets())}


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|")
