"""'Did you mean' for names people type: runbook ids, parameter names, cluster names."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to `word` (difflib), best first; [] when none is close."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean kafka-replay?' (or ' or ' between several), else ''."""
    matches = close_matches(word, choices)
    return f"; did you mean {' or '.join(matches)}?" if matches else ""
