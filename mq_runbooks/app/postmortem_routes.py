"""The postmortem review pages of `runbook serve`: a list (filter by runbook and status), a draft with
the form to write its TO WRITE sections and action items, and the review action. The Markdown files
stay the source of truth: every save rewrites the file (front matter + sections).

    GET  /postmortems?runbook=ID&status=draft|reviewed
    GET  /postmortems/{id}
    POST /postmortems/{id}          (form: section:<title>, action-N, owner-N, due-N, link-N)
    POST /postmortems/{id}/review   (form: note)
    POST /postmortems/{id}/restore  (the Restore button: a restore run of the postmortem's run)

Writes need the identity a trusted authenticating proxy asserts and a same-origin request
(web_identity); with RUNBOOK_REVIEW_REQUIRE_IDENTITY, so do reads. Refusals are a 403 saying why.
"""
from __future__ import annotations

import html
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markdown_it import MarkdownIt
from starlette.concurrency import run_in_threadpool

from mq_runbooks.app.http import BodyTooLarge, Services, read_body
from mq_runbooks.app.web_identity import IdentityRefused, ProxyIdentity, proxy_identity, require_same_origin
from mq_runbooks.base.errors import NotFoundError, RunbookError
from mq_runbooks.kit.notify import run_url
from mq_runbooks.kit.postmortem.edit import ACTION_ITEMS, MAX_ACTION_ITEMS, ActionItem, action_items, writable_sections
from mq_runbooks.kit.postmortem.store import (
    STATUSES, Postmortem, list_postmortems, mark_reviewed, read_postmortem, save_edits,
)

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ccc; padding: .25rem .5rem; }
.status-draft { color: #a15c00; font-weight: 600; } .status-reviewed { color: #137333; font-weight: 600; }
pre { background: #f5f5f7; padding: .75rem; overflow-x: auto; } form { margin: 1.5rem 0; padding: 1rem; background: #f5f5f7; }
label > input, label > textarea { display: block; margin: .25rem 0 .75rem; width: 100%; max-width: 50rem; }
#actions input { width: 100%; box-sizing: border-box; } .who { color: #555; } .refused { color: #a50e0e; }
nav a { margin-right: 1rem; }
"""
FORM_LIMIT = 256 * 1024


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
                        f"<style>{_STYLE}</style></head><body>{body}</body></html>", status_code=status)


def refused(reason: str, status: int = 403) -> HTMLResponse:
    return page("Refused", f"<h1>Refused</h1><p class=refused id=reason>{html.escape(reason)}</p>", status)


def write_refused(exc: Exception, other: int) -> HTMLResponse:
    """The answer to a page write that failed: no proven identity 403, a form too large 413, not one
    of ours (parse_qs) 400, an unknown postmortem 404, any other refusal of the engine `other`."""
    if isinstance(exc, IdentityRefused):
        return refused(str(exc))
    if isinstance(exc, BodyTooLarge):
        return refused("the form is too large", 413)
    if isinstance(exc, ValueError):
        return refused(f"the form is not one of ours: {exc}", 400)
    return refused(str(exc), 404 if isinstance(exc, NotFoundError) else other)


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


def _edit_form(postmortem: Postmortem) -> str:
    e = html.escape
    fields = "".join(
        f"<label>{e(s.title)}<textarea name='section:{e(s.title)}' rows=6>{e(s.text)}</textarea></label>"
        for s in writable_sections(postmortem.body, postmortem.meta) if s.title != ACTION_ITEMS
    )
    items = action_items(postmortem.meta)
    rows = "".join(
        f"<tr><td><input name=action-{n} value='{e(i.action)}' aria-label='action {n}'></td>"
        f"<td><input name=owner-{n} value='{e(i.owner)}' aria-label='owner {n}'></td>"
        f"<td><input name=due-{n} type=date value='{e(i.due)}' aria-label='due {n}'></td>"
        f"<td><input name=link-{n} type=url value='{e(i.link)}' aria-label='link {n}'></td></tr>"
        for n, i in enumerate([*items, ActionItem(""), ActionItem("")][:MAX_ACTION_ITEMS])
    )
    return (f"<form method=post action='/postmortems/{e(postmortem.id)}' id=edit><h2>Write the postmortem</h2>"
            f"{fields}<h3>{ACTION_ITEMS}</h3><table id=actions><tr><th>action</th><th>owner</th><th>due</th>"
            f"<th>ticket link</th></tr>{rows}</table><button type=submit>Save</button></form>")


def _restore_form(services: Services, postmortem: Postmortem, name: str) -> str:
    """The Restore button, when the postmortem's run can be restored (app/restores.py), else why not."""
    from mq_runbooks.app import restores

    e = html.escape
    try:
        wanted = restores.restore_request(services.catalog, postmortem.run_id)
    except RunbookError as exc:
        return f"<p class=who id=restore>Undo: {e(str(exc))}</p>"
    return (f"<form method=post action='/postmortems/{e(postmortem.id)}/restore' id=restore><h3>Undo the run</h3>"
            f"<p>A restore run puts back what the snapshot of run <code>{e(wanted.run_id)}</code> saved: it plans "
            f"the way back against what is there now, and the approvers of {e(wanted.runbook.id)} approve it.</p>"
            f"<button type=submit>Restore as {e(name)}</button></form>")


def _form_edits(form: dict[str, list[str]]) -> tuple[dict[str, str], list[ActionItem]]:
    texts = {key[len("section:"):]: values[0] for key, values in form.items() if key.startswith("section:")}
    items = []
    for n in range(MAX_ACTION_ITEMS + 2):
        action, owner, due, link = (form.get(f"{name}-{n}", [""])[0] for name in ("action", "owner", "due", "link"))
        if action.strip() or owner.strip() or due.strip() or link.strip():
            items.append(ActionItem.checked(action, owner, due, link))
    return texts, items


def add_postmortem_routes(app: FastAPI, services: Services) -> None:
    settings = services.settings
    directory = settings.postmortem_dir

    def reader(request: Request) -> ProxyIdentity | None:
        """The proxy's identity when reads need one (IdentityRefused if missing), else None."""
        if settings.review_require_identity:
            return proxy_identity(settings, request.headers, _peer(request))
        return None

    async def writer(request: Request) -> tuple[ProxyIdentity, dict[str, list[str]]]:
        require_same_origin(settings, request.headers)
        identity = proxy_identity(settings, request.headers, _peer(request))
        body = await read_body(request, limit=FORM_LIMIT)
        return identity, parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4 * MAX_ACTION_ITEMS + 100)

    @app.get("/postmortems")
    async def postmortem_list(request: Request, runbook: str | None = None, status: str | None = None) -> Response:
        try:
            reader(request)
        except IdentityRefused as exc:
            return refused(str(exc))
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
    async def postmortem_view(request: Request, postmortem_id: str) -> Response:
        try:
            reader(request)
            postmortem = read_postmortem(directory, postmortem_id)
        except IdentityRefused as exc:
            return refused(str(exc))
        except RunbookError as exc:
            return HTMLResponse(html.escape(str(exc)), status_code=404)
        e = html.escape
        try:
            identity = proxy_identity(settings, request.headers, _peer(request))
            who = (f"<p class=who id=who>You are <b>{e(identity.name)}</b> ({e(identity.header)}: "
                   f"{e(identity.asserted)}, via {e(identity.proxy)}).</p>")
            forms = _edit_form(postmortem) + (
                f"<form method=post action='/postmortems/{e(postmortem.id)}/review' id=review>"
                "<h3>Mark reviewed</h3><label>Note<textarea name=note rows=3></textarea></label>"
                f"<button type=submit>Mark reviewed as {e(identity.name)}</button></form>")
            forms += await run_in_threadpool(_restore_form, services, postmortem, identity.name)
        except IdentityRefused as exc:
            who, forms = "", f"<p class=refused id=who>Editing and reviewing are off here: {e(str(exc))}</p>"
        reviewers = "".join(
            f"<li>{e(str(r.get('name', r.get('by', ''))))} at {e(str(r.get('at', '')))}"
            f"{': ' + e(str(r.get('note'))) if r.get('note') else ''}</li>"
            for r in postmortem.reviewers
        )
        links = f"<a href='{e(run_url(settings, postmortem.run_id))}' id=prefect-run>Prefect run</a>"
        if settings.public_url:
            links += f"<a href='{e(settings.public_url)}/postmortems/{e(postmortem.id)}' id=permalink>Permalink</a>"
        body = (
            f"<nav><a href='/postmortems'>All postmortems</a>{links}</nav>"
            f"<p>Status: <span class='status-{e(postmortem.status)}' id=status>{e(postmortem.status)}</span>"
            f" · run <code>{e(postmortem.run_id)}</code> · file <code>{e(str(postmortem.path))}</code></p>"
            + who
            + (f"<h3>Reviewed by</h3><ul id=reviewers>{reviewers}</ul>" if reviewers else "")
            + f"<article id=postmortem>{_MARKDOWN.render(postmortem.body)}</article>"
            + forms
        )
        return page(postmortem.id, body)

    @app.post("/postmortems/{postmortem_id}")
    async def postmortem_edit(request: Request, postmortem_id: str) -> Response:
        try:
            identity, form = await writer(request)
            texts, items = _form_edits(form)
            save_edits(directory, postmortem_id, texts, items, identity.name, identity.proof())
        except (IdentityRefused, BodyTooLarge, ValueError, RunbookError) as exc:
            return write_refused(exc, other=400)
        return RedirectResponse(f"/postmortems/{postmortem_id}", status_code=303)

    @app.post("/postmortems/{postmortem_id}/restore")
    async def postmortem_restore(request: Request, postmortem_id: str) -> Response:
        """The page's Restore button: a restore run of the postmortem's run, asked by the proxy's person."""
        from mq_runbooks.app import restores

        try:
            identity, _ = await writer(request)
            postmortem = read_postmortem(directory, postmortem_id)
            wanted = await run_in_threadpool(restores.restore_request, services.catalog, postmortem.run_id)
            run_id = await run_in_threadpool(restores.start_restore, settings, wanted, identity.name, "review-page",
                                             start=services.start, by=identity.name)
        except (IdentityRefused, BodyTooLarge, ValueError, RunbookError) as exc:
            return write_refused(exc, other=409)
        e = html.escape
        return page("Restore started", f"<h1>Restore started</h1><p id=restore-run>Run <code>{e(run_id)}</code> "
                    f"restores run <code>{e(postmortem.run_id)}</code>: it waits for the approvers of "
                    f"{e(wanted.runbook.id)} (<code>runbook status {e(run_id)}</code>; Slack shows its plan).</p>"
                    f"<p><a href='/postmortems/{e(postmortem_id)}'>Back to the postmortem</a> · "
                    f"<a href='{e(run_url(settings, run_id))}'>Prefect run</a></p>", 201)

    @app.post("/postmortems/{postmortem_id}/review")
    async def postmortem_review(request: Request, postmortem_id: str) -> Response:
        try:
            identity, form = await writer(request)
            mark_reviewed(directory, postmortem_id, identity.name, form.get("note", [""])[0].strip()[:2000],
                          proof=identity.proof())
        except (IdentityRefused, BodyTooLarge, ValueError, RunbookError) as exc:
            return write_refused(exc, other=404)
        return RedirectResponse(f"/postmortems/{postmortem_id}", status_code=303)
