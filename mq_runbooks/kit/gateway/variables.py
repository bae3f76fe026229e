"""Prefect Variables (the CLI's personal tokens live in one, kit/identity.py)."""
from __future__ import annotations

from typing import Any


def read_variable(name: str, default: Any = None) -> Any:
    from prefect.variables import Variable

    return Variable.get(name, default=default)


def write_variable(name: str, value: Any) -> None:
    from prefect.variables import Variable

    Variable.set(name, value, overwrite=True)
