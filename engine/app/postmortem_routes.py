"""The postmortem review pages of `runbook serve`: a list (filter by runbook and status), a rendered
draft, and a review action that records the reviewer and the time in the draft's front matter.
The Markdown files stay the source of truth; these pages only read and mark them.

    GET  /postmortems?runbook=ID&status=draft|reviewed
    GET  /postmortems/{id}
    POST /postmortems/{id}/review   (form: reviewer, note)
"""
from __future__ import annotations

import html

from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markdown_it import MarkdownIt

from mq_runbooks.base.errors import RunbookError
from mq_runbooks.app.http import BodyTooLarge, Services, read_body
from mq_runbooks.kit.postmortem_store import STATUSES, list_postmortems, mark_reviewed, read_postmortem

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ccc; padding: .25rem .5rem; }
.status-draft { color: #a15c00; font-weight: 600; } .status-reviewed { color: #137333; font-weight: 600; }
pre { background: #f5f5f7; padding: .75rem; overflow-x: auto; } form { margin: 1.5rem 0; padding: 1rem; background: #f5f5f7; }
input, textarea { display: block; margin: .25rem 0 .75rem; width: 100%; max-width: 30rem; }
nav a { margin-right: 1rem; }
"""


def page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
                        f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def add_postmortem_routes(app: FastAPI, services: Services) -> None:
    directory = services.settings.postmortem_dir

    @app.get("/postmortems")
    async def postmortem_list(runbook: str | None = None, status: str | None = None) -> Response:
        if status and status not in STATUSES:
            return HTMLResponse(f"status must be one of {', '.join(STATUSES)}", status_code=400)
        items = list_postmortems(directory, runbook=runbook or None, status=status or None)
        rows = "".join(
            f"<tr><td><a href='/postmortems/{html.escape(p.id)}'>{html.escape(p.id)}</a></td>"
            f"<td>{html.escape(p.runbook)}</td><td class='status-{html.escape(p.status)}'>{html.escape(p.status)}</td>"
            f"<td>{html.escape(str(p.meta.get('outcome', '')))}</td><td>{html.escape(str(p.meta.get('created', '')))}</td></tr>"
            for p in items
        )
        runbooks = sorted({r.id for r in services.catalog})
        options = "".join(f"<option{' selected' if r == runbook else ''}>{html.escape(r)}</option>" for r in runbooks)
        statuses = "".join(f"<option{' selected' if s == status else ''}>{s}</option>" for s in STATUSES)
        body = (
            "<h1>Postmortems</h1>"
            "<form method=get><label>Runbook<select name=runbook><option value=''>all</option>"
            f"{options}</select></label><label>Status<select name=status><option value=''>all</option>{statuses}"
            "</select></label><button>Filter</button></form>"
            f"<table><tr><th>postmortem</th><th>runbook</th><th>status</th><th>outcome</th><th>created</th></tr>{rows}</table>"
            + ("" if items else "<p>No postmortems match.</p>")
        )
        return page("Postmortems", body)

    @app.get("/postmortems/{postmortem_id}")
    async def postmortem_view(postmortem_id: str) -> Response:
        try:
            postmortem = read_postmortem(directory, postmortem_id)
        except RunbookError as exc:
            return HTMLResponse(html.escape(str(exc)), status_code=404)
        reviewers = "".join(
            f"<li>{html.escape(str(r.get('name', r.get('by', ''))))} at {html.escape(str(r.get('at', '')))}"
            f"{': ' + html.escape(str(r.get('note'))) if r.get('note') else ''}</li>"
            for r in postmortem.reviewers
        )
        body = (
            "<nav><a href='/postmortems'>All postmortems</a></nav>"
            f"<p>Status: <span class='status-{html.escape(postmortem.status)}' id=status>{html.escape(postmortem.status)}</span>"
            f" · run <code>{html.escape(postmortem.run_id)}</code> · file <code>{html.escape(str(postmortem.path))}</code></p>"
            + (f"<h3>Reviewed by</h3><ul id=reviewers>{reviewers}</ul>" if reviewers else "")
            + _MARKDOWN.render(postmortem.body)
            + f"<form method=post action='/postmortems/{html.escape(postmortem.id)}/review' id=review>"
            "<h3>Mark reviewed</h3><label>Your name<input name=reviewer required></label>"
            "<label>Note<textarea name=note rows=3></textarea></label><button type=submit>Mark reviewed</button></form>"
        )
        return page(postmortem.id, body)

    @app.post("/postmortems/{postmortem_id}/review")
    async def postmortem_review(request: Request, postmortem_id: str) -> Response:
        try:
            form = parse_qs((await read_body(request, limit=64 * 1024)).decode("utf-8", errors="replace"))
        except BodyTooLarge:
            return HTMLResponse("the form is too large", status_code=413)
        reviewer, note = form.get("reviewer", [""])[0], form.get("note", [""])[0]
        if not reviewer.strip():
            return HTMLResponse("a reviewer name is required", status_code=400)
        try:
            mark_reviewed(directory, postmortem_id, reviewer.strip(), note.strip())
        except RunbookError as exc:
            return HTMLResponse(html.escape(str(exc)), status_code=404)
        return RedirectResponse(f"/postmortems/{postmortem_id}", status_code=303)
