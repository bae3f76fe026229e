"""The plan contract: what every runbook's plan offers, so that the CLI (`plan`, `status --plan`),
Slack, the gate and the postmortem render any plan without knowing which runbook made it.

A plan is a frozen object that can say:

    digest()            sha256 over what would change; an approval is bound to it
    summary()           one line, e.g. "3 of 12 partitions change: 420 messages replayed"
    columns(), rows()   the change as a table: column names, then one tuple per changed thing
    changes_anything()  False when applying it would change nothing (the driver then never acts)
    missing_targets()   names the parameters pointed at that do not exist (the driver refuses them)
    markdown(rows=N)    what people read at the gate (default: summary + the first N rows)
    to_csv(), to_json() for scripts and for the journal

`PlanTable` derives the digest, markdown, CSV and JSON from columns and rows; a runbook's plan usually
subclasses it and writes only summary, columns and rows (and missing_targets, changes_anything).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
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

    def columns(self) -> Sequence[str]:
        raise NotImplementedError

    def rows(self) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    def digest(self) -> str:
        """sha256 over the table: an approval is bound to exactly these rows."""
        canonical = json.dumps([list(self.columns()), [list(row) for row in self.rows()]], default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def changes_anything(self) -> bool:
        return bool(self.rows())

    def missing_targets(self) -> Sequence[str]:
        return ()

    def warnings(self) -> Sequence[str]:
        return ()

    def headline(self) -> str:
        """The Markdown above the table (default: the summary in bold)."""
        return f"**{self.summary()}**"

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        return table_markdown(self.headline(), self.columns(), self.rows(), rows, self.warnings())

    def to_csv(self) -> str:
        return table_csv(self.columns(), self.rows())

    def to_json(self) -> dict[str, Any]:
        return table_json(self)


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
