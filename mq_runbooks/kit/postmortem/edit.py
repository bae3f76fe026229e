"""The parts of a postmortem that people write: the `## ... (TO WRITE)` sections of a draft and its
action items. What the team writes is data: the texts are kept in the front matter (`sections`,
`action_items`), and the body shows them, so the file stays the source of truth and diffs cleanly.

    sections = writable_sections(postmortem.body, postmortem.meta)   # [Section(title, text), ...]
    body, meta = apply_edits(body, meta, {"Root cause": "..."}, [ActionItem("fix alert", "carol", ...)])

A section keeps its place; once written its heading loses "(TO WRITE)", and the front matter's
`written` list remembers it is one of the team's (so it stays editable, and a redraft keeps it).
A text cannot reshape the document: in the body it is shown inert (`inert`), so a line like
`## Decisions` is text, not a second Decisions section, and a code fence it leaves open is closed
at its end instead of swallowing the sections after it.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Any

from mq_runbooks.base.errors import UsageError
from mq_runbooks.kit.postmortem.render import table_cell

TO_WRITE = " (TO WRITE)"
PLACEHOLDER = "_TO WRITE_"
ACTION_ITEMS = "Action items"
MAX_SECTION_CHARS = 20_000
MAX_ACTION_ITEMS = 200  # a bound on what one form carries, not a number a team reaches
TEXTS = "sections"  # the front matter's {title: text} of the team's written sections
_HEADING = re.compile(r"^## (.+?)\s*$")
_PLACEHOLDER_LINE = re.compile(r"^\s*_TO WRITE[^_]*_\s*$")
# CommonMark's code fences: 3+ backticks or tildes, indented at most 3 spaces (a backtick fence's
# info string has no backtick); closed by the same character, at least as many, and nothing else.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
# Lines that would make structure of a text: ATX headings, setext underlines (after a text line),
# also inside a quote or a list item (any indentation), link reference definitions (they apply to the
# whole document) and HTML blocks other than autolinks.
_CONTAINERS = r"[ \t]*(?:(?:>|[-+*][ \t]|\d{1,9}[.)][ \t])[ \t]*)*"
_ATX = re.compile(rf"^({_CONTAINERS})(#{{1,6}})(?=[ \t]|$)")
_SETEXT = re.compile(rf"^({_CONTAINERS})([=-])([=-]*[ \t]*)$")
_STARTS_STRUCTURE = re.compile(r"^( {0,3})(\[(?=[^\]]+\]:)|<(?![A-Za-z][A-Za-z0-9+.-]{1,31}:))")


@dataclass(frozen=True)
class Section:
    title: str  # without "(TO WRITE)"
    text: str   # what the team wrote; "" while it is still to write


@dataclass(frozen=True)
class ActionItem:
    action: str
    owner: str = ""
    due: str = ""   # YYYY-MM-DD
    link: str = ""  # http(s) URL of the ticket

    @classmethod
    def checked(cls, action: str, owner: str = "", due: str = "", link: str = "") -> "ActionItem":
        """An action item from form fields; UsageError naming what is wrong."""
        action, owner, due, link = (value.strip() for value in (action, owner, due, link))
        if not action:
            raise UsageError("an action item needs its action (what will be done)")
        if len(action) > 500 or len(owner) > 100 or len(link) > 500:
            raise UsageError("an action item's action and link are at most 500 characters, its owner 100")
        if due:
            try:
                dt.date.fromisoformat(due)
            except ValueError:
                raise UsageError(f"due date {due!r} is not a date like 2026-12-31") from None
        if link and not re.fullmatch(r"https?://\S+", link):
            raise UsageError(f"link {link!r} is not an http(s) URL")
        return cls(action, owner, due, link)


def _fence_after(line: str, fence: str | None) -> str | None:
    """The code fence open after `line` (its backticks or tildes), given the one open before it."""
    match = _FENCE.match(line)
    if fence is None:
        opened = match is not None and not (match.group(1)[0] == "`" and "`" in match.group(2))
        return match.group(1) if opened else None
    closes = (match is not None and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence)
              and not match.group(2).strip())
    return None if closes else fence


def inert(text: str) -> str:
    r"""`text` as Markdown that keeps its formatting but cannot change the structure of the document
    it is put in: outside its code blocks, lines that would be a heading, a setext underline, a link
    reference definition or an HTML block are escaped with a backslash, and a code block it leaves
    open is closed at its end.

    >>> inert("Bad deploy.\n## Decisions\n```\nlogs")
    'Bad deploy.\n\\## Decisions\n```\nlogs\n```'
    """
    out: list[str] = []
    fence: str | None = None
    previous = ""
    for line in text.split("\n"):
        if fence is None and _fence_after(line, None) is None:
            line = _ATX.sub(r"\1\\\2", line)
            if previous.strip():
                line = _SETEXT.sub(r"\1\\\2\3", line)
            line = _STARTS_STRUCTURE.sub(r"\1\\\2", line)
        fence = _fence_after(line, fence)
        out.append(line)
        previous = line
    if fence is not None:
        out.append(fence)
    return "\n".join(out)


def _normalized(text: str) -> str:
    # Markdown ends a line at \r too: a lone one would start a line the escaping does not see.
    return text.strip().replace("\r\n", "\n").replace("\r", "\n")


def _blocks(body: str) -> list[tuple[str | None, list[str]]]:
    """The body as (level-2 heading or None for what precedes the first, lines under it); headings
    inside code fences are text."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    fence: str | None = None
    for line in body.split("\n"):
        fenced = fence is not None
        fence = _fence_after(line, fence)
        match = None if fenced or fence is not None else _HEADING.match(line)
        if match:
            blocks.append((match.group(1), []))
        else:
            blocks[-1][1].append(line)
    return blocks


def body_sections(body: str) -> list[tuple[str | None, str]]:
    """The body as (level-2 heading, or None for what precedes the first; the Markdown under it), in order."""
    return [(heading, "\n".join(lines)) for heading, lines in _blocks(body)]


def _title(heading: str) -> tuple[str, bool]:
    return (heading[: -len(TO_WRITE)], True) if heading.endswith(TO_WRITE) else (heading, False)


def _written_text(lines: list[str]) -> str:
    text = "\n".join(lines).strip()
    return "" if all(_PLACEHOLDER_LINE.match(line) or not line.strip() for line in lines) else text


def writable_sections(body: str, meta: dict[str, Any]) -> list[Section]:
    """The sections the team writes, in the order of the body (Action items included, its text is
    the table). A section's text is the front matter's (`sections`); a file written before texts
    were kept there gives the text under its heading."""
    written = set(meta.get("written") or [])
    texts = meta.get(TEXTS) if isinstance(meta.get(TEXTS), dict) else None
    found = []
    for heading, lines in _blocks(body):
        if heading is None:
            continue
        title, to_write = _title(heading)
        if to_write or title in written:
            if title == ACTION_ITEMS:
                text = ""
            elif texts is not None:
                text = str(texts.get(title) or "")
            else:
                text = _written_text(lines)
            found.append(Section(title, text))
    return found


def action_items(meta: dict[str, Any]) -> list[ActionItem]:
    return [ActionItem(**{key: str(item.get(key) or "") for key in ("action", "owner", "due", "link")})
            for item in meta.get("action_items") or [] if isinstance(item, dict) and item.get("action")]


def _action_table(items: list[ActionItem]) -> str:
    rows = [f"| {table_cell(i.action)} | {table_cell(i.owner)} | {table_cell(i.due)} | "
            f"{table_cell(f'<{i.link}>' if i.link else '')} |" for i in items]
    return "\n".join(["| action | owner | due | ticket |", "|---|---|---|---|", *rows])


def apply_edits(body: str, meta: dict[str, Any], texts: dict[str, str],
                items: list[ActionItem] | None) -> tuple[str, dict[str, Any]]:
    """The body and front matter with the writable sections set to `texts` (a title absent from it
    keeps its text) and the action items to `items` (None: unchanged)."""
    writable = {section.title: section for section in writable_sections(body, meta)}
    unknown = sorted(set(texts) - set(writable))
    if unknown:
        raise UsageError(f"no section to write named {', '.join(unknown)} (sections: {', '.join(writable)})")
    if any(len(text) > MAX_SECTION_CHARS for text in texts.values()):
        raise UsageError(f"a section is at most {MAX_SECTION_CHARS} characters")
    if items is not None and len(items) > MAX_ACTION_ITEMS:
        raise UsageError(f"at most {MAX_ACTION_ITEMS} action items")
    meta = dict(meta)
    if items is not None:
        meta["action_items"] = [asdict(item) for item in items]
    stored: dict[str, str] = {}
    out: list[str] = []
    for heading, lines in _blocks(body):
        title, _ = _title(heading) if heading else (None, False)
        if heading is None or title not in writable:
            out += ([f"## {heading}"] if heading else []) + lines
            continue
        if title == ACTION_ITEMS:
            current = action_items(meta)
            text = _action_table(current) if current else ""
            empty = _action_table([ActionItem(PLACEHOLDER)])
        else:
            text = _normalized(texts[title] if title in texts else writable[title].text)
            if text:
                stored[title] = text
            empty = PLACEHOLDER
        shown = inert(text) if text and title != ACTION_ITEMS else text
        out += [f"## {title}" if text else f"## {title}{TO_WRITE}", "", shown or empty, ""]
    meta[TEXTS] = stored
    meta["written"] = sorted(set(meta.get("written") or []) | set(writable))
    return "\n".join(out).rstrip("\n") + "\n", meta


def carry_over(old_body: str, old_meta: dict[str, Any], new_body: str, new_meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A redraft (`new_*`) keeping what the team already wrote in the old draft."""
    if not old_meta.get("written") and not old_meta.get("action_items"):
        return new_body, new_meta
    kept = {key: old_meta[key] for key in ("written", "action_items", "edits", TEXTS) if key in old_meta}
    texts = {s.title: s.text for s in writable_sections(old_body, old_meta) if s.title != ACTION_ITEMS}
    meta = {**new_meta, **kept}
    texts = {title: text for title, text in texts.items()
             if title in {s.title for s in writable_sections(new_body, meta)}}
    return apply_edits(new_body, meta, texts, None)


def retitle(body: str, status: str) -> str:
    """The body's first heading says "Postmortem (draft)" while it is a draft, "Postmortem" after."""
    first, newline, rest = body.partition("\n")
    if status == "reviewed" and first.startswith("# Postmortem (draft)"):
        first = "# Postmortem" + first[len("# Postmortem (draft)"):]
    return first + newline + rest
