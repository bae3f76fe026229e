"""Short durations as operators write them in runbook files: 90s, 30m, 2h, 1d, or 1h30m."""
from __future__ import annotations

import re

_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_short_duration(text: str | int | float) -> float:
    """'30m' -> 1800.0; a bare number is seconds. ValueError names what is allowed."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError("must be positive")
        return float(text)
    compact = str(text).strip().replace(" ", "")
    if compact.isdigit() and int(compact) > 0:
        return float(compact)
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 30m, 2h, 1d or 1h30m")
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError("must be positive")
    return float(seconds)
