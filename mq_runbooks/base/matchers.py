"""Alertmanager's label matchers: `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`.

Regexes are anchored at both ends, as in Alertmanager. A label that is absent matches as "".
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_MATCHER = re.compile(
    r'^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^"\s=~!]\S*|)\s*$'
)
OPERATORS = ("=", "!=", "=~", "!~")


@dataclass(frozen=True)
class Matcher:
    name: str
    operator: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.operator == "=":
            return actual == self.value
        if self.operator == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.operator == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.operator}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    """'severity=~"page|critical"' -> Matcher('severity', '=~', 'page|critical'); ValueError if malformed."""
    match = _MATCHER.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a matcher; write name=\"value\" with one of the operators {', '.join(OPERATORS)}"
        )
    value = match.group("value")
    if value.startswith('"'):
        value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
    operator = match.group("op")
    if operator in {"=~", "!~"}:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: the regex does not compile: {exc}") from None
    return Matcher(match.group("name"), operator, value)
