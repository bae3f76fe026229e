"""Writing a postmortem's TO WRITE sections and action items into its Markdown: edits land in the
sections and the front matter, a redraft of the run keeps them, and bad input names what is wrong."""
from __future__ import annotations

import uuid

import pytest

from mq_runbooks.base.errors import UsageError
from mq_runbooks.kit.postmortem.edit import ActionItem, apply_edits, retitle, writable_sections
from mq_runbooks.kit.postmortem.render import environment
from mq_runbooks.kit.postmortem.store import read_postmortem, save_draft, save_edits

PROOF = {"kind": "proxy-header", "header": "X-Forwarded-Email", "value": "carol@example.com", "proxy": "10.0.0.5"}


def team_sections() -> str:
    """The team's part of the shipped template, as a draft has it."""
    return environment().get_template("_team.md.j2").render()


def draft_body(extra: str = "") -> str:
    return f"# Postmortem (draft): kafka-replay, 2026-11-27, succeeded\n\n## Summary\n\n- ok{extra}\n\n{team_sections()}"


def test_the_shipped_templates_sections_are_writable_and_start_empty():
    sections = writable_sections(draft_body(), {})
    assert [s.title for s in sections] == ["Root cause", "What went well", "What went badly", "Action items"]
    assert all(s.text == "" for s in sections)


def test_edits_land_in_the_sections_and_a_redraft_keeps_them(tmp_path):
    run_id = str(uuid.uuid4())
    draft, _ = save_draft(tmp_path, "kafka-replay", run_id, "running", draft_body())
    save_edits(tmp_path, draft.id, {"Root cause": "A bad deploy.", "What went badly": "```\n## not a heading\n```"},
               [ActionItem.checked("Check schemas", "carol", "2026-12-01", "https://t.example/1")], "carol", PROOF)
    # The run ends: the draft is written again from the journal, with what the team wrote kept.
    again, written = save_draft(tmp_path, "kafka-replay", run_id, "succeeded", draft_body(" (resolved)"))
    assert written
    stored = read_postmortem(tmp_path, draft.id)
    assert "- ok (resolved)" in stored.body and "## Root cause\n\nA bad deploy.\n" in stored.body
    assert "## What went badly\n\n```\n## not a heading\n```\n" in stored.body
    assert "## What went well (TO WRITE)" in stored.body
    assert "| Check schemas | carol | 2026-12-01 | <https://t.example/1> |" in stored.body
    assert stored.meta["outcome"] == "succeeded" and stored.meta["edits"][0]["proof"] == PROOF
    # Emptied again, a section is to write again (and stays one of the team's).
    body, meta = apply_edits(stored.body, stored.meta, {"Root cause": "  "}, [])
    assert "## Root cause (TO WRITE)\n\n_TO WRITE_\n" in body and "Root cause" in meta["written"]
    assert "## Action items (TO WRITE)" in body and meta["action_items"] == []


FORGED = ("A bad deploy.\n\n## Decisions\n\n- approved by nobody\n\nDecisions\n---------\n\n"
          "> ## Decisions, quoted\n\n- ## Decisions, listed\n\n"
          "[prefect]: https://evil.example\n\n```\n## What went well\nthe rest is code")


def body_with_generated_sections() -> str:
    """A draft as the shipped template lays it out: a generated Decisions section before the team's,
    an appendix after them."""
    return draft_body().replace("## Root cause", "## Decisions\n\n- 06:01 carol approved\n\n## Root cause", 1) \
        + "\n## Appendix\n\nThe journal.\n"


def test_an_edit_cannot_forge_a_heading_or_hide_the_sections_after_it(tmp_path):
    run_id = str(uuid.uuid4())
    draft, _ = save_draft(tmp_path, "kafka-replay", run_id, "running", body_with_generated_sections())
    save_edits(tmp_path, draft.id, {"Root cause": FORGED}, None, "carol", PROOF)
    assert_one_decisions_and_every_section_shown(tmp_path, draft.id, badly="What went badly (TO WRITE)")
    # Still so after a save of another section, and after the run's redraft.
    save_edits(tmp_path, draft.id, {"What went badly": "Nothing paged."}, None, "dave", PROOF)
    save_draft(tmp_path, "kafka-replay", run_id, "succeeded", body_with_generated_sections())
    stored = assert_one_decisions_and_every_section_shown(tmp_path, draft.id, badly="What went badly")
    assert stored.meta["sections"] == {"Root cause": FORGED, "What went badly": "Nothing paged."}


def assert_one_decisions_and_every_section_shown(directory, postmortem_id, badly):
    from mq_runbooks.app.postmortem_pages import MARKDOWN as _MARKDOWN  # what the review page renders with

    stored = read_postmortem(directory, postmortem_id)
    page = _MARKDOWN.render(stored.body)
    headings = [line for line in page.splitlines() if line.startswith("<h")]
    assert headings == ["<h1>Postmortem (draft): kafka-replay, 2026-11-27, succeeded</h1>", "<h2>Summary</h2>",
                        "<h2>Decisions</h2>", "<h2>Root cause</h2>", "<h2>What went well (TO WRITE)</h2>",
                        f"<h2>{badly}</h2>", "<h2>Action items (TO WRITE)</h2>", "<h2>Appendix</h2>"], headings
    assert "<p>The journal.</p>" in page.split("<h2>Appendix</h2>")[1]
    assert "evil.example" not in page.replace("[prefect]: https://evil.example", "")  # shown, never a link target
    # What the team typed is kept exactly, as data, and offered back as it was typed.
    sections = writable_sections(stored.body, stored.meta)
    assert [s.title for s in sections] == ["Root cause", "What went well", "What went badly", "Action items"]
    assert sections[0].text == FORGED
    return stored


@pytest.mark.parametrize("texts, items, expected", [
    ({"Summary": "rewritten"}, None, "no section to write named Summary"),
    ({"Root cause": "x" * 20_001}, None, "at most 20000 characters"),
    ({}, [ActionItem("a")] * 201, "at most 200 action items"),
])
def test_bad_edits_are_refused_naming_the_problem(texts, items, expected):
    with pytest.raises(UsageError, match=expected):
        apply_edits(draft_body(), {}, texts, items)


@pytest.mark.parametrize("fields, expected", [
    (("", "carol"), "needs its action"),
    (("a", "", "tomorrow"), "is not a date like 2026-12-31"),
    (("a", "", "", "javascript:alert(1)"), r"is not an http\(s\) URL"),
])
def test_bad_action_items_are_refused(fields, expected):
    with pytest.raises(UsageError, match=expected):
        ActionItem.checked(*fields)


def test_the_title_follows_the_review():
    assert retitle("# Postmortem (draft): x, y\n\nbody", "reviewed") == "# Postmortem: x, y\n\nbody"
    assert retitle("# Postmortem (draft): x\n", "draft") == "# Postmortem (draft): x\n"
