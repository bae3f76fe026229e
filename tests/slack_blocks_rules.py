"""The Block Kit rules the fake Slack enforces: the limits Slack documents for the blocks and
elements we send (https://docs.slack.dev/reference/block-kit/blocks), answered with messages
shaped like Slack's (`[ERROR] ... [json-pointer:/blocks/0/text/text]`)."""
from __future__ import annotations

from typing import Any

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
KNOWN_BLOCKS = {"section", "header", "context", "divider", "actions", "image", "rich_text", "markdown",
                "input", "file", "video", "table"}


def block_errors(blocks: Any, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Every rule the blocks break; empty when Slack would take them."""
    if not isinstance(blocks, list):
        return ["[ERROR] must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"[ERROR] must provide no more than {max_blocks} items [json-pointer:/blocks]")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in KNOWN_BLOCKS:
            errors.append(f"[ERROR] unknown or missing block type [json-pointer:{where}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 0 < len(block_id) <= 255 or block_id in block_ids:
                errors.append(f"[ERROR] block_id must be unique, 1 to 255 characters [json-pointer:{where}/block_id]")
            block_ids.add(str(block_id))
        errors += _BLOCK_RULES.get(block["type"], lambda b, w, a: [])(block, where, action_ids)
    return errors


def view_errors(view: Any) -> list[str]:
    """Every rule a `views.open` modal breaks."""
    if not isinstance(view, dict) or view.get("type") != "modal":
        return ["[ERROR] view.type must be modal [json-pointer:/view/type]"]
    errors = _text(view.get("title"), "/view/title", 24, plain=True)
    for button in ("submit", "close"):
        if button in view:
            errors += _text(view[button], f"/view/{button}", 24, plain=True)
    if len(str(view.get("private_metadata", ""))) > 3000:
        errors.append("[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]")
    if len(str(view.get("callback_id", ""))) > 255:
        errors.append("[ERROR] must be less than 256 characters [json-pointer:/view/callback_id]")
    blocks = view.get("blocks")
    errors += [e.replace("json-pointer:/blocks", "json-pointer:/view/blocks")
               for e in block_errors(blocks, MAX_VIEW_BLOCKS)]
    if any(b.get("type") == "input" for b in blocks or [] if isinstance(b, dict)) and "submit" not in view:
        errors.append("[ERROR] a view with input blocks needs a submit button [json-pointer:/view/submit]")
    return errors


def _text(obj: Any, where: str, limit: int, *, plain: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in (("plain_text",) if plain else ("plain_text", "mrkdwn")):
        kinds = "plain_text" if plain else "plain_text or mrkdwn"
        return [f"[ERROR] must be a {kinds} text object [json-pointer:{where}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"[ERROR] must be more than 0 characters [json-pointer:{where}/text]"]
    if len(text) > limit:
        return [f"[ERROR] must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []


def _section(block: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    if "text" not in block and "fields" not in block:
        return [f"[ERROR] must provide text or fields [json-pointer:{where}]"]
    errors = _text(block["text"], f"{where}/text", 3000) if "text" in block else []
    fields = block.get("fields", [])
    if not isinstance(fields, list) or len(fields) > 10:
        errors.append(f"[ERROR] must provide no more than 10 items [json-pointer:{where}/fields]")
    else:
        for j, item in enumerate(fields):
            errors += _text(item, f"{where}/fields/{j}", 2000)
    return errors


def _header(block: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    return _text(block.get("text"), f"{where}/text", 150, plain=True)


def _context(block: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= 10:
        return [f"[ERROR] must provide 1 to 10 elements [json-pointer:{where}/elements]"]
    return [e for j, el in enumerate(elements) if not (isinstance(el, dict) and el.get("type") == "image")
            for e in _text(el, f"{where}/elements/{j}", 3000)]


def _actions(block: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= 25:
        return [f"[ERROR] must provide 1 to 25 elements [json-pointer:{where}/elements]"]
    errors: list[str] = []
    for j, element in enumerate(elements):
        at = f"{where}/elements/{j}"
        if not isinstance(element, dict) or element.get("type") != "button":
            continue  # the engine sends buttons only; other elements are not checked
        errors += _text(element.get("text"), f"{at}/text", 75, plain=True)
        action_id = element.get("action_id")
        if action_id is not None:
            if not isinstance(action_id, str) or len(action_id) > 255 or action_id in action_ids:
                errors.append(f"[ERROR] action_id must be unique, at most 255 characters [json-pointer:{at}/action_id]")
            action_ids.add(str(action_id))
        if len(str(element.get("value", ""))) > 2000:
            errors.append(f"[ERROR] must be less than 2001 characters [json-pointer:{at}/value]")
        if element.get("style") not in (None, "primary", "danger"):
            errors.append(f"[ERROR] must be one of primary, danger [json-pointer:{at}/style]")
        if len(str(element.get("url", ""))) > 3000:
            errors.append(f"[ERROR] must be less than 3001 characters [json-pointer:{at}/url]")
    return errors


def _input(block: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    errors = _text(block.get("label"), f"{where}/label", 2000, plain=True)
    element = block.get("element")
    if not isinstance(element, dict) or not element.get("type"):
        errors.append(f"[ERROR] must provide an element [json-pointer:{where}/element]")
    elif element.get("type") == "plain_text_input" and int(element.get("max_length", 3000)) > 3000:
        errors.append(f"[ERROR] max_length must be at most 3000 [json-pointer:{where}/element/max_length]")
    return errors


_BLOCK_RULES = {"section": _section, "header": _header, "context": _context, "actions": _actions, "input": _input}
