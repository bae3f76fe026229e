"""Rendering a postmortem: secrets scrubbed out of everything the draft shows, then Jinja2 templates
with StrictUndefined (a template that names a missing field fails, it never prints a blank).

Templates live in mq_runbooks/kit/postmortem/templates (`postmortem.md.j2`, `incident.md.j2` for the runs of one
incident, and their partials `_*.md.j2`); a team's
own directory (RUNBOOK_POSTMORTEM_TEMPLATES) overrides them file by file.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2

from mq_runbooks.base.errors import ConfigError
from mq_runbooks.base.resources import default_templates

DEFAULT_TEMPLATES = default_templates()
MAIN_TEMPLATE = "postmortem.md.j2"
REDACTED = "[REDACTED]"
WITHHELD = "[message value withheld]"

# Keys whose values are secrets wherever they appear (parameters, alert annotations, journal data).
_SECRET_KEY = re.compile(r"pass(word|wd)?$|pwd|secret|token|api[_-]?key|credential|authori[sz]ation|jaas|"
                         r"private[_-]?key|cookie|signature", re.I)
# Keys that hold message contents; shown only when a draft is asked to include them.
_MESSAGE_KEYS = {"value", "values", "body", "payload", "headers", "message_value", "message_values",
                 "message_body", "message_bodies"}
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]+):([^/\s@]+)@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_SLACK_TOKEN = re.compile(r"\bxox[a-z]-[A-Za-z0-9-]{6,}")
_KEY_VALUE = re.compile(
    r"(?i)(\b[\w.-]*(?:password|passwd|secret|token|api[_-]?key|credentials?|jaas[_.]config)[\"']?\s*[:=]\s*)"
    r"([\"']?)([^\s\"',;}&]+)")
_MESSAGE_TEXT = re.compile(r"(?i)(\b(?:body|payload|message[_ ]value)\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|\S+)")


class Scrubber:
    """Removes secrets from text and data: credentials in URLs, key=value secrets, bearer and Slack
    tokens, every configured secret value verbatim, and message contents unless allowed."""

    def __init__(self, known_secrets: Iterable[str] = (), allow_message_values: bool = False):
        # Longest first, so a secret that contains another is replaced whole.
        self.known = sorted({s for s in known_secrets if s and len(s) >= 4}, key=len, reverse=True)
        self.allow_message_values = allow_message_values

    def text(self, value: str) -> str:
        value = _URL_USERINFO.sub(lambda m: f"{m[1]}{m[2]}:{REDACTED}@", value)
        value = _BEARER.sub(lambda m: f"{m[1]} {REDACTED}", value)
        value = _SLACK_TOKEN.sub(REDACTED, value)
        value = _KEY_VALUE.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", value)
        if not self.allow_message_values:
            value = _MESSAGE_TEXT.sub(lambda m: f"{m[1]}{WITHHELD}", value)
        for secret in self.known:
            value = value.replace(secret, REDACTED)
        return value

    def data(self, value: Any, key: str = "") -> Any:
        """A copy of `value` (dicts, lists, strings, numbers) with secrets replaced."""
        if key and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
            return REDACTED
        if key.lower() in _MESSAGE_KEYS and not self.allow_message_values and value not in (None, "", [], {}):
            return WITHHELD
        if isinstance(value, dict):
            return {k: self.data(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def known_secrets(settings: Any, clusters: Any | None) -> list[str]:
    """Every secret value the configuration holds (tokens, passwords, AMQP URL passwords)."""
    found: list[str] = []

    def collect(model: Any) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if hasattr(value, "get_secret_value"):
                secret = value.get_secret_value()
                found.append(secret)
                credentials = _URL_USERINFO.search(secret)
                if credentials:
                    found.append(credentials[3])

    collect(settings)
    if clusters is not None:
        for cluster in [*clusters.kafka.values(), *clusters.rabbitmq.values()]:
            collect(cluster)
    return found


def table_cell(value: Any) -> str:
    """A value made safe for one Markdown table cell."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def environment(team_templates: Path | None = None) -> jinja2.Environment:
    """The Jinja2 environment: the team's directory first (if any), then ours; StrictUndefined. One per
    directory, kept: its compiled templates are reused, and reloaded when a file changes."""
    if team_templates is not None and not Path(team_templates).is_dir():
        raise ConfigError(f"RUNBOOK_POSTMORTEM_TEMPLATES: {team_templates} is not a directory")
    return _environment(str(team_templates) if team_templates else None)


@functools.lru_cache(maxsize=8)
def _environment(team_templates: str | None) -> jinja2.Environment:
    directories = [team_templates] if team_templates else []
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directories + [str(DEFAULT_TEMPLATES)]),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["cell"] = table_cell
    return env


def render(context: dict[str, Any], team_templates: Path | None = None, template: str = MAIN_TEMPLATE) -> str:
    """The postmortem body from its context; ConfigError naming the template and the missing field."""
    env = environment(team_templates)
    try:
        return env.get_template(template).render(**context)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"postmortem template refers to a field the draft does not have: {exc.message} "
                          f"(templates: {team_templates or DEFAULT_TEMPLATES})") from exc
    except jinja2.TemplateError as exc:
        where = f"{getattr(exc, 'filename', None) or getattr(exc, 'name', None) or MAIN_TEMPLATE}"
        line = getattr(exc, "lineno", None)
        raise ConfigError(f"postmortem template {where}{f' line {line}' if line else ''}: {exc}") from exc
