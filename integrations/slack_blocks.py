"""Block Kit for the approval of a run: the request with its Approve and Reject buttons, the same
message once decided or timed out, and the modal that asks for a reason to reject.

Pure functions over plain data (no HTTP), so every message can be checked against Slack's limits
without Slack. A plan of any size is summarised to fit: Slack refuses more than 50 blocks, a
section of more than 3,000 characters, and (as `msg_blocks_too_long`) a blocks payload far below
its documented 40,000 characters, so we stay under `MAX_BLOCKS_CHARS`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

APPROVE_ACTION = "runbook_approve"
REJECT_ACTION = "runbook_reject"
REJECT_CALLBACK = "runbook_reject_reason"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"
DECISION_BLOCK = "runbook_decision"

SECTION_MAX_CHARS = 3000
# Each fact around the plan is kept short, so that the plan always has room.
FACT_MAX_CHARS = 500
HEADER_MAX_CHARS = 150
# Slack refuses blocks long before its documented 40,000 characters (near 13,000 in bolt-js#2509).
MAX_BLOCKS_CHARS = 11_000
# The plan section leaves room for the header, facts, pointers and buttons around it.
PLAN_MAX_CHARS = SECTION_MAX_CHARS - 100

Block = dict[str, Any]


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver needs to decide, as the gate knows it when the run reaches it.

    `requested_by` and approver names that look like Slack user ids (U123ABC) are shown as
    mentions. `plan_totals` are the impact numbers, e.g. {"partitions": 1000, "messages replayed":
    5120}. `plan_markdown` lists the biggest changes first; rows that do not fit are left out with
    a pointer to the whole plan (`runbook status RUN --plan` and the run in the Prefect UI).
    """

    runbook_id: str
    runbook_title: str
    run_id: str
    run_url: str
    requested_by: str
    trigger: str
    plan_markdown: str
    plan_totals: Mapping[str, int | float | str] = field(default_factory=dict)
    approvers: str = ""
    plan_digest: str = ""


def mention(name: str) -> str:
    """`<@U123>` for a Slack user id (Slack shows the person's name), the name itself otherwise."""
    return f"<@{name}>" if re.fullmatch(r"[UW][A-Z0-9]{2,}", name) else escape(name)


def escape(text: str) -> str:
    """Text as Slack mrkdwn shows it literally: `&`, `<` and `>` escaped as Slack asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def approval_text(request: ApprovalRequest) -> str:
    """The notification text (what Slack shows in alerts and to screen readers)."""
    return f"Approval needed: {request.runbook_id} (run {request.run_id}) requested by {request.requested_by}"


def approval_blocks(request: ApprovalRequest, approved_so_far: Sequence[str] = ()) -> list[Block]:
    """The approval request: what starts it, the impact, the plan, and Approve / Reject buttons.

    Both buttons carry the run id as `value`; their action ids are `runbook_approve` and
    `runbook_reject`. `approved_so_far` (when more than one approval is needed) is shown above them.
    """
    blocks = _summary_blocks(request, f"Approval needed: {request.runbook_title}")
    if approved_so_far:
        blocks.append(_context(f"Approved so far by {', '.join(mention(n) for n in approved_so_far)}."))
    blocks.append({
        "type": "actions", "block_id": DECISION_BLOCK,
        "elements": [_button("Approve", APPROVE_ACTION, request.run_id, "primary"),
                     _button("Reject", REJECT_ACTION, request.run_id, "danger")],
    })
    return _fit(blocks, request)


def decided_blocks(request: ApprovalRequest, *, approved: bool, by: Sequence[str], at: datetime | None = None,
                   comment: str = "") -> list[Block]:
    """The request once decided: buttons gone, who approved or rejected it and when (UTC)."""
    verdict = "Approved" if approved else "Rejected"
    who = ", ".join(mention(name) for name in by) or "someone"
    line = f"*{verdict}* by {who} at {_utc(at)}"
    if comment:
        line += f": {_clip(escape(comment), 2 * FACT_MAX_CHARS)}"
    title = f"{verdict}: {request.runbook_title}"
    blocks = _summary_blocks(request, title)
    blocks.append({"type": "section", "block_id": DECISION_BLOCK, "text": _mrkdwn(line)})
    return _fit(blocks, request)


def timed_out_blocks(request: ApprovalRequest, *, waited: str, at: datetime | None = None) -> list[Block]:
    """The request once nobody approved in time: buttons gone, the run rejected by timeout."""
    line = f"*Timed out*: nobody approved within {waited}; the run was rejected at {_utc(at)}."
    blocks = _summary_blocks(request, f"Timed out: {request.runbook_title}")
    blocks.append({"type": "section", "block_id": DECISION_BLOCK, "text": _mrkdwn(line)})
    return _fit(blocks, request)


def reject_modal(run_id: str, runbook_id: str = "") -> dict[str, Any]:
    """The `views.open` view asking why a run is rejected; `private_metadata` is the run id."""
    what = f"`{runbook_id}` run `{run_id}`" if runbook_id else f"run `{run_id}`"
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": run_id,
        "title": _plain("Reject run"),
        "submit": _plain("Reject"),
        "close": _plain("Cancel"),
        "blocks": [
            {"type": "section", "text": _mrkdwn(f"Reject {what}? Nothing will be changed.")},
            {"type": "input", "block_id": REASON_BLOCK, "label": _plain("Reason"),
             "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "multiline": True,
                         "min_length": 1, "max_length": 2000}},
        ],
    }


def blocks_size(blocks: list[Block]) -> int:
    """The size Slack counts against its limit: the blocks as compact JSON."""
    return len(json.dumps(blocks, separators=(",", ":"), ensure_ascii=False))


# -- the pieces --------------------------------------------------------------------------------

def _summary_blocks(request: ApprovalRequest, title: str) -> list[Block]:
    facts = [
        f"*Runbook*\n`{request.runbook_id}`",
        f"*Run*\n<{request.run_url}|{request.run_id}>",
        f"*Requested by*\n{mention(request.requested_by)}",
        f"*Trigger*\n{escape(request.trigger) or 'manual'}",
    ]
    blocks: list[Block] = [
        {"type": "header", "text": _plain(_clip(title, HEADER_MAX_CHARS))},
        {"type": "section", "fields": [_mrkdwn(_clip(fact, FACT_MAX_CHARS)) for fact in facts]},
    ]
    if request.plan_totals:
        totals = " · ".join(f"*{_number(value)}* {escape(name)}" for name, value in request.plan_totals.items())
        blocks.append({"type": "section", "text": _mrkdwn(_clip(totals, 2 * FACT_MAX_CHARS))})
    blocks.append({"type": "section", "block_id": "plan", "text": _mrkdwn("(plan)")})
    pointer = (f"Whole plan: `runbook status {request.run_id} --plan` or <{request.run_url}|the run in Prefect>"
               + (f" · plan `{request.plan_digest[:12]}`" if request.plan_digest else ""))
    blocks.append(_context(pointer))
    if request.approvers:
        blocks.append(_context(_clip(f"Approvers: {escape(request.approvers)}", FACT_MAX_CHARS)))
    return blocks


def _fit(blocks: list[Block], request: ApprovalRequest) -> list[Block]:
    """Fill the plan section with as much of the plan as fits the section and the whole message:
    table rows go first (from the bottom: plans list the largest changes first), then text lines
    from the end; the header row of a table stays while any of its rows does."""
    plan = next(b for b in blocks if b.get("block_id") == "plan")
    lines = markdown_lines(request.plan_markdown)
    rows = [i for i, (kind, _) in enumerate(lines) if kind == "row"]
    texts = [i for i, (kind, _) in enumerate(lines) if kind != "row"]
    drop_order = rows[::-1] + texts[::-1] + [i for i, (kind, _) in enumerate(lines) if kind == "header"]
    kept = [True] * len(lines)
    dropped = 0
    while True:
        plan["text"] = _mrkdwn(render_lines(lines, kept) or "(the plan is empty)")
        over = max(len(plan["text"]["text"]) - PLAN_MAX_CHARS, blocks_size(blocks) - MAX_BLOCKS_CHARS)
        if over <= 0:
            return blocks
        if dropped == len(drop_order):
            raise ValueError("the approval message does not fit Slack's limits even without its plan")
        freed = 0
        while dropped < len(drop_order) and freed < over:
            index = drop_order[dropped]
            kept[index] = False
            freed += len(lines[index][1]) + 2  # the line and its newline, escaped in JSON
            dropped += 1


# -- Markdown to Slack mrkdwn ------------------------------------------------------------------

def markdown_lines(markdown: str) -> list[tuple[str, str]]:
    """The plan as (kind, line) pairs in mrkdwn: kind is "text", or "header" and "row" for a table's
    header and data rows (columns aligned); Markdown table separators are dropped."""
    out: list[tuple[str, str]] = []
    table: list[list[str]] = []
    for raw in markdown.splitlines() + [""]:
        stripped = raw.strip()
        if stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1:
            cells = [c.strip() for c in stripped[1:-1].split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                table.append(cells)
            continue
        if table:
            aligned = _aligned(table)
            out += [("header", aligned[0])] + [("row", row) for row in aligned[1:]]
            table = []
        if raw or out:
            out.append(("text", _inline(raw)))
    while out and out[-1] == ("text", ""):
        out.pop()
    return out


def render_lines(lines: list[tuple[str, str]], kept: Sequence[bool]) -> str:
    """The kept lines as mrkdwn, each table in a code block followed by a note of its rows left out,
    and a note of the text lines left out at the end."""
    text: list[str] = []
    in_table = False
    rows_left_out = 0
    for (kind, line), keep in zip(lines, kept):
        if in_table and kind == "text":
            text.append("```")
            if rows_left_out:
                text.append(f"_… {rows_left_out} more row(s) of the plan not shown here._")
            in_table, rows_left_out = False, 0
        if not keep:
            rows_left_out += kind == "row"
            continue
        if kind == "header" or (kind == "row" and not in_table):
            text.append("```")
            in_table = True
        text.append(line)
    if in_table:
        text.append("```")
        if rows_left_out:
            text.append(f"_… {rows_left_out} more row(s) of the plan not shown here._")
    lines_left_out = sum(1 for (kind, _), keep in zip(lines, kept) if not keep and kind != "row")
    if lines_left_out:
        text.append(f"_… {lines_left_out} more line(s) of the plan not shown here._")
    return "\n".join(text)


def _aligned(rows: list[list[str]]) -> list[str]:
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    widths = [max(len(_plain_inline(r[i])) for r in rows) for i in range(width)]
    numeric = [all(re.fullmatch(r"[+-]?[\d,.]*", _plain_inline(r[i])) for r in rows[1:]) for i in range(width)]
    return ["  ".join(_plain_inline(cell).rjust(w) if num else _plain_inline(cell).ljust(w)
                      for cell, w, num in zip(row, widths, numeric)).rstrip() for row in rows]


def _inline(line: str) -> str:
    """Markdown emphasis, links and headings to mrkdwn (`**b**` -> `*b*`, `[t](u)` -> `<u|t>`)."""
    quote = re.match(r"^\s*>\s?", line)
    if quote:  # a Markdown quote stays a quote in mrkdwn
        return "> " + _inline(line[quote.end():])
    line = escape(line)
    line = re.sub(r"^#{1,6}\s+(.*)$", r"*\1*", line)
    line = re.sub(r"\*\*(.+?)\*\*", r"*\1*", line)
    line = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"<\2|\1>", line)
    return line


def _plain_inline(cell: str) -> str:
    # Inside a code block Slack shows markup literally, so table cells lose theirs.
    cell = escape(cell)
    return re.sub(r"\*\*(.+?)\*\*|`([^`]*)`", lambda m: m.group(1) or m.group(2) or "", cell)


def _button(text: str, action_id: str, value: str, style: str) -> Block:
    return {"type": "button", "text": _plain(text), "action_id": action_id, "value": value, "style": style}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: int | float | str) -> str:
    return f"{value:,}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _utc(at: datetime | None) -> str:
    moment = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
