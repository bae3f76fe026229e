"""JSON from outside (alert webhooks, Slack's interaction payloads), read with a nesting limit.

Python's parser recurses once per level: a body nested 100,000 levels deep ends in RecursionError
(a 500 at the HTTP edge) after costing the whole stack. No payload we take is deeper than a few
levels, so anything deeper than MAX_DEPTH is refused before it is parsed.

    >>> loads_limited('{"alerts": [{"labels": {}}]}')
    {'alerts': [{'labels': {}}]}
    >>> loads_limited("[" * 65 + "]" * 65)
    Traceback (most recent call last):
    ...
    mq_runbooks.base.json_limits.TooDeep: the JSON is nested deeper than 64 levels (the limit)
"""
from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64

# A JSON string (its escapes included) or a bracket: brackets inside strings are text, not nesting.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


class TooDeep(ValueError):
    """The JSON nests arrays and objects deeper than allowed."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"the JSON is nested deeper than {limit} levels (the limit)")


def nesting_depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether `text` opens more than `limit` arrays or objects inside one another. Reads only what
    it must: it stops at the first bracket beyond the limit. (Text that is not JSON may be counted
    loosely; the parser refuses it anyway.)"""
    depth = 0
    for token in _TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


def loads_limited(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """json.loads, refusing (TooDeep, a ValueError) a document nested deeper than `limit` levels
    before parsing it. Other errors are json.loads' own (JSONDecodeError, UnicodeDecodeError)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")  # as json.loads decodes bytes
    if nesting_depth_exceeds(text, limit):
        raise TooDeep(limit)
    return json.loads(text)
