"""Turning pydantic's validation errors and `${VAR}` references into messages an operator can act on."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mq_runbooks.base.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def field_path(location: tuple[Any, ...]) -> str:
    """('kafka', 'primary', 'bootstrap_servers') -> 'kafka.primary.bootstrap_servers'; ints as [i]."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "(top level)"


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as 'what is wrong (what is allowed)'."""
    kind = error.get("type", "")
    message = error.get("msg", "invalid")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required, but missing"
    if kind.startswith("literal_error") or kind == "enum":
        expected = (error.get("ctx") or {}).get("expected")
        return f"got {error.get('input')!r}, allowed: {expected}" if expected else message
    return message.removeprefix("Value error, ")


def validation_problems(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[tuple[str, str]]:
    """Each invalid field of a pydantic error as (dotted path, reason)."""
    problems = []
    for error in exc.errors():
        location = prefix + tuple(error.get("loc", ()))
        problems.append((field_path(location), describe_error(error)))
    return problems


def config_error(source: str, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> ConfigError:
    """A ConfigError that names the file, each invalid field and why."""
    lines = "\n".join(f"  {path}: {reason}" for path, reason in validation_problems(exc, prefix))
    return ConfigError(f"{source} is invalid:\n{lines}")


def substitute_env(value: Any, environ: Mapping[str, str], source: str, path: tuple[Any, ...] = ()) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a parsed YAML document.

    A variable that is unset and has no default is an error naming the file and the field.
    """
    if isinstance(value, dict):
        return {key: substitute_env(item, environ, source, path + (key,)) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute_env(item, environ, source, path + (index,)) for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{source}: {field_path(path)} refers to ${{{name}}}, which is not set in the environment "
            f"(set it, or give a default as ${{{name}:-value}})"
        )

    return _VAR.sub(replace, value)


def environ_or_os(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ
