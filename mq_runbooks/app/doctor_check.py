"""One check of `runbook doctor` (app/doctor.py and its per-broker modules, doctor_*.py): what was
checked, whether it is usable, and what was seen."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    component: str  # e.g. "kafka primary"
    address: str
    ok: bool
    detail: str  # what was seen, or why it failed
    required: bool = True
    status: str = ""  # a word for the table (default: ok / PROBLEM)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def status_markup(self) -> str:
        if self.ok:
            return f"[green]{self.status or 'ok'}[/green]"
        return f"[red]{self.status or 'PROBLEM'}[/red]"


def reason(exc: Exception) -> str:
    """An error as one line of a check's detail (at most ~400 characters)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) < 400 else text[:400] + "..."
