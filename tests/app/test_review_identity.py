"""Who may write a postmortem on the review pages of a real `runbook serve`: only a person an
authenticating proxy asserts, from a trusted proxy address, in a request from our own pages. A typed
name, a forged header from elsewhere, or a form posted from another site changes nothing."""
from __future__ import annotations

import datetime as dt
import html
import re
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from mq_runbooks.kit.postmortem.store import save_draft
from tests.serve_harness import ServeProcess, serve_environment

PROXY = "127.0.0.2"  # the test's "authenticating proxy": requests sent from this address
BODY = """# Postmortem (draft): kafka-replay, 2026-11-27, succeeded

## Summary

- **Outcome:** **succeeded**

## Root cause (TO WRITE)

_TO WRITE: what conditions let this happen._

## What went well (TO WRITE)

_TO WRITE_

## Action items (TO WRITE)

| action | owner | due | ticket |
|---|---|---|---|
| _TO WRITE_ | | | |

## Timeline (UTC)

| time (UTC) | source | what happened |
|---|---|---|
| 06:00:00 | journal | started |
"""


def start(workdir: Path, **settings: str) -> ServeProcess:
    (workdir / "teams.yaml").write_text("kafka-oncall: [carol, Dana]\n")
    env = serve_environment(workdir)
    env.update({"RUNBOOK_TEAMS": str(workdir / "teams.yaml"), **settings})
    return ServeProcess(workdir, env, runner=False)


@pytest.fixture(scope="module")
def serve(tmp_path_factory, clusters):
    process = start(tmp_path_factory.mktemp("identity-serve"), RUNBOOK_TRUSTED_PROXIES=f"{PROXY},10.0.0.0/8")
    yield process
    process.stop()


@pytest.fixture
def draft(serve):
    directory = Path(serve.env["RUNBOOK_POSTMORTEM_DIR"])
    postmortem, _ = save_draft(directory, "kafka-replay", str(uuid.uuid4()), "succeeded", BODY,
                               now=dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.timezone.utc))
    return postmortem


def client(source: str = PROXY) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30, follow_redirects=False)


def front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def post_review(serve, draft, headers, source=PROXY, data=None):
    with client(source) as http:
        return http.post(f"{serve.url}/postmortems/{draft.id}/review", headers=headers,
                         data=data or {"reviewer": "alice", "note": "looks fine"})


@pytest.mark.parametrize("case, source, headers, reason", [
    ("a form posted from another site", PROXY,
     {"Origin": "https://evil.example", "X-Forwarded-Email": "carol@example.com"}, "not from https://evil.example"),
    ("no Origin or Referer", PROXY, {"X-Forwarded-Email": "carol@example.com"}, "no Origin or Referer header"),
    ("a forged identity header from outside the proxy", "127.0.0.1",
     {"Origin": "SELF", "X-Forwarded-Email": "carol@example.com"}, "not through a trusted authenticating proxy"),
    ("the proxy asserted nobody", PROXY, {"Origin": "SELF"},
     "the proxy sent none of X-Forwarded-Email, X-Forwarded-User"),
])
def test_a_review_without_a_proven_identity_from_our_own_page_is_refused(serve, draft, case, source, headers, reason):
    headers = {name: serve.url if value == "SELF" else value for name, value in headers.items()}
    before = draft.path.read_text(encoding="utf-8")
    answer = post_review(serve, draft, headers, source)
    assert answer.status_code == 403, (case, answer.status_code, answer.text)
    assert reason in answer.text, (case, answer.text)
    assert draft.path.read_text(encoding="utf-8") == before
    edit = client(source).post(f"{serve.url}/postmortems/{draft.id}", headers=headers,
                               data={"section:Root cause": "forged"})
    assert edit.status_code == 403 and draft.path.read_text(encoding="utf-8") == before


def test_a_review_through_the_proxy_records_the_person_and_the_proof(serve, draft):
    answer = post_review(serve, draft, {"Referer": f"{serve.url}/postmortems/{draft.id}",
                                        "X-Forwarded-Email": "DANA@example.com"})
    assert answer.status_code == 303, answer.text
    meta = front_matter(draft.path)
    assert meta["status"] == "reviewed"
    [review] = meta["reviewers"]
    # The name is teams.yaml's spelling of the person the proxy asserted, never the typed "alice".
    assert review["name"] == "Dana" and review["note"] == "looks fine"
    assert review["proof"] == {"kind": "proxy-header", "header": "X-Forwarded-Email", "value": "DANA@example.com",
                               "proxy": PROXY}
    text = draft.path.read_text(encoding="utf-8")
    assert "\n# Postmortem: kafka-replay, 2026-11-27, succeeded\n" in text and "(draft)" not in text


def test_the_team_writes_sections_and_action_items_into_the_file(serve, draft):
    with client() as http:
        answer = http.post(f"{serve.url}/postmortems/{draft.id}", headers={
            "Origin": serve.url, "X-Forwarded-User": "carol"}, data={
            "section:Root cause": "The consumer's deploy skipped a schema check.",
            "section:What went well": "",
            "action-0": "Add the schema check | to CI", "owner-0": "carol", "due-0": "2026-12-15",
            "link-0": "https://tracker.example/T-1", "action-1": "", "owner-1": "", "items": "1"})
        assert answer.status_code == 303, answer.text
        bad = http.post(f"{serve.url}/postmortems/{draft.id}", headers={"Origin": serve.url, "X-Forwarded-User": "carol"},
                        data={"action-0": "x", "due-0": "next week", "items": "1"})
        assert bad.status_code == 400 and "is not a date like 2026-12-31" in bad.text
        # A section's own form carries no action items: saving it leaves them as they are.
        alone = http.post(f"{serve.url}/postmortems/{draft.id}", headers={"Origin": serve.url, "X-Forwarded-User": "dana"},
                          data={"section:What went well": "", "return": "s-what-went-well"})
        assert alone.status_code == 303 and alone.headers["location"] == (
            f"/postmortems/{draft.id}?saved=s-what-went-well#s-what-went-well")
    meta = front_matter(draft.path)
    assert meta["action_items"] == [{"action": "Add the schema check | to CI", "owner": "carol", "due": "2026-12-15",
                                     "link": "https://tracker.example/T-1"}]
    assert [e["name"] for e in meta["edits"][-2:]] == ["carol", "Dana"]  # teams.yaml spells her so
    assert meta["edits"][-1]["proof"]["header"] == "X-Forwarded-User"
    assert set(meta["written"]) == {"Root cause", "What went well", "Action items"}
    text = draft.path.read_text(encoding="utf-8")
    assert "## Root cause\n\nThe consumer's deploy skipped a schema check.\n" in text
    assert "## What went well (TO WRITE)\n\n_TO WRITE_\n" in text
    assert "| Add the schema check \\| to CI | carol | 2026-12-15 | <https://tracker.example/T-1> |" in text
    assert "## Timeline (UTC)" in text and meta["status"] == "draft"


def test_a_section_written_on_the_page_cannot_forge_a_heading_or_hide_the_rest(serve):
    directory = Path(serve.env["RUNBOOK_POSTMORTEM_DIR"])
    body = BODY.replace("## Root cause", "## Decisions\n\n- 06:01 carol approved\n\n## Root cause", 1)
    draft, _ = save_draft(directory, "kafka-replay", str(uuid.uuid4()), "succeeded", body)
    forged = "Bad deploy.\n## Decisions\n- approved by nobody\n```\n## Timeline (UTC)\nthe rest is code"
    with client() as http:
        answer = http.post(f"{serve.url}/postmortems/{draft.id}", headers={"Origin": serve.url, "X-Forwarded-User": "carol"},
                           data={"section:Root cause": forged})
        assert answer.status_code == 303, answer.text
        page = http.get(f"{serve.url}/postmortems/{draft.id}", headers={"X-Forwarded-User": "carol"}).text
    article = page.split("<article id=postmortem>", 1)[1].split("</article>", 1)[0]
    assert re.findall(r"<h2>(.*?)</h2>", article) == [
        "Summary", "Decisions", "Root cause", "What went well (TO WRITE)", "Action items (TO WRITE)", "Timeline (UTC)"]
    assert "<td>06:00:00</td>" in article.split("<h2>Timeline (UTC)</h2>", 1)[1]  # shown as a table, not code
    # The form offers the text back exactly as it was typed.
    assert re.search(f"name='section:Root cause'[^>]*>{re.escape(html.escape(forged))}</textarea>", page), page


def test_other_files_in_the_drafts_directory_do_not_break_the_list(serve, draft):
    directory = Path(serve.env["RUNBOOK_POSTMORTEM_DIR"])
    (directory / "README.md").write_text("# Our postmortems\n")
    (directory / "2026-11-27-kafka-replay-deadbeef.md").write_bytes(b"---\nid: [broken\n\xff---\n")
    answer = httpx.get(f"{serve.url}/postmortems", timeout=30)
    assert answer.status_code == 200 and draft.id in answer.text and "README" not in answer.text


def test_with_no_trusted_proxy_writes_and_protected_reads_are_refused_saying_why(tmp_path, clusters):
    process = start(tmp_path, RUNBOOK_REVIEW_REQUIRE_IDENTITY="true")
    try:
        listing = httpx.get(f"{process.url}/postmortems", headers={"X-Forwarded-Email": "carol@example.com"})
        assert listing.status_code == 403 and "no authenticating proxy is configured" in listing.text
        directory = Path(process.env["RUNBOOK_POSTMORTEM_DIR"])
        draft, _ = save_draft(directory, "kafka-replay", str(uuid.uuid4()), "succeeded", BODY)
        answer = httpx.post(f"{process.url}/postmortems/{draft.id}/review", data={"reviewer": "carol"},
                            headers={"Origin": process.url, "X-Forwarded-Email": "carol@example.com"})
        assert answer.status_code == 403 and "set RUNBOOK_TRUSTED_PROXIES" in answer.text
        assert front_matter(draft.path)["status"] == "draft"
    finally:
        process.stop()
