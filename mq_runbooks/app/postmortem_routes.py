"""The postmortem review pages of `runbook serve` (the HTML is postmortem_pages.py's): a list (filter by
runbook and status; target and incident columns), a postmortem with its TO WRITE sections and action
items editable where they stand, and the review action. The Markdown files stay the source of truth:
every save rewrites the file (front matter + sections).

    GET  /postmortems?runbook=ID&status=draft|reviewed
    GET  /postmortems/{id}[?saved=ANCHOR&rows=N]   (after a save: its confirmation, N blank action-item rows)
    POST /postmortems/{id}          (form: section:<title> ..., and with items=1 the action items:
                                     action-N, owner-N, due-N, link-N, remove-N; add=1 asks for another row;
                                     return=ANCHOR, the section to come back to)
    POST /postmortems/{id}/review   (form: note)
    POST /postmortems/{id}/restore  (the Restore button: a restore run of the postmortem's run)

A form carries only its own section (or the action items), so two people writing two sections do
not overwrite each other. Writes need the identity a trusted authenticating proxy asserts and a
same-origin request (web_identity); with RUNBOOK_REVIEW_REQUIRE_IDENTITY, so do reads. Refusals are
a 403 saying why.
"""
from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mq_runbooks.app.http import BodyTooLarge, Services, read_body
from mq_runbooks.app.postmortem_pages import (
    MAX_BLANK_ROWS, REVIEW_ANCHOR, list_page, page, postmortem_page, refused, saved_anchor,
)
from mq_runbooks.app.web_identity import IdentityRefused, ProxyIdentity, proxy_identity, require_same_origin
from mq_runbooks.base.errors import NotFoundError, RunbookError
from mq_runbooks.kit.notify import run_url
from mq_runbooks.kit.postmortem.edit import MAX_ACTION_ITEMS, ActionItem
from mq_runbooks.kit.postmortem.store import STATUSES, Postmortem, list_postmortems, mark_reviewed, read_postmortem, save_edits

FORM_LIMIT = 256 * 1024
_ITEM_FIELD = re.compile(r"^(action|owner|due|link|remove)-(\d{1,4})$")


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


def _form_edits(form: dict[str, list[str]]) -> tuple[dict[str, str], list[ActionItem] | None]:
    """(section texts, action items or None when the form does not carry them) from a posted form."""
    texts = {key[len("section:"):]: values[0] for key, values in form.items() if key.startswith("section:")}
    if not form.get("items"):
        return texts, None
    rows: dict[int, dict[str, str]] = {}
    for key, values in form.items():
        match = _ITEM_FIELD.match(key)
        if match:
            rows.setdefault(int(match.group(2)), {})[match.group(1)] = values[0]
    items = []
    for _, row in sorted(rows.items()):
        fields = [row.get(name, "") for name in ("action", "owner", "due", "link")]
        if not row.get("remove") and any(value.strip() for value in fields):
            items.append(ActionItem.checked(*fields))
    return texts, items


def _back_to(postmortem_id: str, form: dict[str, list[str]], blank_rows: int = 1) -> RedirectResponse:
    """Back to the page, at the section the form came from, saying it was saved."""
    anchor = saved_anchor(form.get("return", [""])[0]) or REVIEW_ANCHOR
    rows = f"&rows={min(blank_rows, MAX_BLANK_ROWS)}" if blank_rows > 1 else ""
    return RedirectResponse(f"/postmortems/{quote(postmortem_id)}?saved={anchor}{rows}#{anchor}", status_code=303)


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
        fields = 5 * (MAX_ACTION_ITEMS + MAX_BLANK_ROWS) + 100  # five per action-item row, and the sections
        return identity, parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=fields)

    @app.get("/postmortems")
    async def postmortem_list(request: Request, runbook: str | None = None, status: str | None = None) -> Response:
        try:
            reader(request)
        except IdentityRefused as exc:
            return refused(str(exc))
        if status and status not in STATUSES:
            return HTMLResponse(f"status must be one of {', '.join(STATUSES)}", status_code=400)
        items = list_postmortems(directory, runbook=runbook or None, status=status or None)
        return list_page(items, sorted({r.id for r in services.catalog}), runbook, status, STATUSES)

    @app.get("/postmortems/{postmortem_id}")
    async def postmortem_view(request: Request, postmortem_id: str, saved: str = "", rows: int = 1) -> Response:
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
            editor: str | None = identity.name
            who = (f"<p class=who id=who>You are <b>{e(identity.name)}</b> ({e(identity.header)}: "
                   f"{e(identity.asserted)}, via {e(identity.proxy)}).</p>")
            undo = await run_in_threadpool(_restore_form, services, postmortem, identity.name)
        except IdentityRefused as exc:
            editor, undo = None, ""
            who = f"<p class=refused id=who>Editing and reviewing are off here: {e(str(exc))}</p>"
        links = f"<a href='{e(run_url(settings, postmortem.run_id))}' id=prefect-run>Prefect run</a>"
        if settings.public_url:
            links += f"<a href='{e(settings.public_url)}/postmortems/{e(postmortem.id)}' id=permalink>Permalink</a>"
        return postmortem_page(postmortem, editor=editor, who=who, links=links, saved=saved_anchor(saved),
                               blank_rows=max(1, min(rows, MAX_BLANK_ROWS)), undo=undo)

    @app.post("/postmortems/{postmortem_id}")
    async def postmortem_edit(request: Request, postmortem_id: str) -> Response:
        try:
            identity, form = await writer(request)
            texts, items = _form_edits(form)
            save_edits(directory, postmortem_id, texts, items, identity.name, identity.proof())
        except (IdentityRefused, BodyTooLarge, ValueError, RunbookError) as exc:
            return write_refused(exc, other=400)
        blank = form.get("rows", ["1"])[0]
        return _back_to(postmortem_id, form, int(blank) + 1 if form.get("add") and blank.isdigit() else 1)

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
        return _back_to(postmortem_id, {"return": [REVIEW_ANCHOR]})
