"""The HTML of the postmortem review pages (postmortem_routes.py serves them): the list, and a
postmortem read section by section, with the team's sections editable where they stand.

A postmortem page shows the draft's Markdown (rendered without raw HTML) one level-2 section at a
time, each an anchor the contents at the top link to. A section the team writes carries its own form
(open while it is still to write, behind "Edit" once written), and so do the action items (a row per
item plus a blank one; "Add a row" saves and gives another); a save comes back to that section with a
"saved" line saying by whom and when. The full record (Prefect's state changes and the rest) is
folded. Nothing here runs JavaScript.
"""
from __future__ import annotations

import html
import re
from typing import Any

from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt

from mq_runbooks.kit.postmortem.edit import (
    ACTION_ITEMS, TO_WRITE, ActionItem, action_items, body_sections, writable_sections,
)
from mq_runbooks.kit.postmortem.store import Postmortem

MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
FOLDED = ("Full record (UTC)",)  # sections shown folded: there for whoever wants every line
MAX_BLANK_ROWS = 20
REVIEW_ANCHOR = "review"
_ANCHOR = re.compile(r"^(s-[a-z0-9-]{1,80}|review)$")
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 64rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ccc; padding: .25rem .5rem; vertical-align: top; }
.status-draft { color: #a15c00; font-weight: 600; } .status-reviewed { color: #137333; font-weight: 600; }
pre { background: #f5f5f7; padding: .75rem; overflow-x: auto; }
form { margin: .75rem 0 1.5rem; padding: .75rem 1rem; background: #f5f5f7; border-left: 3px solid #0b57d0; }
textarea { display: block; width: 100%; box-sizing: border-box; margin: .25rem 0 .5rem; font: inherit; }
.items { width: 100%; } .items input { width: 100%; box-sizing: border-box; } .items td { border: none; padding: .15rem .25rem; }
.items th:first-child { width: 45%; } .items td:last-child { white-space: nowrap; }
#postmortems td:last-child { white-space: nowrap; }
.timeline td:first-child { white-space: nowrap; font-variant-numeric: tabular-nums; }
.who { color: #555; } .refused { color: #a50e0e; } .hint { color: #555; font-size: .9em; }
.saved { background: #e6f4ea; color: #137333; padding: .4rem .75rem; border-radius: 4px; font-weight: 600; }
.to-write { color: #a15c00; font-size: .85em; font-weight: 600; }
nav a { margin-right: 1rem; } #contents li { margin: .1rem 0; } details.edit > summary { cursor: pointer; color: #0b57d0; }
details.folded > summary { cursor: pointer; font-size: 1.5em; font-weight: 600; margin: 1.5rem 0 .5rem; }
"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
                        f"<style>{STYLE}</style></head><body>{body}</body></html>", status_code=status)


def refused(reason: str, status: int = 403) -> HTMLResponse:
    return page("Refused", f"<h1>Refused</h1><p class=refused id=reason>{html.escape(reason)}</p>", status)


def anchor_of(title: str, taken: set[str]) -> str:
    """'Root cause' -> 's-root-cause' (unique among `taken`, which it joins)."""
    base = "s-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "section")
    anchor, n = base, 2
    while anchor in taken:
        anchor, n = f"{base}-{n}", n + 1
    taken.add(anchor)
    return anchor


def saved_anchor(value: str) -> str | None:
    """A section anchor a save came back to (from the page's own form), or None."""
    return value if _ANCHOR.match(value or "") else None


def incident_of(postmortem: Postmortem) -> str:
    """The list's incident cell: the alerts and the incident's key, or '' for a run of its own."""
    incident = str(postmortem.meta.get("incident") or "")
    if not incident:
        return ""
    names = ", ".join(str(n) for n in postmortem.meta.get("alertnames") or []) or "incident"
    runs = len(postmortem.meta.get("runs") or [])
    return f"{names} ({incident[:8]}, {runs} run{'s' if runs != 1 else ''})"


def list_page(items: list[Postmortem], runbooks: list[str], runbook: str | None, status: str | None,
              statuses: tuple[str, ...]) -> HTMLResponse:
    e = html.escape
    rows = "".join(
        f"<tr><td><a href='/postmortems/{e(p.id)}'>{e(p.id)}</a></td><td>{e(p.runbook)}</td>"
        f"<td class=target>{e(', '.join(p.targets))}</td><td class=incident>{e(incident_of(p))}</td>"
        f"<td class='status-{e(p.status)}'>{e(p.status)}</td>"
        f"<td>{e(str(p.meta.get('outcome', '')))}</td><td>{e(str(p.meta.get('created', '')))}</td></tr>"
        for p in items
    )
    options = "".join(f"<option{' selected' if r == runbook else ''}>{e(r)}</option>" for r in runbooks)
    choices = "".join(f"<option{' selected' if s == status else ''}>{s}</option>" for s in statuses)
    body = (
        "<h1>Postmortems</h1>"
        "<form method=get><label>Runbook <select name=runbook><option value=''>all</option>"
        f"{options}</select></label> <label>Status <select name=status><option value=''>all</option>{choices}"
        "</select></label> <button>Filter</button></form>"
        "<table id=postmortems><tr><th>postmortem</th><th>runbook</th><th>target</th><th>incident</th><th>status</th>"
        f"<th>outcome</th><th>created</th></tr>{rows}</table>"
        + ("" if items else "<p>No postmortems match.</p>")
    )
    return page("Postmortems", body)


def postmortem_page(postmortem: Postmortem, *, editor: str | None, who: str, links: str, saved: str | None,
                    blank_rows: int, undo: str = "") -> HTMLResponse:
    """The page of one postmortem. `editor` is the proven name of whoever may edit (None: read only, `who`
    says why); `saved` the anchor a save came back to; `blank_rows` how many empty action-item rows;
    `undo` the Restore button of the run (or why it has none), shown after the review form."""
    e = html.escape
    writable = {s.title: s for s in writable_sections(postmortem.body, postmortem.meta)}
    saved_line = _saved_line(postmortem) if saved else ""
    taken: set[str] = {REVIEW_ANCHOR}
    contents, parts, title, to_write_count, preamble = [], [], postmortem.id, 0, ""
    for heading, text in body_sections(postmortem.body):
        if heading is None:
            first = text.lstrip().split("\n", 1)[0]
            title = first[2:].strip() if first.startswith("# ") else title
            preamble = f"<header id=preamble>{MARKDOWN.render(text)}</header>"
            continue
        name = heading[: -len(TO_WRITE)] if heading.endswith(TO_WRITE) else heading
        anchor = anchor_of(name, taken)
        to_write = heading.endswith(TO_WRITE)
        to_write_count += to_write
        contents.append(f"<li><a href='#{anchor}'>{e(name.replace('`', ''))}</a>"
                        + (" <span class=to-write>to write</span>" if to_write else "") + "</li>")
        shown = MARKDOWN.render(f"## {heading}\n{text}")
        confirmation = saved_line if saved == anchor else ""
        if heading in FOLDED:
            parts.append(f"<section id={anchor} class=timeline><details class=folded><summary>{e(name)}</summary>"
                         f"{MARKDOWN.render(text)}</details></section>")
        elif name == ACTION_ITEMS and name in writable and editor:
            parts.append(f"<section id={anchor}><h2>{e(heading)}</h2>{confirmation}"
                         f"{_items_form(postmortem, anchor, blank_rows)}</section>")
        elif name in writable and editor:
            parts.append(f"<section id={anchor}>{shown}{confirmation}"
                         f"{_section_form(postmortem, anchor, writable[name].title, writable[name].text)}</section>")
        else:
            kind = " class=timeline" if name.startswith("Timeline") else ""
            parts.append(f"<section id={anchor}{kind}>{shown}</section>")
    reviewers = "".join(
        f"<li>{e(str(r.get('name', r.get('by', ''))))} at {e(str(r.get('at', '')))}"
        f"{': ' + e(str(r.get('note'))) if r.get('note') else ''}</li>"
        for r in postmortem.reviewers
    )
    review = ""
    if editor:
        review = (f"<section id={REVIEW_ANCHOR}><h2>Review</h2>{saved_line if saved == REVIEW_ANCHOR else ''}"
                  f"<form method=post action='/postmortems/{e(postmortem.id)}/review' id=review-form>"
                  "<label>Note<textarea name=note rows=3></textarea></label>"
                  f"<button type=submit>Mark reviewed as {e(editor)}</button></form></section>")
    body = (
        f"<nav><a href='/postmortems'>All postmortems</a>{links}</nav>"
        f"<article id=postmortem>{preamble}"
        f"<p>Status: <span class='status-{e(postmortem.status)}' id=status>{e(postmortem.status)}</span>"
        f" · targets <b id=targets>{e(', '.join(postmortem.targets) or 'unknown')}</b>"
        f" · run <code>{e(postmortem.run_id)}</code> · file <code>{e(str(postmortem.path))}</code></p>"
        + who
        + (f"<h3>Reviewed by</h3><ul id=reviewers>{reviewers}</ul>" if reviewers else "")
        + f"<details open id=contents-box><summary>Contents ({to_write_count} section(s) to write"
        + (f"; <a href='#{REVIEW_ANCHOR}'>mark reviewed</a>" if editor else "") + ")</summary>"
        + f"<ol id=contents>{''.join(contents)}</ol></details>"
        + f"{''.join(parts)}</article>"
        + review
        + undo
    )
    return page(f"{title} · {postmortem.id}", body)


def _saved_line(postmortem: Postmortem) -> str:
    """'Saved by dana at ...': the newest save or review the file records."""
    e = html.escape
    latest: dict[str, Any] = max([*(postmortem.meta.get("edits") or []), *postmortem.reviewers],
                                 key=lambda r: str(r.get("at", "")), default={})
    by = f" by {e(str(latest.get('name', '')))} at {e(str(latest.get('at', '')))}" if latest else ""
    return f"<p class=saved id=saved role=status>Saved{by}; the file is up to date.</p>"


def _section_form(postmortem: Postmortem, anchor: str, title: str, text: str) -> str:
    e = html.escape
    form = (f"<form method=post action='/postmortems/{e(postmortem.id)}' class=section-form>"
            f"<input type=hidden name=return value='{anchor}'>"
            f"<textarea name='section:{e(title)}' rows={max(4, min(20, text.count(chr(10)) + 3))} "
            f"aria-label='{e(title)}' placeholder='Write {e(title.lower())} here (Markdown)'>{e(text)}</textarea>"
            f"<button type=submit>Save {e(title)}</button></form>")
    return form if not text else f"<details class=edit><summary>Edit {e(title)}</summary>{form}</details>"


def _items_form(postmortem: Postmortem, anchor: str, blank_rows: int) -> str:
    e = html.escape
    items = action_items(postmortem.meta)
    blank_rows = max(1, min(blank_rows, MAX_BLANK_ROWS))
    rows = "".join(
        f"<tr><td><input name=action-{n} value='{e(i.action)}' aria-label='action {n}'></td>"
        f"<td><input name=owner-{n} value='{e(i.owner)}' aria-label='owner {n}'></td>"
        f"<td><input name=due-{n} type=date value='{e(i.due)}' aria-label='due {n}'></td>"
        f"<td><input name=link-{n} type=url value='{e(i.link)}' aria-label='link {n}'></td>"
        f"<td>{'' if not i.action else f'<label><input type=checkbox name=remove-{n}> remove</label>'}</td></tr>"
        for n, i in enumerate([*items, *[ActionItem("")] * blank_rows])
    )
    return (f"<form method=post action='/postmortems/{e(postmortem.id)}' id=items-form>"
            f"<input type=hidden name=return value='{anchor}'><input type=hidden name=items value=1>"
            f"<input type=hidden name=rows value={blank_rows}>"
            "<table class=items><tr><th>action</th><th>owner</th><th>due</th><th>ticket link</th><th></th></tr>"
            f"{rows}</table><p class=hint>{len(items)} action item(s). Fill the blank row to add one; "
            "tick remove (or clear a row) to drop one.</p>"
            "<button type=submit>Save action items</button> "
            "<button type=submit name=add value=1>Save and add a row</button></form>")
